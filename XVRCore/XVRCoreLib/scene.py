"""The scene: creating and reading nodes, ``XVR.*`` attributes and reference roles, ``.mrb`` bundles and
module parameters.

Node attributes ``XVR.*`` keep what the panels need to re-derive the geometry after a scene is saved
and reloaded (intrinsics, source–detector distance, DICOM file, frame); node references
(:data:`REFERENCE_ROLES`) tie an X-ray to its pose transform, DRR, outlines, frustum and plane model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "ATTRIBUTE_PREFIX",
    "REFERENCE_ROLES",
    "add_node",
    "attribute",
    "load_scene_mrb",
    "module_parameter",
    "read_node",
    "remove_node",
    "save_scene_mrb",
    "set_attributes",
]

ATTRIBUTE_PREFIX = "XVR."
#: Node reference roles from an X-ray node to what belongs to it.
REFERENCE_ROLES = {
    "pose": "XVRPose",
    "drr": "XVRDrr",
    "outlines": "XVROutlines",
    "frustum": "XVRFrustum",
    "plane": "XVRPlane",
    "checkerboard": "XVRCheckerboard",
}


def add_node(scene, class_name: str, name: str | None, attributes: Mapping[str, object] | None = None):
    """A new node of ``class_name`` in ``scene`` (an error that names the class if the scene cannot make one).

    ``attributes`` (``XVR.<key>``, as :func:`set_attributes` writes them) are set before the node enters the
    scene, so that node selectors filtering on them (``XVR.Role``) see the node as what it is when it appears.
    """
    node = scene.CreateNodeByClass(class_name)
    if node is None:
        raise RuntimeError(f"the scene cannot create a {class_name} (is its module logic registered?)")
    node.UnRegister(None)  # CreateNodeByClass hands over a reference; the scene keeps its own
    if name:
        node.SetName(name)
    set_attributes(node, attributes or {})
    return scene.AddNode(node)


def remove_node(scene, node) -> None:
    """Remove a node and its display node (a temporary node leaves nothing behind)."""
    display = node.GetDisplayNode()
    if display is not None:
        scene.RemoveNode(display)
    scene.RemoveNode(node)


def read_node(scene, node, storage, path: Path, what: str) -> None:
    """Read ``path`` into ``node`` with ``storage`` (added to the scene); on failure remove both and raise."""
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise OSError(f"{path}: Slicer could not read this {what}")
    node.SetAndObserveStorageNodeID(storage.GetID())


def set_attributes(node, values: Mapping[str, object]) -> None:
    """Set ``XVR.<key>`` attributes (strings as they are, other values as JSON; ``None`` removes one)."""
    for key, value in values.items():
        if value is None:
            node.RemoveAttribute(ATTRIBUTE_PREFIX + key)
        else:
            node.SetAttribute(ATTRIBUTE_PREFIX + key, value if isinstance(value, str) else json.dumps(value))


def attribute(node, key: str, default=None):
    """The ``XVR.<key>`` attribute, decoded from JSON when it is JSON (``default`` if absent)."""
    value = node.GetAttribute(ATTRIBUTE_PREFIX + key)
    if value is None:
        return default
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def save_scene_mrb(scene, path: str | Path) -> Path:
    """Save the whole scene as a Medical Reality Bundle (``.mrb``), as Slicer's "Save" does."""
    path = Path(path)
    if not scene.WriteToMRB(str(path)):
        raise OSError(f"{path}: could not write the scene bundle")
    return path


def load_scene_mrb(scene, path: str | Path) -> None:
    """Replace ``scene``'s content with a ``.mrb`` (the scene needs Slicer's IO logic, as in Slicer)."""
    if not scene.ReadFromMRB(str(path), True):
        raise OSError(f"{path}: could not read the scene bundle")


def module_parameter(scene, module: str, name: str) -> str | None:
    """A parameter of a module's parameter node (``vtkMRMLScriptedModuleNode`` tagged ``ModuleName``)."""
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode")
        if node.GetAttribute("ModuleName") == module:
            value = node.GetParameter(name)
            if value:
                return value
    return None
