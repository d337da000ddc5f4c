"""The shared result JSON: round trips in both handedness forms, minimal files (the three shared keys,
their image size from the X-ray), clear errors."""

import json
import math

import numpy as np
import pytest
import torch
from core_helpers import carm_view
from xvrcore.geometry.camera import Detector, Intrinsics, project
from xvrcore.geometry.pose import CameraPose, camera_pose
from xvrcore.io.pose_json import (
    PoseFileError,
    load_pose_dict,
    load_pose_file,
    pose_to_dict,
    read_pose_json,
    write_pose_json,
)

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
        (lambda d: d.pop("image_size"), "no 'image_size' and no image"),
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


# ---- the pose contract: files with only the three shared keys, written by another tool ------------

# A hand-written camera: 80×60 pixels of 2 mm, 1000 mm from the source, principal point off centre.
_F, _CX, _CY, _W, _H = 500.0, 41.0, 28.0, 80, 60
_SOURCE = np.array([30.0, -700.0, 40.0])


def _world_to_camera_rotation():
    """A proper rotation looking roughly along world +y (camera +z), by Rodrigues' formula."""
    base = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # rows: camera axes in the world
    axis, angle = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8]), 0.2
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    tilt = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
    return base @ tilt


def _hand_written(form: str) -> dict:
    """``intrinsics``, ``world_to_camera`` and ``projection`` as another tool would write them, nothing else.

    ``detector-K``: a mirrored image as a proper rotation and ``fx < 0`` (right-handed);
    ``pinhole-K``: the same mirrored image as a reflection and ``fx > 0`` (left-handed);
    ``pinhole``: an image that is not mirrored (proper rotation, ``fx > 0``).
    """
    rot = _world_to_camera_rotation()
    fx = -_F if form == "detector-K" else _F
    if form == "pinhole-K":
        rot = np.diag([-1.0, 1.0, 1.0]) @ rot
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = rot, -rot @ _SOURCE
    k = np.array([[fx, 0.0, _CX], [0.0, _F, _CY], [0.0, 0.0, 1.0]])
    return {"intrinsics": k.tolist(), "world_to_camera": w2c.tolist(), "projection": (k @ w2c[:3]).tolist()}


def _points_in_view():
    rng = np.random.default_rng(3)
    return _SOURCE + np.array([0.0, 700.0, 0.0]) + rng.uniform(-60, 60, size=(20, 3))


def _pixels(pose):
    uv, depth = project(torch.as_tensor(_points_in_view()), pose.world_to_camera, pose.intrinsics)
    assert bool((depth > 0).all())
    return uv[0].numpy()


def _expected_pixels(mirrored: bool):
    """The pixels worked out by hand: columns run along −x of the right-handed camera in a mirrored view."""
    cam = (_points_in_view() - _SOURCE) @ _world_to_camera_rotation().T
    u = _CX + (-_F if mirrored else _F) * cam[:, 0] / cam[:, 2]
    v = _CY + _F * cam[:, 1] / cam[:, 2]
    return np.stack([u, v], axis=1)


@pytest.mark.parametrize("form, handedness, mirrored",
                         [("detector-K", "right", True), ("pinhole-K", "left", True), ("pinhole", "right", False)])
def test_a_file_with_only_the_three_keys_takes_its_size_from_the_xray(tmp_path, form, handedness, mirrored):
    path = tmp_path / "other_tool.json"
    path.write_text(json.dumps(_hand_written(form)))
    read = load_pose_file(path, image_size=(_W, _H))
    assert (read.handedness, read.mirrored, read.size_from) == (handedness, mirrored, "image")
    assert (read.pose.intrinsics.width, read.pose.intrinsics.height) == (_W, _H)
    assert read.pose.intrinsics.mirrored == mirrored
    assert np.allclose(_pixels(read.pose), _expected_pixels(mirrored), atol=1e-6)
    # Our own writer's file of the same camera projects every point to the same pixel.
    ours = camera_pose(Intrinsics(-_F if mirrored else _F, _F, _CX, _CY, _W, _H), read.pose.camera_to_world)
    back = read_pose_json(write_pose_json(tmp_path / "ours.json", ours))
    assert np.allclose(_pixels(back), _pixels(read.pose), atol=1e-6)
    text = read.describe()  # what render prints: the form the file uses
    assert f"{handedness}-handed" in text and ("mirrored (detector-side)" in text) == mirrored and "80×60" in text


def test_both_handedness_forms_of_one_mirrored_image_are_the_same_camera(tmp_path):
    poses = [load_pose_dict(_hand_written(form), form, (_W, _H)).pose for form in ("detector-K", "pinhole-K")]
    assert np.allclose(poses[0].camera_to_world, poses[1].camera_to_world, atol=1e-9)
    assert poses[0].intrinsics == poses[1].intrinsics


def test_a_declared_size_is_used_unless_the_xray_says_otherwise(tmp_path):
    data = {**_hand_written("detector-K"), "image_size": [_W, _H]}
    assert load_pose_dict(data, "f.json").size_from == "file"
    assert load_pose_dict(data, "f.json", (_W, _H)).size_from == "image"  # agreeing: fine
    with pytest.raises(PoseFileError, match=r"f\.json: declares a 80×60 image but the image it goes with is 100×60"):
        load_pose_dict(data, "f.json", (100, _H))


def test_without_any_size_the_principal_point_gives_one_only_when_asked():
    data = _hand_written("pinhole")
    with pytest.raises(PoseFileError, match="no 'image_size'"):
        load_pose_dict(data, "f.json")
    read = load_pose_dict(data, "f.json", principal_point_size=True)
    assert read.size_from == "principal point"
    assert (read.pose.intrinsics.width, read.pose.intrinsics.height) == (round(2 * _CX + 1), round(2 * _CY + 1))


def test_projection_is_authoritative_up_to_scale_and_sign():
    data = _hand_written("pinhole-K")
    reference = load_pose_dict(data, "f.json", (_W, _H)).pose
    for scale in (1e-3, -2.5):  # another tool's scale, even a negative one, is the same camera
        scaled = {**data, "projection": (np.array(data["projection"]) * scale).tolist()}
        pose = load_pose_dict(scaled, "f.json", (_W, _H)).pose
        assert np.allclose(pose.camera_to_world, reference.camera_to_world, atol=1e-9)
    nudged = np.array(data["projection"])
    nudged[0, 3] *= 1.001  # 0.1 % of one entry: a different camera
    with pytest.raises(PoseFileError, match="disagrees with 'intrinsics' × 'world_to_camera'"):
        load_pose_dict({**data, "projection": nudged.tolist()}, "f.json", (_W, _H))


@pytest.mark.parametrize("form, declared", [("pinhole-K", "right"), ("detector-K", "left")])
def test_a_declared_handedness_must_match_the_matrices(form, declared):
    with pytest.raises(PoseFileError, match=f"says handedness '{declared}'"):
        load_pose_dict({**_hand_written(form), "handedness": declared}, "f.json", (_W, _H))


def test_intrinsics_must_be_upper_triangular():
    data = _hand_written("pinhole")
    data["intrinsics"][1][0] = 3.0
    with pytest.raises(PoseFileError, match=r"'intrinsics' must be \[\[fx, 0, cx\]"):
        load_pose_dict(data, "f.json", (_W, _H))
