"""DICOM positioner angles → camera poses: directions, image orientation, patient positions, inverse, carm."""

import math
from types import SimpleNamespace

import pytest
import torch
from xvrcore.geometry.camera import Detector, project, world_to_camera
from xvrcore.geometry.carm import carm_parameters, carm_pose
from xvrcore.geometry.positioner import (
    PositionerAngles,
    detector_direction,
    patient_orientation,
    pose_from_positioner,
    pose_from_xray,
    positioner_from_pose,
    positioner_to_carm,
)

D = torch.float64
ISO = torch.tensor([12.0, -30.0, 880.0], dtype=D)  # an isocentre away from the origin (RAS mm)
SOD = 750.0
DET = Detector(sdd=1200.0, rows=300, cols=400, row_spacing=0.5, col_spacing=0.5)  # detector-side view
K = DET.intrinsics()
R, L, A, P, S, I = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))


def _pixel(pose, offset_mm):
    """Pixel (u, v) and depth of the point ``ISO + offset_mm``."""
    pt = (ISO + torch.tensor(offset_mm, dtype=D) * 60.0)[None]
    uv, depth = project(pt, world_to_camera(pose), K)
    return float(uv[0, 0, 0]), float(uv[0, 0, 1]), float(depth[0, 0])


def _side(pose, direction):
    """Which image half a landmark 60 mm from the isocentre along ``direction`` falls on."""
    u, v, depth = _pixel(pose, direction)
    assert depth > 0
    du, dv = u - K.cx, v - K.cy
    return (
        "right" if du > 1e-6 else "left" if du < -1e-6 else "centre",
        "down" if dv > 1e-6 else "up" if dv < -1e-6 else "centre",
    )


def _source(pose):
    return pose[:3, 3] - ISO


# ---- the DICOM directions -----------------------------------------------------------------------------


def test_zero_angles_pa_view_heads_up_radiological():
    pose = pose_from_positioner(0.0, 0.0, SOD, ISO)
    assert pose.dtype == D and pose.shape == (4, 4)
    assert torch.det(pose[:3, :3]) == pytest.approx(1.0)
    src = _source(pose)
    assert torch.allclose(
        src, torch.tensor([0.0, -SOD, 0.0], dtype=D)
    )  # source posterior (below a supine patient)
    assert torch.allclose(pose[:3, 2], torch.tensor(A, dtype=D))  # beam toward the detector, anterior
    # isocentre at the principal point; patient's left on the image right, head at the top
    u, v, _ = _pixel(pose, (0, 0, 0))
    assert (u, v) == pytest.approx((K.cx, K.cy))
    assert _side(pose, L) == ("right", "centre")
    assert _side(pose, R) == ("left", "centre")
    assert _side(pose, S) == ("centre", "up")
    assert _side(pose, I) == ("centre", "down")
    assert patient_orientation(pose) == ("L", "F")  # like a PA chest radiograph (PatientOrientation L\F)


def test_lao30_cra20_landmarks_and_source_side():
    pose = pose_from_positioner(30.0, 20.0, SOD, ISO)
    src = _source(pose)
    assert src[0] > 0 and src[1] < 0 and src[2] < 0  # source right, posterior, caudal
    d = detector_direction(30.0, 20.0)
    a, b = math.radians(30), math.radians(20)
    assert torch.allclose(
        d, torch.tensor([-math.sin(a) * math.cos(b), math.cos(a) * math.cos(b), math.sin(b)], dtype=D)
    )
    assert d[0] < 0 and d[1] > 0 and d[2] > 0  # detector left (LAO), anterior, cranial (CRA)
    assert src.norm() == pytest.approx(SOD)
    assert _side(pose, L)[0] == "right"  # patient's left still on the image right
    assert _side(pose, S)[1] == "up"  # head still up
    assert (
        _side(pose, A)[1] == "down"
    )  # tilting the detector cranially pushes anterior structures down the image
    assert _side(pose, P)[1] == "up"


def test_lateral_and_axial_extremes():
    lao90 = pose_from_positioner(90.0, 0.0, SOD, ISO)
    assert torch.allclose(
        _source(lao90), torch.tensor([SOD, 0.0, 0.0], dtype=D), atol=1e-9
    )  # source at patient's right
    assert patient_orientation(lao90) == ("P", "F")
    assert _side(lao90, A)[0] == "left" and _side(lao90, S)[1] == "up"
    rao90 = pose_from_positioner(-90.0, 0.0, SOD, ISO)
    assert torch.allclose(_source(rao90), torch.tensor([-SOD, 0.0, 0.0], dtype=D), atol=1e-9)
    assert patient_orientation(rao90) == ("A", "F")
    cra90 = pose_from_positioner(0.0, 90.0, SOD, ISO)
    assert torch.allclose(
        _source(cra90), torch.tensor([0.0, 0.0, -SOD], dtype=D), atol=1e-9
    )  # beam from the feet
    ap = pose_from_positioner(180.0, 0.0, SOD, ISO)
    assert torch.allclose(
        _source(ap), torch.tensor([0.0, SOD, 0.0], dtype=D), atol=1e-9
    )  # detector on the back
    assert patient_orientation(ap) == (
        "R",
        "F",
    )  # an AP view seen from behind: patient's right on the image right


def test_primary_and_secondary_signs_are_antisymmetric():
    for a, b in [(25.0, 0.0), (0.0, 25.0), (40.0, -15.0)]:
        d1, d2 = detector_direction(a, b), detector_direction(-a, -b)
        assert torch.allclose(d1 * torch.tensor([-1.0, 1.0, -1.0], dtype=D), d2)


# ---- inverse and the paper's parameters -------------------------------------------------------------


def test_inverse_round_trip_random():
    gen = torch.Generator().manual_seed(3)
    for _ in range(40):
        a = float(torch.rand(1, generator=gen) * 358 - 179)
        b = float(torch.rand(1, generator=gen) * 176 - 88)
        sod = float(400 + 600 * torch.rand(1, generator=gen))
        pose = pose_from_positioner(a, b, sod, ISO)
        got = positioner_from_pose(pose, ISO)
        assert isinstance(got, PositionerAngles)
        assert got.primary == pytest.approx(a, abs=1e-7)
        assert got.secondary == pytest.approx(b, abs=1e-7)
        assert got.sod == pytest.approx(sod, rel=1e-10)
        assert abs(got.roll) < 1e-7 and got.offset < 1e-7
        assert torch.allclose(pose_from_positioner(*got[:3], ISO), pose, atol=1e-9)


def test_inverse_reports_roll_and_offset_of_a_non_nominal_pose():
    pose = pose_from_positioner(20.0, -10.0, SOD, ISO)
    roll = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=D)  # 90° about the beam
    moved = pose.clone()
    moved[:3, :3] = pose[:3, :3] @ roll
    moved[:3, 3] += 5.0 * pose[:3, 0]  # shift the source sideways by 5 mm
    got = positioner_from_pose(moved, ISO)
    assert (got.primary, got.secondary) == pytest.approx((20.0, -10.0))
    assert got.roll == pytest.approx(90.0)
    assert got.offset == pytest.approx(5.0)


def test_pole_secondary_90_round_trips():
    pose = pose_from_positioner(35.0, 90.0, SOD, ISO)
    got = positioner_from_pose(pose, ISO)
    assert got.secondary == pytest.approx(90.0)
    assert torch.allclose(pose_from_positioner(got.primary, got.secondary, got.sod, ISO), pose, atol=1e-9)


@pytest.mark.parametrize(
    "primary,secondary", [(0.0, 0.0), (31.3, 0.1), (-27.3, -0.1), (-26.5, -32.7), (30.7, 23.6), (120.0, 60.0)]
)
def test_carm_pa_with_alpha_primary_beta_secondary_is_the_dicom_pose(primary, secondary):
    """The xvr notes' derivation (§8), verified: PA, α = primary, β = secondary, t = (0, −SOD, 0)."""
    pose = pose_from_positioner(primary, secondary, SOD, ISO)
    params = positioner_to_carm(primary, secondary, SOD)
    assert params.tolist() == pytest.approx([primary, secondary, 0.0, 0.0, -SOD, 0.0])
    assert torch.allclose(carm_pose(params, "PA", ISO), pose, atol=1e-9)
    assert torch.allclose(carm_parameters(pose, "PA", ISO), params, atol=1e-7)
    # the same view in the "AP" parameterisation needs α − 180°, −β and the source on +y
    ap = torch.tensor([primary - 180.0, -secondary, 0.0, 0.0, SOD, 0.0], dtype=D)
    assert torch.allclose(carm_pose(ap, "AP", ISO), pose, atol=1e-9)
    # whereas AP with the DICOM angles unchanged is a different view
    if primary or secondary:
        wrong = carm_pose(torch.tensor([primary, secondary, 0.0, 0.0, SOD, 0.0], dtype=D), "AP", ISO)
        assert not torch.allclose(wrong, pose, atol=1e-3)


def test_batched_angles():
    poses = pose_from_positioner(torch.tensor([0.0, 30.0, -45.0]), torch.tensor([0.0, 20.0, 10.0]), SOD, ISO)
    assert poses.shape == (3, 4, 4)
    assert torch.allclose(poses[1], pose_from_positioner(30.0, 20.0, SOD, ISO))


# ---- patient positions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("position", ["HFS", "FFS", "HFP", "FFP", "HFDR", "FFDL", "LFS"])
def test_patient_relative_angles_ignore_the_table_position(position):
    """DICOM XA angles are patient-relative (PS3.3 C.8.7.5.1.2): the pose in patient RAS does not change."""
    assert torch.equal(
        pose_from_positioner(30.0, 20.0, SOD, ISO, position), pose_from_positioner(30.0, 20.0, SOD, ISO)
    )


def test_equipment_angles_hfs_equals_patient():
    assert torch.allclose(
        pose_from_positioner(30.0, 20.0, SOD, ISO, "HFS", angles="equipment"),
        pose_from_positioner(30.0, 20.0, SOD, ISO),
    )


def test_equipment_angles_ffs_mirror_lao_and_cra_and_rotate_the_image():
    hfs = pose_from_positioner(30.0, 20.0, SOD, ISO, "HFS", angles="equipment")
    ffs = pose_from_positioner(30.0, 20.0, SOD, ISO, "FFS", angles="equipment")
    # detector toward the patient's right and feet instead of left and head; source on the patient's left
    assert hfs[0, 2] < 0 and ffs[0, 2] > 0  # beam x-component: detector left (HFS) / right (FFS)
    assert hfs[2, 2] > 0 and ffs[2, 2] < 0  # detector cranial (HFS) / caudal (FFS)
    assert _source(ffs)[0] < 0
    # the same anatomy view as patient-relative RAO 30 CAU 20, but the image turned by 180°
    mirror = pose_from_positioner(-30.0, -20.0, SOD, ISO)
    for offset in [L, S, A, (1, 2, -1)]:
        u1, v1, _ = _pixel(ffs, offset)
        u2, v2, _ = _pixel(mirror, offset)
        assert (u1 - K.cx, v1 - K.cy) == pytest.approx((-(u2 - K.cx), -(v2 - K.cy)))
    assert patient_orientation(pose_from_positioner(0.0, 0.0, SOD, ISO, "FFS", angles="equipment")) == (
        "R",
        "H",
    )
    got = positioner_from_pose(ffs, ISO)
    assert (got.primary, got.secondary, abs(got.roll)) == pytest.approx((-30.0, -20.0, 180.0))
    assert positioner_from_pose(ffs, ISO, "FFS", angles="equipment")[:2] == pytest.approx((30.0, 20.0))


def test_equipment_angles_prone_and_decubitus():
    hfp = pose_from_positioner(0.0, 0.0, SOD, ISO, "HFP", angles="equipment")
    assert torch.allclose(
        hfp[:3, 2], torch.tensor(P, dtype=D)
    )  # detector above the table = on the patient's back
    assert positioner_from_pose(hfp, ISO).primary == pytest.approx(180.0)
    hfdr = pose_from_positioner(0.0, 0.0, SOD, ISO, "HFDR", angles="equipment")
    assert torch.allclose(
        hfdr[:3, 2], torch.tensor(L, dtype=D)
    )  # right side down: "up" is the patient's left
    assert positioner_from_pose(hfdr, ISO).primary == pytest.approx(90.0)
    for position in ["FFP", "HFDL", "FFDR", "FFDL"]:
        pose = pose_from_positioner(-20.0, 15.0, SOD, ISO, position, angles="equipment")
        assert positioner_from_pose(pose, ISO, position, angles="equipment")[:3] == pytest.approx(
            (-20.0, 15.0, SOD)
        )


def test_invalid_inputs():
    with pytest.raises(ValueError, match="positive"):
        pose_from_positioner(0.0, 0.0, 0.0, ISO)
    with pytest.raises(ValueError, match="PatientPosition"):
        pose_from_positioner(0.0, 0.0, SOD, ISO, "XYZ")
    with pytest.raises(ValueError, match="angles"):
        pose_from_positioner(0.0, 0.0, SOD, ISO, angles="table")
    with pytest.raises(ValueError, match="not supported"):
        pose_from_positioner(0.0, 0.0, SOD, ISO, "LFS", angles="equipment")


def test_pose_from_xray_uses_the_header_fields():
    xray = SimpleNamespace(
        primary_angle=31.3, secondary_angle=0.1, sod=720.0, patient_position="HFS", source="IM1.dcm"
    )
    assert torch.allclose(pose_from_xray(xray, ISO), pose_from_positioner(31.3, 0.1, 720.0, ISO))
    with pytest.raises(ValueError, match="sod"):
        pose_from_xray(SimpleNamespace(primary_angle=0.0, secondary_angle=0.0, sod=None, source="x.dcm"), ISO)
