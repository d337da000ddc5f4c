"""numpy ↔ VTK: 4×4 matrices and image data, the conversions every other XVRCoreLib module uses.

``vtk`` is imported inside the functions (see the package docstring).
"""

from __future__ import annotations

import numpy as np

__all__ = ["array_from_image_data", "array_from_vtk_matrix", "image_data", "rgba_image_data", "vtk_matrix"]


def vtk_matrix(array) -> object:
    """A ``vtkMatrix4x4`` holding the 4×4 ``array`` (a numpy array or a CPU tensor)."""
    import vtk

    a = np.asarray(array, dtype=np.float64).reshape(4, 4)
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r, c]))
    return m


def array_from_vtk_matrix(matrix) -> np.ndarray:
    """The ``(4, 4)`` float64 array of a ``vtkMatrix4x4``."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def image_data(array_kji: np.ndarray):
    """``vtkImageData`` of a (K, J, I) array (a deep copy; bool becomes uint8)."""
    import vtk
    from vtk.util import numpy_support

    data = np.asarray(array_kji)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    data = np.ascontiguousarray(data)
    k, j, i = data.shape
    image = vtk.vtkImageData()
    image.SetDimensions(i, j, k)
    scalars = numpy_support.numpy_to_vtk(data.ravel(), deep=True)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    return image


def rgba_image_data(rgba: np.ndarray):
    """Single-slice ``vtkImageData`` of an ``(H, W, 4)`` uint8 picture (row 0 at j = 0)."""
    import vtk
    from vtk.util import numpy_support

    h, w, _ = rgba.shape
    image = vtk.vtkImageData()
    image.SetDimensions(w, h, 1)
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(rgba, dtype=np.uint8).reshape(-1, 4), deep=True)
    image.GetPointData().SetScalars(scalars)
    return image


def array_from_image_data(image) -> np.ndarray:
    """The (K, J, I) voxels of a scalar ``vtkImageData`` (a copy)."""
    from vtk.util import numpy_support

    i, j, k = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    if scalars is None:
        raise ValueError("the volume node holds no voxels")
    if scalars.GetNumberOfComponents() != 1:
        raise ValueError(f"expected a scalar volume, got {scalars.GetNumberOfComponents()} components per voxel")
    return numpy_support.vtk_to_numpy(scalars).reshape(k, j, i).copy()
