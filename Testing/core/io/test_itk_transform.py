"""Pose ↔ ITK transform files, checked against what 3D Slicer does when it loads one."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from xvrcore.geometry.positioner import pose_from_positioner
from xvrcore.io.itk_transform import (
    TransformFileError,
    camera_to_world_from_itk,
    itk_from_camera_to_world,
    read_pose_transform,
    write_pose_transform,
)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _poses():
    rng = np.random.default_rng(3)
    for _ in range(4):
        iso = rng.uniform(-200, 200, 3)
        yield pose_from_positioner(rng.uniform(-180, 180), rng.uniform(-60, 60), rng.uniform(400, 900), iso).numpy()


def _slicer_transform_to_parent(path) -> np.ndarray:
    """What Slicer's TransformToParent becomes for an ITK file, from Slicer's source, step by step.

    vtkMRMLTransformStorageNode::ReadFromTransformFile reads the first transform with ITK;
    vtkITKTransformConverter::SetVTKLinearTransformFromITK copies GetMatrix() and GetOffset() into
    a 4×4 (LPS) and converts it as Tras = lps2ras · Tlps · ras2lps (lps2ras = diag(−1, −1, 1, 1));
    the result is set with SetAndObserveTransformFromParentAutoInvert, so TransformToParent is its
    inverse.
    """
    itk = sitk.ReadTransform(str(path))
    if itk.GetName() == "CompositeTransform":
        itk = itk.GetNthTransform(0)
    affine = sitk.AffineTransform(itk)
    a = np.array(affine.GetMatrix()).reshape(3, 3)
    c, t = np.array(affine.GetCenter()), np.array(affine.GetTranslation())
    t_lps = np.eye(4)
    t_lps[:3, :3], t_lps[:3, 3] = a, t + c - a @ c  # ITK's offset
    from_parent = LPS_TO_RAS @ t_lps @ LPS_TO_RAS
    return np.linalg.inv(from_parent)


@pytest.mark.parametrize("suffix", [".tfm", ".h5", ".txt"])
def test_round_trip(tmp_path, suffix):
    for i, pose in enumerate(_poses()):
        path = write_pose_transform(tmp_path / f"pose{i}{suffix}", pose)
        assert np.allclose(read_pose_transform(path), pose, atol=1e-9)


def test_slicer_maps_a_known_camera_point_to_the_expected_world_point(tmp_path):
    # Zero angles: the source is posterior to the isocentre, the beam runs anterior (+A), image
    # columns run along +R of the right-handed camera (x = +R, y = −S), see positioner.py.
    iso = np.array([10.0, 20.0, 30.0])
    pose = pose_from_positioner(0.0, 0.0, 700.0, iso).numpy()
    to_parent = _slicer_transform_to_parent(write_pose_transform(tmp_path / "pose.tfm", pose))
    cases = {
        (0.0, 0.0, 0.0): (10.0, -680.0, 30.0),  # the source
        (0.0, 0.0, 700.0): (10.0, 20.0, 30.0),  # the isocentre on the principal ray
        (50.0, 0.0, 700.0): (60.0, 20.0, 30.0),  # camera +x = +R
        (0.0, 50.0, 700.0): (10.0, 20.0, -20.0),  # camera +y = −S (rows run to the feet)
    }
    for camera, world in cases.items():
        assert np.allclose((to_parent @ np.r_[camera, 1.0])[:3], world, atol=1e-9)
    for i, other in enumerate(_poses()):  # and for any pose, Slicer's TransformToParent is camera_to_world
        assert np.allclose(_slicer_transform_to_parent(write_pose_transform(tmp_path / f"p{i}.h5", other)), other,
                           atol=1e-9)


def test_file_holds_the_lps_resampling_transform(tmp_path):
    pose = next(_poses())
    path = write_pose_transform(tmp_path / "pose.tfm", pose)
    assert "AffineTransform_double_3_3" in path.read_text()
    m = itk_from_camera_to_world(pose)
    # ITK (resampling, fixed → moving) maps a world LPS point to the camera point with x, y negated.
    world_ras = np.array([12.0, -40.0, 77.0])
    camera = (np.linalg.inv(pose) @ np.r_[world_ras, 1.0])[:3]
    itk = sitk.ReadTransform(str(path))
    assert np.allclose(itk.TransformPoint((LPS_TO_RAS[:3, :3] @ world_ras).tolist()), LPS_TO_RAS[:3, :3] @ camera)
    assert np.allclose(camera_to_world_from_itk(m), pose)


def test_reads_other_linear_transform_classes(tmp_path):
    pose = next(_poses())
    m = itk_from_camera_to_world(pose).numpy()
    euler = sitk.Euler3DTransform()
    euler.SetCenter((5.0, -7.0, 11.0))  # a centred rigid transform as other tools write it
    euler.SetMatrix(m[:3, :3].ravel().tolist())
    c = np.array(euler.GetCenter())
    euler.SetTranslation((m[:3, 3] - c + m[:3, :3] @ c).tolist())
    sitk.WriteTransform(euler, str(tmp_path / "euler.tfm"))
    assert np.allclose(read_pose_transform(tmp_path / "euler.tfm"), pose, atol=1e-9)


def test_clear_errors(tmp_path):
    with pytest.raises(TransformFileError, match="not found"):
        read_pose_transform(tmp_path / "missing.tfm")
    scaled = sitk.AffineTransform(3)
    scaled.SetMatrix([2.0, 0, 0, 0, 1, 0, 0, 0, 1])
    sitk.WriteTransform(scaled, str(tmp_path / "scaled.tfm"))
    with pytest.raises(TransformFileError, match="not a rigid"):
        read_pose_transform(tmp_path / "scaled.tfm")
    (tmp_path / "junk.tfm").write_text("not a transform")
    with pytest.raises(TransformFileError, match="junk.tfm"):
        read_pose_transform(tmp_path / "junk.tfm")
    with pytest.raises(TransformFileError, match="unsupported"):
        write_pose_transform(tmp_path / "pose.json", np.eye(4))
    with pytest.raises(ValueError, match="proper rigid"):
        write_pose_transform(tmp_path / "mirror.tfm", np.diag([-1.0, 1.0, 1.0, 1.0]))
