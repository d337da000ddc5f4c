"""Volume nodes ↔ :class:`xvrcore.volume.Volume`, their world matrices, segmentations ↔ label maps, and
the label-name tables the core reads.

A volume is used where Slicer shows it: its IJK-to-RAS is preceded by its (linear) parent transforms
(:func:`ijk_to_world_matrix`); a non-linear parent is refused rather than silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from xvrcore.volume import Volume, volume_from_array

from .scene import add_node, read_node, remove_node
from .vtkdata import array_from_image_data, array_from_vtk_matrix, image_data, vtk_matrix

__all__ = [
    "ijk_to_ras_matrix",
    "ijk_to_world_matrix",
    "load_volume_node",
    "segmentation_from_labelmap",
    "segmentation_labelmap",
    "to_world_matrix",
    "volume_from_node",
    "volume_node_from_volume",
    "write_label_names",
]


def to_world_matrix(node) -> np.ndarray:
    """The 4×4 from the node's coordinates to the world (its parent transforms; identity if none)."""
    import vtk

    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise ValueError(f"{node.GetName()}: its parent transform is not linear; harden or remove it first")
    m = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(m)
    return array_from_vtk_matrix(m)


def ijk_to_ras_matrix(node) -> np.ndarray:
    """The node's own IJK-to-RAS (without its parent transforms)."""
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return array_from_vtk_matrix(m)


def ijk_to_world_matrix(node) -> np.ndarray:
    """IJK to world: the node's IJK-to-RAS preceded by its linear parent transforms."""
    return to_world_matrix(node) @ ijk_to_ras_matrix(node)


def volume_node_from_volume(scene, volume: Volume, name: str | None = None, node=None,
                            class_name: str = "vtkMRMLScalarVolumeNode"):
    """A volume node holding ``volume``'s voxels with IJK-to-RAS = ``volume.affine`` (exactly)."""
    node = node or add_node(scene, class_name, name or Path(volume.source).name)
    node.SetAndObserveImageData(image_data(volume.data))
    node.SetIJKToRASMatrix(vtk_matrix(volume.affine))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def volume_from_node(node, kind: str = "ct") -> Volume:
    """An :class:`~xvrcore.volume.Volume` of a volume node, in world coordinates.

    The affine is the node's IJK-to-RAS preceded by its (linear) parent transforms, so a CT the user
    moved in Slicer is used where it is shown.
    """
    if node is None or node.GetImageData() is None:
        raise ValueError("the volume node is empty")
    return volume_from_array(array_from_image_data(node.GetImageData()), ijk_to_world_matrix(node), kind=kind,
                             source=node.GetName() or "volume node")


def load_volume_node(scene, path: str | Path, name: str | None = None, labelmap: bool = False):
    """Read a volume file (NRRD, NIfTI, MHA, …) with Slicer's own reader into a new node."""
    import slicer

    path = Path(path)
    node = add_node(scene, "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode",
                    name or path.name.split(".")[0])
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetSingleFile(True)
    if labelmap:
        storage.SetCenterImage(False)
    read_node(scene, node, storage, path, "volume")
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def _segment_ids(segmentation_node, segment_ids: Sequence[str] | None) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    ids = list(segment_ids) if segment_ids is not None else [
        segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())
    ]
    if not ids:
        raise ValueError(f"{segmentation_node.GetName()}: the segmentation has no segments")
    for segment_id in ids:
        if segmentation.GetSegment(segment_id) is None:
            raise ValueError(f"{segmentation_node.GetName()}: no segment {segment_id!r}")
    return ids


def _exported_labels(segmentation_node, reference_node, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(voxels, world affine) of the segments exported on the reference grid through a temporary node."""
    import slicer
    import vtk

    scene = segmentation_node.GetScene()
    array = vtk.vtkStringArray()
    for segment_id in ids:
        array.InsertNextValue(segment_id)
    label_node = add_node(scene, "vtkMRMLLabelMapVolumeNode", "XVR temporary labels")
    try:
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, array, label_node, reference_node)
        if not ok:
            raise ValueError(f"{segmentation_node.GetName()}: the segments could not be exported as a label map")
        # The exported map is on the reference grid; the reference's parent transforms apply to it too.
        affine = to_world_matrix(reference_node) @ ijk_to_ras_matrix(label_node)
        return array_from_image_data(label_node.GetImageData()), affine
    finally:
        remove_node(scene, label_node)


def segmentation_labelmap(segmentation_node, reference_node, segment_ids: Sequence[str] | None = None):
    """The segments as a label map on ``reference_node``'s grid (world coordinates).

    Returns ``(labels, names, colors)``: an :class:`~xvrcore.volume.Volume` of kind ``"labels"``
    (label ``n`` = the ``n``-th segment, 1-based, in ``segment_ids`` order or the segmentation's),
    ``{label: segment name}`` and ``{label: (r, g, b)}`` (0–255).
    """
    ids = _segment_ids(segmentation_node, segment_ids)
    data, affine = _exported_labels(segmentation_node, reference_node, ids)
    segmentation = segmentation_node.GetSegmentation()
    names, colors = {}, {}
    for label, segment_id in enumerate(ids, start=1):
        segment = segmentation.GetSegment(segment_id)
        names[label] = segment.GetName()
        colors[label] = tuple(int(round(255 * c)) for c in segment.GetColor())
    labels = volume_from_array(data, affine, kind="labels", source=segmentation_node.GetName() or "segmentation")
    return labels, names, colors


def segmentation_from_labelmap(scene, labels: Volume, names: Mapping[int, str] | None = None,
                               colors: Mapping[int, tuple[int, int, int]] | None = None, name: str = "Segmentation"):
    """A segmentation node with one segment per label of ``labels`` (named and coloured if given)."""
    import slicer

    label_node = volume_node_from_volume(scene, labels, name=f"{name} labels", class_name="vtkMRMLLabelMapVolumeNode")
    segmentation_node = add_node(scene, "vtkMRMLSegmentationNode", name)
    segmentation_node.CreateDefaultDisplayNodes()
    try:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, segmentation_node):
            raise ValueError(f"{labels.source}: the label map could not be imported as segments")
    finally:
        remove_node(scene, label_node)
    segmentation = segmentation_node.GetSegmentation()
    values = sorted(int(v) for v in np.unique(labels.data) if v != 0)
    for index, value in enumerate(values):
        if index >= segmentation.GetNumberOfSegments():
            break
        segment = segmentation.GetNthSegment(index)
        if names and value in names:
            segment.SetName(str(names[value]))
        if colors and value in colors:
            segment.SetColor(*(c / 255.0 for c in colors[value]))
    return segmentation_node


def write_label_names(path: str | Path, names: Mapping[int, str], colors: Mapping[int, tuple[int, int, int]]) -> Path:
    """A Slicer colour table (``id name r g b a``) that :func:`xvrcore.io.label_names.read_label_names` reads."""
    lines = ["# label names and colours (Slicer colour table)"]
    for label in sorted(names):
        r, g, b = colors.get(label, (255, 255, 0))
        lines.append(f"{label} {'_'.join(str(names[label]).split()) or f'label_{label}'} {r} {g} {b} 255")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
