"""The vessel segmentation a panel passes to ``--vessels`` (the core's MRA vessel model), written to a job folder."""

from __future__ import annotations

from pathlib import Path

__all__ = ["MODALITY_ARGUMENT", "write_vessels"]

#: The panels' modality choice → the core's ``--modality`` value; automatic leaves it to the core (no option).
MODALITY_ARGUMENT = {"auto": None, "ct": "ct", "mra": "mra"}


def write_vessels(vessel_node, volume_node, path: str | Path) -> Path | None:
    """Write a label map or segmentation node (non-zero = vessel) as a label map at ``path``; None without a node.

    A segmentation is exported on the volume's grid (as the panels' other label maps); a label-map node is
    written as it is (the core checks that it lies on the volume's grid).
    """
    from .volumes import segmentation_labelmap, volume_from_node

    if vessel_node is None:
        return None
    if vessel_node.IsA("vtkMRMLSegmentationNode"):
        labels = segmentation_labelmap(vessel_node, volume_node)[0]
    else:
        labels = volume_from_node(vessel_node, kind="labels")
    return labels.save(Path(path), compress=False)
