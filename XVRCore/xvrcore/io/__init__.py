"""Files that other tools read: the result JSON, ITK transforms, PNG pictures, job events; all written atomically."""

from .atomic import atomic_write, atomic_write_bytes, atomic_write_text, read_json
from .events import CancelToken, emit, parse_line
from .itk_transform import TransformFileError, read_pose_transform, write_pose_transform
from .pose_json import CameraPose, PoseFileError, camera_pose, read_pose_json, write_pose_json

__all__ = [
    "CameraPose",
    "CancelToken",
    "PoseFileError",
    "TransformFileError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "camera_pose",
    "emit",
    "parse_line",
    "read_json",
    "read_pose_json",
    "read_pose_transform",
    "write_pose_json",
    "write_pose_transform",
]
