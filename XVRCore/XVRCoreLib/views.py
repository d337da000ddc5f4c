"""Slice views and their layers: a view turned to the X-ray's plane, the X-ray / DRR / outline layers,
the outline label images and their colour tables.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .scene import add_node
from .volumes import ijk_to_world_matrix
from .vtkdata import vtk_matrix

__all__ = [
    "align_slice_to_xray",
    "color_table_node",
    "fusion_color_table_node",
    "outline_labels",
    "set_foreground_opacity",
    "show_in_slice_view",
    "slice_composite_node",
]


def outline_labels(masks: Mapping[int, np.ndarray], shape: tuple[int, int] | None = None) -> np.ndarray:
    """An ``int16`` image whose outline pixels of each structure's silhouette carry its label (0 elsewhere).

    Where outlines cross, the later label wins.
    """
    from xvrcore.io.overlay import outline

    if not masks and shape is None:
        raise ValueError("no masks and no shape")
    shape = shape or next(iter(masks.values())).shape
    out = np.zeros(shape, dtype=np.int16)
    for label, mask in masks.items():
        out[outline(mask)] = int(label)
    return out


def color_table_node(scene, names: Mapping[int, str], colors: Mapping[int, tuple[int, int, int]],
                     name: str = "XVR structure colours", node=None):
    """A colour table with one entry per label (label 0 transparent)."""
    node = node or add_node(scene, "vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    top = max([0, *names, *colors]) + 1
    node.SetNumberOfColors(top)
    node.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for label in range(1, top):
        r, g, b = colors.get(label, (255, 255, 0))
        node.SetColor(label, str(names.get(label, f"label {label}")), r / 255.0, g / 255.0, b / 255.0, 1.0)
    node.SetAttribute("Category", "SlicerXVR")
    return node


def align_slice_to_xray(slice_node, xray_node, view_size: tuple[int, int] | None = None, margin: float = 1.05) -> None:
    """Turn a slice view to the X-ray's plane, first row at the top, columns left to right, and fit it.

    Slicer's ``RotateToVolumePlane`` puts the slice plane on the image; the in-plane axes it picks
    depend on the view's previous orientation, so they are then set explicitly: screen x = image
    columns, screen y = −rows, slice normal = away from the viewer (the convention of Slicer's own
    axial view). The field of view fits the whole image with ``margin``.
    """
    slice_node.RotateToVolumePlane(xray_node)
    m = ijk_to_world_matrix(xray_node)
    dims = xray_node.GetImageData().GetDimensions()
    spacing_i, spacing_j = np.linalg.norm(m[:3, 0]), np.linalg.norm(m[:3, 1])
    di, dj = m[:3, 0] / spacing_i, m[:3, 1] / spacing_j
    slice_to_ras = np.eye(4)
    slice_to_ras[:3, 0], slice_to_ras[:3, 1], slice_to_ras[:3, 2] = di, -dj, np.cross(di, dj)
    slice_to_ras[:3, 3] = (m @ np.array([(dims[0] - 1) / 2, (dims[1] - 1) / 2, 0.0, 1.0]))[:3]
    slice_node.GetSliceToRAS().DeepCopy(vtk_matrix(slice_to_ras))
    width_mm, height_mm = dims[0] * spacing_i * margin, dims[1] * spacing_j * margin
    view = view_size or slice_node.GetDimensions()[:2]
    aspect = view[1] / max(view[0], 1)
    if height_mm / width_mm > aspect:
        fov_x, fov_y = height_mm / aspect, height_mm
    else:
        fov_x, fov_y = width_mm, width_mm * aspect
    slice_node.SetFieldOfView(fov_x, fov_y, slice_node.GetFieldOfView()[2])
    slice_node.UpdateMatrices()


def slice_composite_node(scene, slice_node):
    """The composite node (the view's background/foreground/label layers) of ``slice_node``'s view, or None."""
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        candidate = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        if candidate.GetLayoutName() == slice_node.GetLayoutName():
            return candidate
    return None


def show_in_slice_view(scene, slice_node, xray_node, drr_node=None, outline_node=None, opacity: float = 0.5,
                       view_size: tuple[int, int] | None = None) -> None:
    """The X-ray as background, the DRR as foreground (``opacity``), the outlines as label layer."""
    composite = slice_composite_node(scene, slice_node)
    if composite is None:
        raise ValueError(f"no slice composite node for the {slice_node.GetLayoutName()} view")
    composite.SetBackgroundVolumeID(xray_node.GetID())
    composite.SetForegroundVolumeID(drr_node.GetID() if drr_node is not None else None)
    composite.SetForegroundOpacity(float(opacity))
    composite.SetLabelVolumeID(outline_node.GetID() if outline_node is not None else None)
    composite.SetLabelOpacity(1.0)
    align_slice_to_xray(slice_node, xray_node, view_size)


def set_foreground_opacity(scene, slice_node, opacity: float) -> None:
    """The opacity of the view's foreground layer (the DRR over the X-ray); nothing if the view has none."""
    composite = slice_composite_node(scene, slice_node)
    if composite is not None:
        composite.SetForegroundOpacity(float(opacity))


def fusion_color_table_node(scene, rgb: tuple[float, float, float], name: str, entries: int = 256):
    """A colour table for colour fusion (one per scene, found by ``name``): one colour, from a third of its
    brightness up to full, so that the foreground's values read as shades of one colour over a grey background."""
    node = scene.GetFirstNodeByName(name) or add_node(scene, "vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    node.SetNumberOfColors(entries)
    for i in range(entries):
        shade = 1.0 / 3.0 + (2.0 / 3.0) * i / (entries - 1)
        node.SetColor(i, f"{i}", *(float(c) * shade for c in rgb), 1.0)
    node.SetAttribute("Category", "SlicerXVR")
    return node
