"""Helpers the core tests share (importable because ``Testing/`` holds the root conftest)."""

from __future__ import annotations

import torch
from xvrcore.geometry.carm import carm_pose

D = torch.float64
ISO = torch.tensor([10.0, -20.0, 905.0], dtype=D)  # an isocentre away from the origin, as in a real CT


def carm_view(params, orientation: str = "AP", iso: torch.Tensor = ISO) -> torch.Tensor:
    """``camera_to_world`` (4×4 float64) of the paper's C-arm parameters ``(α, β, γ, x, y, z)``."""
    return carm_pose(torch.tensor(params, dtype=D), orientation, iso)


def beam(camera_to_world: torch.Tensor) -> torch.Tensor:
    """The beam direction (camera +z) of a pose, ``(..., 3)``."""
    return camera_to_world[..., :3, 2]


SMALL_DETECTOR = {"sdd": 1000.0, "rows": 64, "cols": 64, "row_spacing": 4.8, "col_spacing": 4.8}


def small_synthetic_xa(ct_path, path):
    """Write a valid 64×64 synthetic XA DICOM of the CT at ``ct_path`` to ``path``: LAO 10°, CAU 5°,
    650 mm from the CT's centre, with full C-arm geometry in its header (photon noise of seed 0)."""
    import numpy as np
    from xvrcore.drr import DRRVolume
    from xvrcore.geometry.camera import Detector
    from xvrcore.geometry.positioner import pose_from_positioner
    from xvrcore.volume import load_volume
    from xvrcore.volume.attenuation import to_attenuation
    from xvrcore.xray.synthesis import synthesize_xray, write_xray_dicom

    ct = load_volume(ct_path)
    detector = Detector(**SMALL_DETECTOR)
    pose = pose_from_positioner(10.0, -5.0, 650.0, torch.as_tensor(ct.center))
    image = synthesize_xray(DRRVolume.from_volume(to_attenuation(ct)), pose, detector, rng=np.random.default_rng(0))
    return write_xray_dicom(path, image, detector, pose, ct.center)


def mtre_mm(points, camera_to_world_a, camera_to_world_b) -> float:
    """Mean target registration error (mm) of ``points`` ``(N, 3)`` between two camera-to-world poses."""
    import numpy as np
    from xvrcore.metrics.pose_errors import mtre

    def w2c(pose):
        return torch.linalg.inv(torch.as_tensor(np.asarray(pose), dtype=D))

    return float(mtre(w2c(camera_to_world_a), w2c(camera_to_world_b), torch.as_tensor(np.asarray(points), dtype=D)))


def torso_drr_target(shared_data):
    """The 3 mm torso CT for registration tests: its path, DRR volume, centre (float64) and bone points (RAS)."""
    import numpy as np
    from xvrcore.drr import DRRVolume
    from xvrcore.volume import load_volume
    from xvrcore.volume.attenuation import to_attenuation

    path = shared_data / "open" / "ct" / "torso_totalseg" / "torso_ct_3mm.nii.gz"
    ct = load_volume(path)
    points = ct.ijk_to_ras(np.argwhere(ct.data > 250)[::7, ::-1].astype(np.float64))
    return path, DRRVolume.from_volume(to_attenuation(ct)), torch.as_tensor(ct.center, dtype=D), points


def line_integrals(stored, photons: float) -> torch.Tensor:
    """The line integrals ``-log(counts / photons)`` (float32) of a synthetic detector image of raw counts."""
    import numpy as np

    return torch.as_tensor(-np.log(np.clip(stored.astype(np.float64), 1, None) / photons)).float()
