"""MRA and DSA end to end: DSA-like images of an MRA-like head registered, trained on, evaluated.

The MRA-like volume is the head CT (2.5 mm blocks) with synthetic vessels
(:func:`xvrcore.volume.mra_phantom.mra_like_from_ct`; README, "MRA and DSA"). A DSA-like image is a
two-frame XA DICOM: a mask frame of the head's tissue and bone and a filled frame with the vessels'
contrast added, each with Poisson noise, which the reader subtracts in the log domain (``--mask-frame``).
The registration renders the MRA's intensity model, not the vessels the image was made of.
"""

import json
import math
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import torch
from xvrcore.app.cli import main
from xvrcore.app.evaluate import EvaluationSettings, run_evaluation
from xvrcore.drr import DRRVolume, render
from xvrcore.geometry.camera import Detector, world_to_camera
from xvrcore.geometry.carm import carm_pose
from xvrcore.geometry.rotations import axis_angle_to_matrix
from xvrcore.io.pose_json import camera_pose, read_pose_json, write_pose_json
from xvrcore.metrics.pose_errors import mtre
from xvrcore.registration import RegistrationSettings, Stage
from xvrcore.registration.dsa import register_dsa, vessel_region
from xvrcore.volume import load_volume
from xvrcore.volume.attenuation import MU_CONTRAST_PER_MM, hu_to_attenuation
from xvrcore.volume.mra_phantom import block_average, mra_like_from_ct
from xvrcore.volume.vessels import load_rendered_volume
from xvrcore.xray import read_xray
from xvrcore.xray.synthesis import SyntheticXray, write_xray_dicom

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DETECTOR = Detector(1200.0, 96, 96, 2.0, 2.0)  # 1.25 mm pixels at the isocentre
PHOTONS = 1e5  # per 2-mm pixel and frame, unattenuated
CHEAP = RegistrationSettings(stages=(Stage(48, 80, 1e-2, 2.0, 0.8), Stage(96, 80, 4e-3, 0.8, 0.5),
                                     Stage(96, 60, 1.5e-3, 0.3, 0.3)), search=None, retry_searches=())
FRONTAL = [20.0, 3.0, -2.0, 4.0, -750.0, -5.0]
LATERAL = [70.0, -4.0, 2.0, -6.0, -720.0, 3.0]


@pytest.fixture(scope="module")
def head(head_ct_path, tmp_path_factory):
    ct = load_volume(head_ct_path)
    phantom = mra_like_from_ct(ct, spacing_mm=2.5)
    folder = tmp_path_factory.mktemp("mra")
    mra_path, vessels_path = phantom.mra.save(folder / "mra_like.nii.gz"), phantom.vessels.save(folder / "vessels.nii.gz")
    background = block_average(ct, 2.5)
    occupancy = phantom.occupancy
    inside = np.argwhere(occupancy.data > 0.5)[:, ::-1]
    pick = inside[np.random.default_rng(0).choice(len(inside), 30, replace=False)]
    return SimpleNamespace(
        mra_path=mra_path, vessels_path=vessels_path, center=torch.as_tensor(phantom.mra.center),
        tissue=DRRVolume(torch.as_tensor(hu_to_attenuation(background.data), dtype=torch.float64), background.affine),
        vessels=DRRVolume(torch.as_tensor(occupancy.data * MU_CONTRAST_PER_MM, dtype=torch.float64), occupancy.affine),
        targets=torch.as_tensor(occupancy.ijk_to_ras(pick.astype(np.float64))),
        drr=DRRVolume.from_volume(load_rendered_volume(mra_path, "mra").attenuation),
    )


def _dsa_dicom(path, head, true: torch.Tensor, seed: int):
    """A two-frame XA DICOM: frame 0 the mask (tissue, bone), frame 1 with the vessels' contrast, 12-bit raw."""
    rng = np.random.default_rng(seed)
    k = DETECTOR.intrinsics()
    with torch.no_grad():
        tissue = render(head.tissue, true, k, method="siddon")[0, 0].numpy()
        vessels = render(head.vessels, true, k, method="siddon")[0, 0].numpy()
    mask = np.zeros((96, 96), bool)
    mask[3:93, 3:93] = True  # the collimator's blades absorb the beam outside
    blades = np.where(mask, 0.0, 5.0)
    frames = [rng.poisson(PHOTONS * np.exp(-(tissue + c * vessels + blades))) / PHOTONS * (4095 / 1.2)
              for c in (0.0, 1.0)]
    stored = [np.clip(np.round(f), 1, 4095).astype(np.uint16) for f in frames]
    write_xray_dicom(path, SyntheticXray(stored[1], vessels.astype(np.float32), mask, (3, 92, 3, 92)), DETECTOR, true,
                     head.center)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames, ds.PixelData = 2, np.stack(stored).astype("<u2").tobytes()
    ds.save_as(path)
    return path


def _off(true: torch.Tensor, center: torch.Tensor, shift_mm: float, angle_deg: float, seed: int) -> torch.Tensor:
    """``true`` turned by exactly ``angle_deg`` about ``center`` and shifted by exactly ``shift_mm`` (random axes)."""
    rng = np.random.default_rng(seed)
    axis, direction = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 3)))
    rot = axis_angle_to_matrix(torch.as_tensor(axis * math.radians(angle_deg)))
    out = true.clone()
    out[:3, :3] = rot @ true[:3, :3]
    out[:3, 3] = rot @ (true[:3, 3] - center) + center + torch.as_tensor(direction * shift_mm)
    return out


def _mtre(head, true, pose) -> float:
    return float(mtre(world_to_camera(true), world_to_camera(pose), head.targets))


@pytest.mark.parametrize(("view", "seed"), [(FRONTAL, 1), (LATERAL, 2)])
def test_a_dsa_registers_to_the_mra_from_a_start_6_mm_and_4_degrees_off(head, tmp_path, view, seed):
    true = carm_pose(torch.tensor(view, dtype=torch.float64), "PA", head.center)
    xray = read_xray(_dsa_dicom(tmp_path / "dsa.dcm", head, true, seed), frame=1, mask_frame=0)
    start = _off(true, head.center, 6.0, 4.0, seed)
    result = register_dsa(head.drr, torch.as_tensor(xray.pixels), xray.intrinsics, start,
                          mask=torch.as_tensor(xray.mask), settings=CHEAP)
    before, after = _mtre(head, true, start), _mtre(head, true, result.camera_to_world)
    assert before > 5.0
    assert after < 1.0, f"mTRE {before:.2f} -> {after:.3f} mm"
    assert result.similarity > result.initial_similarity


def test_the_similarity_region_is_the_dilated_vessel_projection_within_the_exposed_field(head):
    true = carm_pose(torch.tensor(FRONTAL, dtype=torch.float64), "PA", head.center)
    k = DETECTOR.intrinsics()
    with torch.no_grad():
        drr = render(head.drr, true, k)[0, 0]
    exposure = torch.ones(96, 96)
    exposure[:, :10] = 0
    tight, wide = (vessel_region(head.drr, true, k, exposure, margin) for margin in (2.0, 12.0))
    vessels = drr > 0.05 * torch.quantile(drr[drr > 0], 0.99)
    assert bool((tight[vessels & (exposure > 0)] == 1).all())  # every vessel pixel that was exposed is in
    assert float(tight[:, :10].max()) == 0.0  # never outside the exposed field
    assert 0.05 < float(tight.mean()) < float(wide.mean()) < 0.95  # a region, wider with the margin


def _register_cli(head, tmp_path, capsys, *extra: str) -> tuple[int, str]:
    true = carm_pose(torch.tensor(FRONTAL, dtype=torch.float64), "PA", head.center)
    dicom = _dsa_dicom(tmp_path / "dsa.dcm", head, true, 1)
    write_pose_json(tmp_path / "start.json", camera_pose(DETECTOR.intrinsics(), _off(true, head.center, 6.0, 4.0, 1)))
    code = main(["register", str(dicom), "--volume", str(head.mra_path), "--frame", "1", "--mask-frame", "0",
                 "--init-pose", str(tmp_path / "start.json"), "--output", str(tmp_path / "out"), "--quiet", *extra])
    return code, capsys.readouterr().err


def test_register_with_modality_mra_registers_the_dsa_and_records_the_modality(head, tmp_path, capsys):
    code, err = _register_cli(head, tmp_path, capsys, "--modality", "mra", "--scales", "48", "96",
                              "--n-itrs", "80", "80", "--no-retry")
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "dsa.json").read_text())
    assert record["volume"]["modality"] == "mra" and record["volume"]["modality_from"] == "given"
    assert record["volume"]["attenuation_model"].startswith("MRA bright vessels")
    assert "dsa" in record["volume"]
    true = carm_pose(torch.tensor(FRONTAL, dtype=torch.float64), "PA", head.center)
    after = _mtre(head, true, torch.as_tensor(read_pose_json(tmp_path / "out" / "dsa.json").camera_to_world))
    assert after < 1.5, f"mTRE after the command-line registration {after:.2f} mm"


def test_auto_modality_of_a_nifti_mra_is_ct_and_says_so(head, tmp_path, capsys):
    code, err = _register_cli(head, tmp_path, capsys, "--scales", "32", "--n-itrs", "1", "--no-retry")
    record = json.loads((tmp_path / "out" / "dsa.json").read_text()) if code == 0 else {}
    assert record.get("volume", {}).get("modality") == "ct", err
    assert any("--modality mra" in w for w in record["warnings"])


def test_a_vessel_segmentation_replaces_the_intensity_model(head):
    loaded = load_rendered_volume(head.mra_path, "mra", head.vessels_path)
    labels = load_volume(head.vessels_path, kind="labels").data != 0
    assert loaded.vessel_only and loaded.record["vessels_file"] == "vessels.nii.gz"
    assert np.allclose(loaded.attenuation.data[labels], MU_CONTRAST_PER_MM)
    assert float(np.abs(loaded.attenuation.data[~labels]).max()) == 0.0


def test_a_model_trained_on_the_mra_records_it_and_is_refused_on_a_ct(head, head_ct_path, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--volume", str(head.mra_path), "--modality", "mra", "--output", str(run),
                 "--preset", "neurovasculature", "--iterations", "2", "--batch-size", "2", "--image-size", "32",
                 "--width", "8", "--validate-every", "0", "--threads", "1", "--quiet"])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((run / "model.json").read_text())
    assert meta["modality"] == "mra" and meta["renderer"]["attenuation"].startswith("MRA bright vessels")
    capsys.readouterr()
    code = main(["register", str(_dsa_dicom(tmp_path / "dsa.dcm", head, carm_pose(torch.tensor(FRONTAL, dtype=torch.float64),
                                                                                  "PA", head.center), 1)),
                 "--volume", str(head_ct_path), "--modality", "ct", "--model", str(run), "--allow-other-volume",
                 "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "trained on MRA" in err[0] and "CT" in err[0] and "Traceback" not in err[0]


def test_evaluate_neurovasculature_with_an_mra_scores_dsas(head, tmp_path):
    config = EvaluationSettings(volume=str(head.mra_path), output=str(tmp_path / "eval"), preset="neurovasculature",
                                modality="mra", n=1, pixels=96, translation_range=(6.0, 6.0), max_rotation_deg=4.0)
    summary = run_evaluation(config, CHEAP)
    meta = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert meta["volume"]["modality"] == "mra" and meta["config"]["modality"] == "mra"
    perturbed = summary["perturbed"]
    assert perturbed["initial_mtre"]["median"] > 3.0
    assert perturbed["mtre_mm"]["median"] < 1.0, perturbed["mtre_mm"]
