"""The sample data a user can try both panels with, without data of their own: a pelvis CT shipped with the
extension (``XVRTraining/Resources/SampleData/XVRPelvisCT.nii.gz``, 3 mm, 1 MB; its provenance is in the
``.txt`` beside it) and a simulated XA DICOM of it, written at first use into Slicer's temporary directory.
Nothing is downloaded.

The simulated X-ray is :func:`xvrcore.xray.synthesis.synthesize_xray` of the CT at a C-arm pose that its
header cannot state exactly (an in-plane roll and a table offset, as on a real C-arm), so registration from
the header has something to do: :data:`SAMPLE_VIEW` is the pose, :data:`SAMPLE_DETECTOR` the detector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["SAMPLE_CT_NAME", "SAMPLE_DETECTOR", "SAMPLE_VIEW", "SAMPLE_XRAY_NAME", "load_sample_ct",
           "sample_xray_pose", "write_sample_xray"]

SAMPLE_CT_NAME = "XVR pelvis CT"
SAMPLE_XRAY_NAME = "XVRPelvisXray.dcm"
#: LAO/RAO and CRA/CAU (°), source–isocentre distance (mm), then what the header cannot say: an in-plane roll
#: (°) and an offset of the isocentre across the beam (mm).
SAMPLE_VIEW = {"primary": 15.0, "secondary": -10.0, "sod": 700.0, "roll": 3.0, "offset": (6.0, -4.0)}
#: Source–detector distance (mm), rows, columns, pixel spacing (mm): a 288 mm field at the detector, about
#: the CT's length at the isocentre.
SAMPLE_DETECTOR = {"sdd": 1020.0, "rows": 160, "cols": 160, "spacing": 1.8}
_SEED = 0  # the same X-ray every time (noise, gain field, collimator blades)


def load_sample_ct(scene, ct_path: str | Path):
    """The sample CT as a volume node named :data:`SAMPLE_CT_NAME` (Slicer's own reader)."""
    from .volumes import load_volume_node

    return load_volume_node(scene, ct_path, name=SAMPLE_CT_NAME)


def sample_xray_pose(isocenter) -> np.ndarray:
    """The true ``camera_to_world`` of the simulated X-ray about ``isocenter`` (RAS mm; conventions:
    ``xvrcore.conventions``): the nominal C-arm pose of :data:`SAMPLE_VIEW`, rolled about its beam and
    shifted across it."""
    import torch
    from xvrcore.geometry.positioner import pose_from_positioner
    from xvrcore.geometry.rotations import axis_angle_to_matrix

    view = SAMPLE_VIEW
    nominal = pose_from_positioner(view["primary"], view["secondary"], view["sod"],
                                   torch.as_tensor(np.asarray(isocenter, dtype=np.float64)))
    pose = nominal.clone()
    beam = nominal[:3, 2]
    pose[:3, :3] = axis_angle_to_matrix(beam * np.deg2rad(view["roll"])) @ nominal[:3, :3]
    pose[:3, 3] = nominal[:3, 3] + nominal[:3, :3] @ torch.tensor([*view["offset"], 0.0], dtype=torch.float64)
    return pose.numpy()


def write_sample_xray(ct_path: str | Path, folder: str | Path) -> Path:
    """The simulated XA DICOM of the sample CT in ``folder`` (written once, atomically; later calls reuse it)."""
    path = Path(folder) / SAMPLE_XRAY_NAME
    if path.is_file():
        return path
    import torch
    from xvrcore.drr import DRRVolume
    from xvrcore.geometry.camera import Detector
    from xvrcore.io.atomic import atomic_write
    from xvrcore.volume import load_volume
    from xvrcore.volume.attenuation import to_attenuation
    from xvrcore.xray.synthesis import synthesize_xray, write_xray_dicom

    ct = load_volume(ct_path)
    d = SAMPLE_DETECTOR
    detector = Detector(d["sdd"], d["rows"], d["cols"], d["spacing"], d["spacing"])
    pose = torch.as_tensor(sample_xray_pose(ct.center))
    image = synthesize_xray(DRRVolume.from_volume(to_attenuation(ct)), pose, detector,
                            rng=np.random.default_rng(_SEED))
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: write_xray_dicom(tmp, image, detector, pose, ct.center))
