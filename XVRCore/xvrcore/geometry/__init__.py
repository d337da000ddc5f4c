"""C-arm geometry: rotations and rigid transforms, pinhole cameras and detectors, C-arm and DICOM positioner poses.

The conventions every module shares (world, camera, mirrored views) are stated once, in
:mod:`xvrcore.conventions`.
"""

from .camera import (
    Detector,
    Intrinsics,
    backproject,
    camera_directions,
    frustum_corners,
    pixel_grid,
    project,
    projection_matrix,
    source_position,
    world_to_camera,
)
from .carm import ORIENTATIONS, carm_parameters, carm_pose, from_diffdrr, to_diffdrr
from .pose import CameraPose, as_pose, camera_pose
from .positioner import PositionerAngles, pose_from_positioner, pose_from_xray, positioner_from_pose
from .rotations import axis_angle_to_matrix, euler_to_matrix, invert_rigid, make_rigid, matrix_to_euler

__all__ = [
    "ORIENTATIONS",
    "CameraPose",
    "Detector",
    "Intrinsics",
    "PositionerAngles",
    "as_pose",
    "axis_angle_to_matrix",
    "backproject",
    "camera_directions",
    "camera_pose",
    "carm_parameters",
    "carm_pose",
    "euler_to_matrix",
    "from_diffdrr",
    "frustum_corners",
    "invert_rigid",
    "make_rigid",
    "matrix_to_euler",
    "pixel_grid",
    "pose_from_positioner",
    "pose_from_xray",
    "positioner_from_pose",
    "project",
    "projection_matrix",
    "source_position",
    "to_diffdrr",
    "world_to_camera",
]
