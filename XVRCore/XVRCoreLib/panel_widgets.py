"""What both XVR panels do with their widgets the same way: the parameter-node binding (path fields that start
empty and remember folders), CT/MRA selectors that offer only source volumes, and the default CT pick.

The panels' widgets are Slicer's (``qMRMLNodeComboBox``, ``ctkPathLineEdit``) and are passed in; nothing here
imports ``qt`` at import time, so the role helpers also serve the logic and the headless tests.

Roles: every volume node the panels make carries ``XVR.Role`` (``xray``, ``drr``, ``outlines``,
``checkerboard``; pose transforms ``pose``) from the moment it enters the scene
(:func:`XVRCoreLib.scene.add_node`), so selectors filter on it.
"""

from __future__ import annotations

import pathlib
import types

__all__ = [
    "ROLE_ATTRIBUTE",
    "SourceVolumeFilter",
    "bind_parameter_node",
    "default_source_volume",
    "is_source_volume",
    "is_unset_path",
    "path_field_connector",
    "remember_paths",
    "unbind_parameter_node",
]

ROLE_ATTRIBUTE = "XVR.Role"
PARAMETER_NAME_PROPERTY = "SlicerParameterName"


def is_source_volume(node) -> bool:
    """A CT or MRA a user loaded: a scalar volume that is no label map and nothing the panels made."""
    return (node is not None and node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode")
            and node.GetAttribute(ROLE_ATTRIBUTE) is None)


def default_source_volume(scene):
    """The first source volume of the scene (the panels' default CT/MRA pick), or None."""
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
        if is_source_volume(node):
            return node
    return None


def _non_source_volume_ids(scene) -> list:
    ids = []
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
        if not is_source_volume(node):
            ids.append(node.GetID())
    return ids


class SourceVolumeFilter:
    """Keeps a CT/MRA ``qMRMLNodeComboBox`` to source volumes: X-rays, DRRs, outlines, checkerboards and label
    maps are hidden (the proxy model's hidden node IDs), updated whenever nodes enter or leave the scene.

    The scene is observed at a higher priority than the selector's own scene model, so a new X-ray is
    hidden before the selector could list (or auto-select) it.
    """

    PRIORITY = 10.0

    def __init__(self, selector, scene) -> None:
        self.selector, self.scene = selector, scene
        self._tags = [scene.AddObserver(event, self._onSceneChanged, self.PRIORITY)
                      for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent, scene.EndImportEvent,
                                    scene.EndCloseEvent, scene.EndBatchProcessEvent)]
        self.update()

    def _onSceneChanged(self, caller, event) -> None:
        self.update()

    def update(self) -> None:
        self.selector.sortFilterProxyModel().setHiddenNodeIDs(_non_source_volume_ids(self.scene))

    def cleanup(self) -> None:
        for tag in self._tags:
            self.scene.RemoveObserver(tag)
        self._tags = []


# ---- paths ----------------------------------------------------------------------------------------------------


def is_unset_path(value) -> bool:
    """Whether a path parameter is unset: Slicer stores an unset ``pathlib.Path()`` as ``"."``."""
    return value is None or str(value) in ("", ".")


_CONNECTOR_CLASS = None


def path_field_connector(widget, kind=pathlib.Path):
    """A parameter-node GUI connector for a ``ctkPathLineEdit`` that shows an unset path as an empty field.

    Slicer's own connector writes ``str(pathlib.Path())``, a ``"."`` the user never chose.
    """
    global _CONNECTOR_CLASS
    if _CONNECTOR_CLASS is None:
        from slicer.parameterNodeWrapper import GuiConnector

        class PathFieldConnector(GuiConnector):
            @staticmethod
            def canRepresent(widget, datatype) -> bool:
                return type(widget).__name__ == "ctkPathLineEdit" and datatype in (pathlib.Path, pathlib.PurePath)

            @staticmethod
            def create(widget, datatype):
                return PathFieldConnector(widget, datatype) if PathFieldConnector.canRepresent(widget, datatype) else None

            def __init__(self, widget, datatype) -> None:
                super().__init__()
                self._widget, self._type = widget, datatype
                self._slot = lambda *args: self.changed()  # currentPathChanged(QString): the path is read back

            def _connect(self):
                self._widget.currentPathChanged.connect(self._slot)

            def _disconnect(self):
                self._widget.currentPathChanged.disconnect(self._slot)

            def widget(self):
                return self._widget

            def read(self):
                return self._type(self._widget.currentPath)

            def write(self, value) -> None:
                self._widget.currentPath = "" if is_unset_path(value) else str(value)

        _CONNECTOR_CLASS = PathFieldConnector
    return _CONNECTOR_CLASS(widget, kind)


def _bound_widgets(ui) -> dict:
    out = {}
    for widget in vars(ui).values():
        name = widget.property(PARAMETER_NAME_PROPERTY) if hasattr(widget, "property") else None
        if name:
            out[name] = widget
    return out


def bind_parameter_node(parameter_node, ui) -> list:
    """``connectGui`` for a panel's widgets (``ui``), with its path fields bound by :func:`path_field_connector`.

    An unset path takes the folder the path field remembers (its ``settingKey`` history, most recent first);
    a path field without history stays empty. Returns the tags for :func:`unbind_parameter_node`.
    """
    bound = _bound_widgets(ui)
    paths = {name: w for name, w in bound.items() if type(w).__name__ == "ctkPathLineEdit"}
    others = types.SimpleNamespace(**{name: w for name, w in bound.items() if name not in paths})
    for name, widget in paths.items():
        remembered = widget.currentPath
        if is_unset_path(getattr(parameter_node, name)) and not is_unset_path(remembered):
            setattr(parameter_node, name, pathlib.Path(remembered))
    tags = [parameter_node.connectGui(others)]
    tags.append(parameter_node.connectParametersToGui({name: path_field_connector(w) for name, w in paths.items()}))
    return tags


def unbind_parameter_node(parameter_node, tags) -> None:
    for tag in tags or []:
        parameter_node.disconnectGui(tag)


def remember_paths(*path_fields) -> None:
    """Put the fields' current paths first in their remembered history (call when a job uses them)."""
    for field in path_fields:
        if not is_unset_path(field.currentPath):
            field.addCurrentPathToHistory()
