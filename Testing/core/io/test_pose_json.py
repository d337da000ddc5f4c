"""The shared result JSON: round trips in both handedness forms, minimal files, clear errors."""

import json
import math

import numpy as np
import pytest
from core_helpers import carm_view
from xvrcore.geometry.camera import Detector, Intrinsics
from xvrcore.geometry.pose import CameraPose, camera_pose
from xvrcore.io.pose_json import PoseFileError, pose_to_dict, read_pose_json, write_pose_json

# ---- result JSON ---------------------------------------------------------------------------------


def _example_pose(mirrored=True):
    k = Detector(1020.0, 96, 128, 0.8, 0.7, principal_offset=(3.0, -2.0), mirrored=mirrored).intrinsics()
    return camera_pose(k, carm_view([12.0, -7.0, 3.0, 4.0, 760.0, -2.0]), similarity=0.93)


@pytest.mark.parametrize("handedness", ["left", "right"])
def test_result_json_round_trip_and_contents(tmp_path, handedness):
    pose = _example_pose()
    path = write_pose_json(tmp_path / "r.json", pose, handedness)
    data = json.loads(path.read_text())
    k, w2c, p = (np.array(data[key]) for key in ("intrinsics", "world_to_camera", "projection"))
    assert k.shape == (3, 3) and w2c.shape == (4, 4) and p.shape == (3, 4)
    assert np.allclose(k @ w2c[:3], p)
    assert data["handedness"] == handedness
    assert np.sign(np.linalg.det(w2c[:3, :3])) == (-1 if handedness == "left" else 1)
    assert (k[0, 0] > 0) == (handedness == "left")
    assert np.allclose(p, pose.projection)  # same projection whichever handedness
    back = read_pose_json(path)
    assert back.intrinsics.fx == pytest.approx(pose.intrinsics.fx)
    assert back.intrinsics.cx == pytest.approx(pose.intrinsics.cx)
    assert np.allclose(back.camera_to_world, pose.camera_to_world, atol=1e-9)
    assert back.extra == {"similarity": 0.93}


def test_projection_alone_is_enough(tmp_path):
    pose = _example_pose()
    d = pose_to_dict(pose)
    slim = {"projection": (np.array(d["projection"]) * 3.7).tolist(), "image_size": d["image_size"]}
    (tmp_path / "p.json").write_text(json.dumps(slim))
    back = read_pose_json(tmp_path / "p.json")
    assert np.allclose(back.camera_to_world, pose.camera_to_world, atol=1e-8)
    assert back.intrinsics.mirrored


def test_non_mirrored_pose_is_right_handed(tmp_path):
    pose = _example_pose(mirrored=False)
    d = pose_to_dict(pose)
    assert d["handedness"] == "right"
    with pytest.raises(ValueError, match="right-handed"):
        pose_to_dict(pose, "left")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("image_size"), "image_size"),
        (lambda d: d.update(intrinsics=[[1, 0], [0, 1]]), "3×3"),
        (lambda d: d.update(world_to_camera=(np.array(d["world_to_camera"]) * 1.1).tolist()), "not rigid"),
        (lambda d: d.update(projection=(np.array(d["projection"]) + 5).tolist()), "inconsistent"),
        (lambda d: d["projection"][0].__setitem__(0, float("nan")), "NaN"),
        (lambda d: [d.pop(k) for k in ("projection", "intrinsics")], "needs 'projection'"),
    ],
)
def test_bad_result_json_is_rejected_with_the_file_name(tmp_path, mutate, message):
    d = pose_to_dict(_example_pose())
    mutate(d)
    path = tmp_path / "bad_pose.json"
    path.write_text(json.dumps(d))
    with pytest.raises(PoseFileError, match=message) as err:
        read_pose_json(path)
    assert "bad_pose.json" in str(err.value)


def test_unreadable_json_names_the_file(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(PoseFileError, match="x.json"):
        read_pose_json(tmp_path / "x.json")
    with pytest.raises(PoseFileError, match="not found"):
        read_pose_json(tmp_path / "missing.json")


def test_camera_pose_rejects_reflections():
    with pytest.raises(ValueError, match="proper"):
        camera_pose(Intrinsics(1, 1, 0, 0, 2, 2), np.diag([-1.0, 1, 1, 1]))
    assert isinstance(_example_pose(), CameraPose)
    assert math.isclose(np.linalg.det(_example_pose().world_to_camera[:3, :3]), 1.0)
