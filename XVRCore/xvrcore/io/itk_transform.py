"""A registered pose as an ITK transform file that 3D Slicer loads as the C-arm's transform node.

**Direction (stated once, used everywhere).** The file is written so that Slicer, on loading it,
creates a ``vtkMRMLLinearTransformNode`` whose **TransformToParent is ``camera_to_world``**: it
maps a point given in the camera frame of :mod:`xvrcore.geometry` (origin at the X-ray source,
+z toward the detector, mm) to the world (the CT's RAS frame, mm). Put a model drawn in camera
coordinates (the source at the origin, the detector frustum along +z) under this node and Slicer
shows it where the C-arm was.

What Slicer does with an ITK file (``vtkMRMLTransformStorageNode::ReadFromTransformFile`` and
``vtkITKTransformConverter::SetVTKLinearTransformFromITK``; Slicer's "Transforms" developer
documentation):

1. ITK stores *resampling* transforms (fixed → moving) in LPS: the file's affine ``T_lps`` is
   ``y = A x + o`` with ``A`` = ``GetMatrix()``, ``o`` = ``GetOffset()`` (any centre folded in).
2. Slicer converts it to RAS as ``T_ras = F · T_lps · F`` with ``F = diag(−1, −1, 1, 1)``.
3. It sets ``T_ras`` as the node's **TransformFromParent**; TransformToParent is its inverse.

So TransformToParent = ``camera_to_world`` requires TransformFromParent = ``world_to_camera``,
and the file holds ``T_lps = F · world_to_camera · F`` (a proper rigid transform, written as an
``AffineTransform_double_3_3`` — the class Slicer itself writes for linear transforms). In ITK's
own words it maps a world point (LPS) to the camera point with its x and y negated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_write

__all__ = [
    "TransformFileError",
    "camera_to_world_from_itk",
    "itk_from_camera_to_world",
    "read_pose_transform",
    "write_pose_transform",
]

_F = np.diag([-1.0, -1.0, 1.0, 1.0])  # LPS <-> RAS (its own inverse)
_SUFFIXES = (".tfm", ".txt", ".h5", ".hdf5", ".mat")
_RIGID_TOL = 1e-6


class TransformFileError(ValueError):
    """A transform file that is missing, unreadable, not linear or not a rigid pose."""


def _as_pose(camera_to_world) -> np.ndarray:
    m = np.asarray(camera_to_world.detach().cpu() if hasattr(camera_to_world, "detach") else camera_to_world,
                   dtype=np.float64).reshape(4, 4)
    rot = m[:3, :3]
    if not np.isfinite(m).all() or np.abs(rot @ rot.T - np.eye(3)).max() > _RIGID_TOL or np.linalg.det(rot) < 0:
        raise ValueError("camera_to_world must be a finite proper rigid transform (det +1)")
    if not np.allclose(m[3], [0, 0, 0, 1]):
        raise ValueError("camera_to_world must have a last row (0, 0, 0, 1)")
    return m


def itk_from_camera_to_world(camera_to_world) -> np.ndarray:
    """The 4×4 LPS resampling matrix stored in the file: ``F · world_to_camera · F``."""
    pose = _as_pose(camera_to_world)
    return _F @ np.linalg.inv(pose) @ _F


def camera_to_world_from_itk(itk_matrix) -> np.ndarray:
    """Inverse of :func:`itk_from_camera_to_world` (what Slicer's TransformToParent becomes)."""
    m = np.asarray(itk_matrix, dtype=np.float64).reshape(4, 4)
    return np.linalg.inv(_F @ m @ _F)


def _check_suffix(path: Path) -> None:
    if not path.name.lower().endswith(_SUFFIXES):
        raise TransformFileError(f"{path}: unsupported transform file type; use one of {', '.join(_SUFFIXES)}")


def write_pose_transform(path: str | Path, camera_to_world) -> Path:
    """Write the pose for Slicer (``.tfm``/``.txt`` text or ``.h5`` HDF5), atomically."""
    path = Path(path)
    _check_suffix(path)
    m = itk_from_camera_to_world(camera_to_world)
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(m[:3, :3].ravel().tolist())
    affine.SetTranslation(m[:3, 3].tolist())  # centre (0, 0, 0): translation = offset

    def write(tmp: Path) -> None:
        sitk.WriteTransform(affine, str(tmp))

    try:
        return atomic_write(path, write)
    except RuntimeError as exc:
        raise TransformFileError(f"{path}: could not write the transform ({str(exc).strip().splitlines()[-1]})") from None


def _affine_of(transform: sitk.Transform, source: str) -> np.ndarray:
    """The 4×4 matrix of a linear ITK transform, found by mapping points (works for any class)."""
    basis = np.vstack([np.zeros(3), np.eye(3) * 100.0])
    mapped = np.array([transform.TransformPoint(p.tolist()) for p in basis])
    m = np.eye(4)
    m[:3, 3] = mapped[0]
    m[:3, :3] = (mapped[1:] - mapped[0]).T / 100.0
    probe = np.array([[37.0, -81.0, 12.5], [-250.0, 140.0, 610.0]])
    expected = probe @ m[:3, :3].T + m[:3, 3]
    actual = np.array([transform.TransformPoint(p.tolist()) for p in probe])
    if not np.allclose(actual, expected, atol=1e-6 * (1 + np.abs(expected).max())):
        raise TransformFileError(f"{source}: the transform is not linear; a C-arm pose is a rigid transform")
    return m


def read_pose_transform(path: str | Path) -> np.ndarray:
    """``camera_to_world`` (4×4, RAS mm) from an ITK transform file, as Slicer would load it."""
    path = Path(path)
    if not path.is_file():
        raise TransformFileError(f"{path}: file not found")
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        raise TransformFileError(f"{path}: not a readable ITK transform file ({str(exc).strip().splitlines()[-1]})") from None
    pose = camera_to_world_from_itk(_affine_of(transform, str(path)))
    err = float(np.abs(pose[:3, :3] @ pose[:3, :3].T - np.eye(3)).max())
    if err > _RIGID_TOL or np.linalg.det(pose[:3, :3]) < 0:
        raise TransformFileError(f"{path}: the transform is not a rigid pose (|R Rᵀ − I| = {err:.2e} or a reflection)")
    return pose
