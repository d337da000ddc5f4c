"""A registered pose as an ITK transform file that 3D Slicer loads as the C-arm's transform node.

**Direction** (the convention of :mod:`xvrcore.conventions`, derived here). The file is written so that Slicer, on loading it,
creates a ``vtkMRMLLinearTransformNode`` whose **TransformToParent is ``camera_to_world``**: it
maps a point given in the camera frame (origin at the X-ray source,
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

import SimpleITK as sitk
import torch

from ..conventions import LPS_TO_RAS
from ..geometry.pose import RIGID_TOLERANCE, as_pose
from ..geometry.rotations import invert_rigid, rigidity_error
from .atomic import atomic_write

__all__ = [
    "TransformFileError",
    "camera_to_world_from_itk",
    "itk_from_camera_to_world",
    "read_pose_transform",
    "write_pose_transform",
]

_F = torch.diag(torch.tensor([*LPS_TO_RAS, 1.0], dtype=torch.float64))  # LPS <-> RAS (its own inverse)
_SUFFIXES = (".tfm", ".txt", ".h5", ".hdf5", ".mat")


class TransformFileError(ValueError):
    """A transform file that is missing, unreadable, not linear or not a rigid pose."""


def itk_from_camera_to_world(camera_to_world) -> torch.Tensor:
    """The 4×4 LPS resampling matrix stored in the file: ``F · world_to_camera · F``."""
    pose = as_pose(camera_to_world).reshape(4, 4).cpu()
    return _F @ invert_rigid(pose) @ _F


def camera_to_world_from_itk(itk_matrix) -> torch.Tensor:
    """Inverse of :func:`itk_from_camera_to_world` (what Slicer's TransformToParent becomes)."""
    m = torch.as_tensor(itk_matrix, dtype=torch.float64).reshape(4, 4)
    return torch.linalg.inv(_F @ m @ _F)


def _check_suffix(path: Path) -> None:
    if not path.name.lower().endswith(_SUFFIXES):
        raise TransformFileError(f"{path}: unsupported transform file type; use one of {', '.join(_SUFFIXES)}")


def write_pose_transform(path: str | Path, camera_to_world) -> Path:
    """Write the pose for Slicer (``.tfm``/``.txt`` text or ``.h5`` HDF5), atomically."""
    path = Path(path)
    _check_suffix(path)
    m = itk_from_camera_to_world(camera_to_world)
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(m[:3, :3].reshape(-1).tolist())
    affine.SetTranslation(m[:3, 3].tolist())  # centre (0, 0, 0): translation = offset

    def write(tmp: Path) -> None:
        sitk.WriteTransform(affine, str(tmp))

    try:
        return atomic_write(path, write)
    except RuntimeError as exc:
        raise TransformFileError(f"{path}: could not write the transform ({str(exc).strip().splitlines()[-1]})") from None


def _affine_of(transform: sitk.Transform, source: str) -> torch.Tensor:
    """The 4×4 matrix of a linear ITK transform, found by mapping points (works for any class)."""
    basis = torch.cat([torch.zeros(1, 3), torch.eye(3) * 100.0]).double()
    mapped = torch.tensor([transform.TransformPoint(p.tolist()) for p in basis], dtype=torch.float64)
    m = torch.eye(4, dtype=torch.float64)
    m[:3, 3] = mapped[0]
    m[:3, :3] = (mapped[1:] - mapped[0]).T / 100.0
    probe = torch.tensor([[37.0, -81.0, 12.5], [-250.0, 140.0, 610.0]], dtype=torch.float64)
    expected = probe @ m[:3, :3].T + m[:3, 3]
    actual = torch.tensor([transform.TransformPoint(p.tolist()) for p in probe], dtype=torch.float64)
    if not torch.allclose(actual, expected, rtol=1e-5, atol=1e-6 * (1 + float(expected.abs().max()))):
        raise TransformFileError(f"{source}: the transform is not linear; a C-arm pose is a rigid transform")
    return m


def read_pose_transform(path: str | Path) -> torch.Tensor:
    """``camera_to_world`` (4×4 float64, RAS mm) from an ITK transform file, as Slicer would load it."""
    path = Path(path)
    if not path.is_file():
        raise TransformFileError(f"{path}: file not found")
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        raise TransformFileError(f"{path}: not a readable ITK transform file ({str(exc).strip().splitlines()[-1]})") from None
    pose = camera_to_world_from_itk(_affine_of(transform, str(path)))
    err = float(rigidity_error(pose))
    if err > RIGID_TOLERANCE or float(torch.linalg.det(pose[:3, :3])) < 0:
        raise TransformFileError(f"{path}: the transform is not a rigid pose (|R Rᵀ − I| = {err:.2e} or a reflection)")
    return pose
