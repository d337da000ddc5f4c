"""The xvr paper's C-arm pose parameters, and DiffDRR/xvr poses, in the project's conventions.

The paper (Methods M.1, Eq. 4 and 7; Table S2) describes a C-arm pose by six numbers
``(α, β, γ, x, y, z)``: ``R = Rz(α) Rx(β) Ry(γ)`` and a camera-to-world matrix ``[R | R t]``
with ``t = (x, y, z)`` in mm, in a frame centred on the isocentre (the volume centre) and
reoriented so that the beam runs along the patient's anterior–posterior axis:

* ``"AP"``: at zero angles the source is anterior (``y > 0`` is the source-to-isocentre
  distance) and the beam points posterior;
* ``"PA"``: at zero angles the beam points anterior; the source is posterior for ``y < 0``.

Meaning of the angles (in the world RAS frame; checked in ``Testing/core/geometry/test_carm.py``):
α rotates the C-arm about the patient's superior–inferior axis (LAO/RAO), β about the rotated
left–right axis (cranial/caudal), γ about the beam (in-plane). With ``"PA"`` and ``y < 0``,
α = +90° puts the source at the patient's right and the detector at the left (a left-lateral
view), and β > 0 moves the detector toward the head. With ``"AP"`` the signs of α and β are
mirrored.

Internally every pose here is a proper ``camera_to_world`` in the project's right-handed camera
frame (see :mod:`xvrcore.conventions`); the image handedness is carried by the sign of ``fx``.
DiffDRR renders with ``reverse_x_axis=False`` the detector-side (mirrored) view for ``"AP"`` and
the pinhole view for ``"PA"``; :func:`from_diffdrr` returns which one applies.
"""

from __future__ import annotations

import torch

from .rotations import euler_to_matrix, make_rigid, matrix_to_euler

__all__ = ["ORIENTATIONS", "carm_parameters", "carm_pose", "from_diffdrr", "to_diffdrr"]

ORIENTATIONS = ("AP", "PA")

# DiffDRR's reorientation of its camera frame into the centred world frame (world = P · reorient · cam).
_REORIENT = {
    "AP": [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]],
    "PA": [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
}
# Our right-handed camera axes expressed in DiffDRR's camera axes. DiffDRR's rows run along its -y,
# so our +y is its -y; for "PA" (a reflection) x is flipped as well to keep the pose proper.
_CAMERA_FLIP = {"AP": [-1.0, -1.0, 1.0], "PA": [1.0, -1.0, 1.0]}


def _check_orientation(orientation: str) -> str:
    key = orientation.upper()
    if key not in ORIENTATIONS:
        raise ValueError(f"orientation must be 'AP' or 'PA', got {orientation!r}")
    return key


def _frame_change(orientation: str, dtype, device) -> torch.Tensor:
    """Rotation from our camera frame to the paper's pre-reorientation camera frame."""
    key = _check_orientation(orientation)
    reorient = torch.tensor(_REORIENT[key], dtype=dtype, device=device)
    flip = torch.diag(torch.tensor(_CAMERA_FLIP[key], dtype=dtype, device=device))
    return reorient @ flip


def _translation(isocenter, like: torch.Tensor) -> torch.Tensor:
    iso = torch.zeros(3) if isocenter is None else torch.as_tensor(isocenter)
    eye = torch.eye(3, dtype=like.dtype, device=like.device)
    return make_rigid(eye, iso.to(like.dtype).to(like.device))


def carm_pose(
    params: torch.Tensor, orientation: str = "AP", isocenter=None, degrees: bool = True
) -> torch.Tensor:
    """``camera_to_world`` ``(..., 4, 4)`` from the paper's ``(α, β, γ, x, y, z)`` ``(..., 6)``.

    ``isocenter``: RAS position (mm) of the frame's origin, usually the volume centre.
    """
    angles = torch.deg2rad(params[..., :3]) if degrees else params[..., :3]
    rot = euler_to_matrix(angles, "ZXY")
    paper = make_rigid(rot, (rot @ params[..., 3:, None])[..., 0])
    change = make_rigid(_frame_change(orientation, params.dtype, params.device), torch.zeros(3, dtype=params.dtype))
    return _translation(isocenter, params) @ paper @ change


def carm_parameters(
    camera_to_world: torch.Tensor, orientation: str = "AP", isocenter=None, degrees: bool = True
) -> torch.Tensor:
    """Inverse of :func:`carm_pose`: ``(α, β, γ, x, y, z)`` of proper ``camera_to_world`` poses."""
    paper = _to_paper(camera_to_world, orientation, isocenter)
    rot = paper[..., :3, :3]
    angles = matrix_to_euler(rot, "ZXY")
    t = (rot.transpose(-1, -2) @ paper[..., :3, 3:])[..., 0]
    return torch.cat([torch.rad2deg(angles) if degrees else angles, t], -1)


def _to_paper(camera_to_world: torch.Tensor, orientation: str, isocenter) -> torch.Tensor:
    change = _frame_change(orientation, camera_to_world.dtype, camera_to_world.device)
    centred = torch.linalg.inv(_translation(isocenter, camera_to_world)) @ camera_to_world
    return make_rigid(centred[..., :3, :3] @ change.T, centred[..., :3, 3])


def from_diffdrr(
    pose: torch.Tensor, orientation: str = "AP", reverse_x_axis: bool = False, isocenter=None
) -> tuple[torch.Tensor, bool]:
    """Our ``camera_to_world`` and image mirroring for a DiffDRR/xvr pose matrix.

    ``pose`` is DiffDRR's camera-to-world ``P`` (centred frame, before reorientation). The returned
    flag is True when DiffDRR's image with these settings is the detector-side (mirrored) view,
    i.e. our intrinsics need ``fx < 0`` to reproduce it.
    """
    key = _check_orientation(orientation)
    change = make_rigid(_frame_change(key, pose.dtype, pose.device), torch.zeros(3, dtype=pose.dtype))
    mirrored = (not reverse_x_axis) if key == "AP" else reverse_x_axis
    return _translation(isocenter, pose) @ pose @ change, mirrored


def to_diffdrr(
    camera_to_world: torch.Tensor, mirrored: bool, orientation: str = "AP", isocenter=None
) -> tuple[torch.Tensor, bool]:
    """DiffDRR pose matrix and ``reverse_x_axis`` flag that render the same image (inverse of :func:`from_diffdrr`)."""
    key = _check_orientation(orientation)
    reverse_x_axis = (not mirrored) if key == "AP" else mirrored
    return _to_paper(camera_to_world, key, isocenter), reverse_x_axis
