"""A stand-in for the Slicer application's GUI layer, so that the panels' real widget classes run on their real
``.ui`` files (PySide6, offscreen) over real MRML scenes (``slicer-core``). Our own emulation, written from
reading Slicer's and CTK's sources (``qMRMLNodeComboBox.cxx``, ``qMRMLSortFilterProxyModel.cxx``,
``ctkPathLineEdit.cpp``, ``slicer/util.py``, ``ScriptedLoadableModule.py``); no code of theirs is used.

What behaves as in Slicer, because the panels depend on it:

* **PythonQt**: Qt properties read and written as attributes (``label.text = ...``, ``box.enabled``),
  ``obj.connect("signal(args)", slot)`` with the slot called with at most as many arguments as the
  signature has and the slot accepts; slots run in connection order (Qt's direct connections); an
  exception in a slot is printed and recorded (``errors``), never raised into the emitter;
* **qMRMLNodeComboBox**: lists the scene's nodes of ``nodeTypes`` (subclasses only with
  ``showChildNodeTypes``), minus hidden-from-editors nodes, ``hideChildNodeTypes``, the proxy model's
  hidden node IDs, and nodes failing an ``addAttribute`` filter (one attribute per node type; re-checked
  when a node changes); an optional "None" item (``noneEnabled``) and a "Create new" item
  (``addEnabled``: the new node gets ``baseName`` and the filter attributes, becomes current, and
  ``nodeAddedByUser`` is emitted). ``currentNodeChanged`` is emitted on **every** change of the current
  node, programmatic ones included; a removed current node is replaced by None or a neighbour; the first
  node added to an empty list without extra items becomes current;
* **ctkPathLineEdit**: ``currentPath``/``currentPathChanged``; with a ``settingKey`` the history is read
  from QSettings and, if the path is empty, the most recent entry becomes current;
  ``addCurrentPathToHistory`` puts the path first in the stored history;
* **slicer.util.loadUI / childWidgetVariables** are Slicer's own (from ``slicer-core``); they get a ``qt``
  module whose ``QUiLoader`` builds the widgets above and makes the ``.ui``'s ``<connections>``;
* **the application** (``slicer.app``): a layout manager on Slicer's own layout logic, with a Red slice view
  and the slice views of the layouts shown (real slice logics), the
  module panel's ``isEntered`` flag, enter/exit, error and information dialogs recorded instead of shown.
"""

from __future__ import annotations

import inspect
import re
import sys
import traceback
import types
import xml.etree.ElementTree as ET
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtCore import Property, Signal
from PySide6.QtUiTools import QUiLoader

__all__ = ["SlicerApplication", "install_qt_modules", "slot_errors"]

slot_errors: list[str] = []  # tracebacks of exceptions raised in slots (PythonQt prints them and goes on)


# ---- PythonQt semantics ------------------------------------------------------------------------------------


_PROPERTY_NAMES: dict[type, frozenset] = {}


def _qt_property_names(obj) -> frozenset:
    cls = type(obj)
    names = _PROPERTY_NAMES.get(cls)
    if names is None:
        meta = QtCore.QObject.metaObject(obj)
        names = frozenset(meta.property(i).name() for i in range(meta.propertyCount()))
        _PROPERTY_NAMES[cls] = names
    return names


def _accepted_arguments(slot) -> int | None:
    """How many positional arguments ``slot`` takes (None: any number), as PythonQt counts them."""
    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return None
    return sum(1 for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _receiver(slot, signature_arguments: int):
    accepted = _accepted_arguments(slot)

    def receive(*args):
        args = args[:signature_arguments]
        if accepted is not None:
            args = args[:accepted]
        try:
            slot(*args)
        except Exception:  # noqa: BLE001 - PythonQt prints the traceback in the Python console and goes on
            text = traceback.format_exc()
            slot_errors.append(text)
            print(text, file=sys.stderr)

    return receive


def _parse_signature(signature: str) -> tuple[str, int]:
    match = re.fullmatch(r"\s*(\w+)\s*\((.*)\)\s*", signature)
    if match is None:
        raise ValueError(f"not a Qt signature: {signature!r}")
    arguments = [a for a in match.group(2).split(",") if a.strip()]
    return match.group(1), len(arguments)


_PYTHON_ATTRIBUTES: dict[tuple[type, str], object] = {}


def _python_attribute(cls: type, name: str):
    """``name`` as defined by a Python class (not a PySide6 one) in ``cls``'s MRO, or None."""
    key = (cls, name)
    if key not in _PYTHON_ATTRIBUTES:
        found = None
        for klass in cls.__mro__:
            if klass.__module__.startswith(("PySide6", "Shiboken")) or klass is object:
                continue
            if name in klass.__dict__:
                found = klass.__dict__[name]
                break
        _PYTHON_ATTRIBUTES[key] = found
    return _PYTHON_ATTRIBUTES[key]


_READING: set[tuple[int, str]] = set()  # (object id, property) being read: see PythonQtObject.__getattribute__


class PythonQtObject:
    """Mixin giving a PySide6 object PythonQt's attribute access to Qt properties and string connections."""

    def __getattribute__(self, name):
        if name[:1] != "_":
            key = (id(self), name)
            # A property whose getter is also a virtual method (QProgressBar's text): Shiboken looks the
            # method up on the object for a Python override while the property is read; that lookup gets
            # the method itself, not the property again.
            if name in _qt_property_names(self) and key not in _READING:
                _READING.add(key)
                try:
                    return QtCore.QObject.property(self, name)
                finally:
                    _READING.discard(key)
            if name == "name":
                return QtCore.QObject.objectName(self)
            defined = _python_attribute(type(self), name)
            if defined is not None:  # Shiboken's lookup would prefer QObject.connect over ours
                return defined.__get__(self, type(self)) if hasattr(defined, "__get__") else defined
        return super().__getattribute__(name)

    def __setattr__(self, name, value):
        if name[:1] != "_" and name in _qt_property_names(self):
            QtCore.QObject.setProperty(self, name, value)
            return
        super().__setattr__(name, value)

    def connect(self, signature, slot):
        name, count = _parse_signature(signature)
        receiver = _receiver(slot, count)
        receivers = self.__dict__.setdefault("_pythonqt_receivers", [])
        receivers.append((name, slot, receiver))
        getattr(self, name).connect(receiver)
        return True

    def disconnect(self, signature, slot):
        name, _ = _parse_signature(signature)
        receivers = self.__dict__.get("_pythonqt_receivers", [])
        for entry in [e for e in receivers if e[0] == name and e[1] == slot]:
            getattr(self, name).disconnect(entry[2])
            receivers.remove(entry)
        return True


_PYTHONQT_CLASSES: dict[type, type] = {}


def pythonqt_class(base: type) -> type:
    """``base`` (a QObject class) with PythonQt semantics, under the same class name."""
    cls = _PYTHONQT_CLASSES.get(base)
    if cls is None:
        cls = type(base.__name__, (PythonQtObject, base), {})
        _PYTHONQT_CLASSES[base] = cls
    return cls


# ---- Slicer's and CTK's widgets -----------------------------------------------------------------------------


def _flag(name, default=False):
    attribute = "_" + name

    def get(self):
        return self.__dict__.get(attribute, default)

    def set(self, value):
        self.__dict__[attribute] = bool(value)
        refresh = getattr(self, "_refresh", None)
        if refresh is not None:
            refresh()

    return Property(bool, get, set)


def _text(name, default=""):
    attribute = "_" + name
    return Property(str, lambda self: self.__dict__.get(attribute, default),
                    lambda self, value: self.__dict__.__setitem__(attribute, str(value)))


class qMRMLWidget(PythonQtObject, QtWidgets.QWidget):
    mrmlSceneChanged = Signal(object)

    def setMRMLScene(self, scene):
        self.__dict__["_scene"] = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self.__dict__.get("_scene")


class _SortFilterProxy:
    """The part of qMRMLSortFilterProxyModel the panels use: hidden node IDs."""

    def __init__(self, combo):
        self._combo, self._hidden = combo, []

    def setHiddenNodeIDs(self, ids):
        self._hidden = [str(i) for i in ids]
        self._combo._refresh()

    def hiddenNodeIDs(self):
        return list(self._hidden)


class qMRMLNodeComboBox(PythonQtObject, QtWidgets.QComboBox):
    """See the module docstring for what it does as Slicer's does."""

    currentNodeChanged = Signal(object)
    currentNodeIDChanged = Signal(str)
    nodeAdded = Signal(object)
    nodeAddedByUser = Signal(object)
    nodeActivated = Signal(object)

    def __init__(self, parent=None):
        QtWidgets.QComboBox.__init__(self, parent)
        self._types, self._hideTypes, self._attributes = [], [], {}
        self._proxy = _SortFilterProxy(self)
        self._scene, self._sceneTags, self._nodeTags = None, [], {}
        self._nodeIDs, self._currentID, self._refreshing = [], None, False

    def _get_types(self):
        return list(self._types)

    def _set_types(self, value):
        self._types = [str(v) for v in value]
        self._refresh()

    nodeTypes = Property("QStringList", _get_types, _set_types)
    hideChildNodeTypes = Property("QStringList", lambda self: list(self._hideTypes),
                                  lambda self, value: (setattr(self, "_hideTypes", list(value)), self._refresh()))
    noneEnabled = _flag("noneEnabled")
    addEnabled = _flag("addEnabled")
    removeEnabled = _flag("removeEnabled")
    editEnabled = _flag("editEnabled")
    renameEnabled = _flag("renameEnabled")
    showChildNodeTypes = _flag("showChildNodeTypes", True)
    selectNodeUponCreation = _flag("selectNodeUponCreation", True)
    noneDisplay = _text("noneDisplay", "None")
    baseName = _text("baseName")

    # -- scene ------------------------------------------------------------------------------------------------

    def setMRMLScene(self, scene):
        if scene is self._scene:
            return
        self._unobserve()
        self._scene = scene
        if scene is not None:
            for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent, scene.EndBatchProcessEvent,
                          scene.EndCloseEvent, scene.EndImportEvent):
                self._sceneTags.append(scene.AddObserver(event, lambda caller, event: self._refresh()))
        self._refresh()
        QtWidgets.QWidget.setEnabled(self, scene is not None)

    def mrmlScene(self):
        return self._scene

    def _unobserve(self):
        if self._scene is not None:
            for tag in self._sceneTags:
                self._scene.RemoveObserver(tag)
        for node, tag in self._nodeTags.values():
            node.RemoveObserver(tag)
        self._sceneTags, self._nodeTags = [], {}

    # -- filtering --------------------------------------------------------------------------------------------

    def addAttribute(self, nodeType, attributeName, attributeValue=None):
        self._attributes[str(nodeType)] = (str(attributeName), None if attributeValue is None else str(attributeValue))
        self._refresh()

    def removeAttribute(self, nodeType, attributeName):
        self._attributes.pop(str(nodeType), None)
        self._refresh()

    def sortFilterProxyModel(self):
        return self._proxy

    def _accepts(self, node) -> bool:
        if node.GetID() in self._proxy._hidden or node.GetHideFromEditors():
            return False
        for nodeType in self._types:
            if not node.IsA(nodeType):
                continue
            if not self.showChildNodeTypes and node.GetClassName() != nodeType:
                continue
            if self.showChildNodeTypes and any(node.IsA(hidden) for hidden in self._hideTypes):
                return False
            if nodeType in self._attributes:
                self._watch(node)
                name, value = self._attributes[nodeType]
                actual = node.GetAttribute(name)
                if actual is None or (value is not None and actual != value):
                    return False
            return True
        return False

    def _watch(self, node):
        """Attribute filters are re-checked when a node changes (the proxy model observes it)."""
        if node.GetID() not in self._nodeTags:
            tag = node.AddObserver("ModifiedEvent", lambda caller, event: self._refresh())
            self._nodeTags[node.GetID()] = (node, tag)

    def _candidates(self) -> list:
        scene = self._scene
        if scene is None:
            return []
        nodes = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        return [n.GetID() for n in nodes if n is not None and self._accepts(n)]

    # -- the items --------------------------------------------------------------------------------------------

    def _refresh(self):
        if self._refreshing or not hasattr(self, "_types"):
            return
        self._refreshing = True
        try:
            previous, old = self._currentID, list(self._nodeIDs)
            hadItems = bool(old) or self.noneEnabled or self._hasExtraItems()
            self._nodeIDs = self._candidates()
            current = previous if previous in self._nodeIDs else None
            if previous is not None and current is None and not self.noneEnabled and self._nodeIDs:
                position = old.index(previous) if previous in old else 0  # the neighbour that takes its row
                current = self._nodeIDs[min(position, len(self._nodeIDs) - 1)]
            if previous is None and not hadItems and self._nodeIDs and not self.noneEnabled:
                current = self._nodeIDs[0]  # QComboBox selects the first item inserted into an empty list
            self._rebuild(current)
        finally:
            self._refreshing = False
        self._setCurrent(current)

    def _hasExtraItems(self) -> bool:
        return bool(self.addEnabled and self._types)

    def _rebuild(self, current):
        blocked = self.blockSignals(True)
        try:
            QtWidgets.QComboBox.clear(self)
            if self.noneEnabled:
                QtWidgets.QComboBox.addItem(self, self.noneDisplay, "")
            for nodeID in self._nodeIDs:
                node = self._scene.GetNodeByID(nodeID)
                QtWidgets.QComboBox.addItem(self, node.GetName() or nodeID, nodeID)
            if self._hasExtraItems():
                QtWidgets.QComboBox.addItem(self, "Create new " + self._types[0].removeprefix("vtkMRML").removesuffix("Node"), "CREATE")
            QtWidgets.QComboBox.setCurrentIndex(self, self._row(current))
        finally:
            self.blockSignals(blocked)

    def _row(self, nodeID) -> int:
        if nodeID in self._nodeIDs:
            return self._nodeIDs.index(nodeID) + (1 if self.noneEnabled else 0)
        return 0 if self.noneEnabled else -1

    def _setCurrent(self, nodeID):
        blocked = self.blockSignals(True)
        QtWidgets.QComboBox.setCurrentIndex(self, self._row(nodeID))
        self.blockSignals(blocked)
        if nodeID != self._currentID:
            self._currentID = nodeID
            node = self.currentNode()
            self.currentNodeChanged.emit(node)
            self.currentNodeIDChanged.emit(nodeID or "")

    # -- the API the panels and the parameter-node wrapper use ------------------------------------------------

    def currentNode(self):
        return self._scene.GetNodeByID(self._currentID) if self._scene is not None and self._currentID else None

    def currentNodeID(self):
        return self._currentID or ""

    def setCurrentNode(self, node):
        self.setCurrentNodeID(node.GetID() if node is not None else "")

    def setCurrentNodeID(self, nodeID):
        nodeID = str(nodeID or "")
        self._setCurrent(nodeID if nodeID in self._nodeIDs else None)

    def nodeCount(self) -> int:
        return len(self._nodeIDs)

    def nodeFromIndex(self, index):
        return self._scene.GetNodeByID(self._nodeIDs[index]) if 0 <= index < len(self._nodeIDs) else None

    def nodes(self) -> list:
        """The nodes listed (test helper; Slicer offers nodeFromIndex/nodeCount)."""
        return [self._scene.GetNodeByID(i) for i in self._nodeIDs]

    def addNode(self, nodeType=None):
        nodeType = nodeType or self._types[0]
        scene = self._scene
        node = scene.AddNewNodeByClass(nodeType, scene.GenerateUniqueName(self.baseName or nodeType))
        was = node.StartModify()
        for attributeType, (name, value) in self._attributes.items():
            if node.IsA(attributeType):
                node.SetAttribute(name, value or "")
        node.EndModify(was)
        if self.selectNodeUponCreation:
            self.setCurrentNode(node)
        self.nodeAddedByUser.emit(node)
        return node

    # -- the user's actions (test helpers) --------------------------------------------------------------------

    def userSelect(self, node):
        """The user picks ``node`` in the list (it must be listed)."""
        if node is not None and node.GetID() not in self._nodeIDs:
            raise ValueError(f"{node.GetName()} is not offered by {self.objectName()}")
        if node is None and not self.noneEnabled:
            raise ValueError(f"{self.objectName()} offers no None item")
        self.setCurrentNode(node)
        self.nodeActivated.emit(node)

    def userCreateNew(self):
        """The user picks "Create new ..." in the list."""
        if not self._hasExtraItems():
            raise ValueError(f"{self.objectName()} offers no Create new item")
        return self.addNode()


class ctkCollapsibleButton(PythonQtObject, QtWidgets.QGroupBox):
    text = Property(str, lambda self: QtWidgets.QGroupBox.title(self),
                    lambda self, value: QtWidgets.QGroupBox.setTitle(self, value))
    collapsed = Property(bool, lambda self: self.__dict__.get("_collapsed", False),
                         lambda self, value: self.__dict__.__setitem__("_collapsed", bool(value)))


class ctkSliderWidget(PythonQtObject, QtWidgets.QDoubleSpinBox):
    pageStep = Property(float, lambda self: self.__dict__.get("_page", 1.0),
                        lambda self, value: self.__dict__.__setitem__("_page", float(value)))


class ctkPathLineEdit(PythonQtObject, QtWidgets.QLineEdit):
    """See the module docstring; the history is kept in QSettings under ``settingKey``."""

    currentPathChanged = Signal(str)
    MAX_HISTORY = 5

    def __init__(self, parent=None):
        QtWidgets.QLineEdit.__init__(self, parent)
        self._key, self._history, self._path = "", [], ""
        super().__getattribute__("textEdited").connect(self._typed)

    def _typed(self, text):
        self._setPath(text)

    def _setPath(self, path):
        path = str(path)
        if QtWidgets.QLineEdit.text(self) != path:
            QtWidgets.QLineEdit.setText(self, path)
        if path != self._path:
            self._path = path
            self.currentPathChanged.emit(path)

    currentPath = Property(str, lambda self: self._path, _setPath)
    filters = Property(int, lambda self: 0, lambda self, value: None)
    options = Property(int, lambda self: 0, lambda self, value: None)

    def _set_key(self, key):
        self._key = str(key)
        self.retrieveHistory()

    settingKey = Property(str, lambda self: self._key, _set_key)

    def setCurrentPath(self, path):
        self._setPath(path)

    def retrieveHistory(self):
        values = QtCore.QSettings().value(self._key) if self._key else None
        self._history = ([values] if isinstance(values, str) else list(values or []))[: self.MAX_HISTORY]
        if not self._path and self._history:
            self._setPath(self._history[0])  # the most recent entry, if no path is set

    def addCurrentPathToHistory(self):
        if not self._path or not self._key:
            return
        history = [self._path] + [p for p in (QtCore.QSettings().value(self._key) or []) if p != self._path]
        QtCore.QSettings().setValue(self._key, history)
        self._history = history[: self.MAX_HISTORY]

    def history(self) -> list:
        """The remembered paths, most recent first (test helper)."""
        return list(self._history)


STANDINS = {cls.__name__: cls for cls in (qMRMLWidget, qMRMLNodeComboBox, ctkCollapsibleButton, ctkSliderWidget,
                                          ctkPathLineEdit)}


# ---- the .ui loader and the qt / ctk modules -----------------------------------------------------------------


class SlicerUiLoader(QUiLoader):
    """Builds every widget with PythonQt semantics (Slicer's custom ones as the stand-ins above) and makes
    the ``.ui``'s ``<connections>`` between them (Qt's own loader cannot: the signatures name VTK types).
    """

    def createWidget(self, className, parent=None, name=""):
        cls = STANDINS.get(className)
        if cls is None:
            cls = pythonqt_class(getattr(QtWidgets, className))
        widget = cls(parent)
        widget.setObjectName(name)
        return widget

    def load(self, device, parent=None):
        if isinstance(device, (str, Path)):
            data = Path(device).read_bytes()
        else:
            data = bytes(device.readAll())
        root = ET.fromstring(data)
        connections = root.find("connections")
        if connections is not None:
            root.remove(connections)
        buffer = QtCore.QBuffer()
        buffer.setData(QtCore.QByteArray(ET.tostring(root)))
        buffer.open(QtCore.QIODevice.ReadOnly)
        form = QUiLoader.load(self, buffer, parent)
        if form is not None and connections is not None:
            for connection in connections.iter("connection"):
                self._connect(form, connection)
        return form

    @staticmethod
    def _connect(form, connection):
        def find(name):
            return form if QtCore.QObject.objectName(form) == name else form.findChild(QtCore.QObject, name)

        sender, receiver = find(connection.findtext("sender")), find(connection.findtext("receiver"))
        signal, _ = _parse_signature(connection.findtext("signal"))
        slot, _ = _parse_signature(connection.findtext("slot"))
        getattr(sender, signal).connect(getattr(receiver, slot))


class _QtModule(types.ModuleType):
    """``qt`` as PythonQt offers it: QtCore, QtGui, QtWidgets and QUiLoader in one namespace."""

    def __getattr__(self, name):
        if name == "QUiLoader":
            return SlicerUiLoader
        for source in (QtWidgets, QtCore, QtGui):
            value = getattr(source, name, None)
            if value is not None:
                if isinstance(value, type) and issubclass(value, QtCore.QObject):
                    value = pythonqt_class(value)
                return value
        raise AttributeError(f"module 'qt' has no attribute {name!r}")


class _CtkModule(types.ModuleType):
    def __getattr__(self, name):
        if name in STANDINS:
            return STANDINS[name]
        raise AttributeError(f"module 'ctk' has no attribute {name!r}")


def install_qt_modules() -> None:
    """Make ``import qt`` and ``import ctk`` give the PythonQt-like modules (idempotent)."""
    if not isinstance(sys.modules.get("qt"), _QtModule):
        sys.modules["qt"] = _QtModule("qt")
        sys.modules["ctk"] = _CtkModule("ctk")


# ---- the application ----------------------------------------------------------------------------------------


class _SliceWidget:
    def __init__(self, logic):
        self._logic = logic

    def mrmlSliceNode(self):
        return self._logic.GetSliceNode()

    def sliceLogic(self):
        return self._logic


class _LayoutManager:
    """qSlicerLayoutManager as the panels use it: Slicer's own vtkMRMLLayoutLogic (layout descriptions, the
    view nodes a layout needs), ``setLayout`` sets the layout node's arrangement, and a slice widget (a
    real slice logic, which makes the view's composite node) exists for every slice view a layout shown
    so far has (Slicer keeps a view's widget once made). Red exists from the start (the default layout).
    """

    def __init__(self, scene):
        import slicer

        self._scene, self._appLogic = scene, scene._xvr_keep[0]
        self._layoutLogic = slicer.vtkMRMLLayoutLogic()
        self._layoutLogic.SetMRMLScene(scene)
        self._logics = {}
        self._addSliceLogic("Red")
        self.layoutChanges: list[int] = []  # every setLayout call (test helper)

    def _addSliceLogic(self, name):
        import slicer

        if name not in self._logics:
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLScene(self._scene)
            logic.SetMRMLApplicationLogic(self._appLogic)
            logic.AddSliceNode(name)
            self._logics[name] = logic

    def layoutLogic(self):
        return self._layoutLogic

    @property
    def layout(self) -> int:
        return self._layoutLogic.GetLayoutNode().GetViewArrangement()

    def sliceWidget(self, name):
        return _SliceWidget(self._logics[name]) if name in self._logics else None

    def setLayout(self, layout):
        self.layoutChanges.append(int(layout))
        self._layoutLogic.GetLayoutNode().SetViewArrangement(int(layout))
        views = self._layoutLogic.GetViewNodes()
        for i in range(views.GetNumberOfItems()):
            view = views.GetItemAsObject(i)
            if view.IsA("vtkMRMLSliceNode"):
                self._addSliceLogic(view.GetLayoutName())


class SlicerApplication:
    """``slicer.app`` for one test: the scene, the layout, the recorded dialogs, the module panels."""

    def __init__(self, scene, temporary: Path):
        self.scene = scene
        self.temporaryPath = str(temporary)
        self.applicationName = "Slicer"
        self.dialogs: list[tuple[str, str]] = []  # (kind, text) of every dialog the panels opened
        self._layout = _LayoutManager(scene)
        self._panels = []

    # what the panels call on slicer.app
    def layoutManager(self):
        return self._layout

    def testingEnabled(self) -> bool:
        return False

    def setOverrideCursor(self, *args):
        pass

    def restoreOverrideCursor(self):
        pass

    def processEvents(self, *args):
        QtWidgets.QApplication.processEvents()

    def pauseRender(self):
        pass

    def resumeRender(self):
        pass

    def mainWindow(self):
        return None

    # dialogs (slicer.util.*Display)
    def record(self, kind):
        def display(text, *args, **kwargs):
            self.dialogs.append((kind, str(text)))
            return True

        return display

    # module panels
    def createPanel(self, module, name: str):
        """The module's widget as Slicer makes it: a qMRMLWidget parent with a layout, then setup()."""
        parent = qMRMLWidget()
        parent.setLayout(pythonqt_class(QtWidgets.QVBoxLayout)())
        parent.isEntered = False
        widget = getattr(module, f"{name}Widget")(parent)
        widget.setup()
        self._panels.append(widget)
        return widget

    @staticmethod
    def enter(widget):
        widget.parent.isEntered = True
        widget.enter()

    @staticmethod
    def exit(widget):
        widget.exit()
        widget.parent.isEntered = False

    def closeScene(self):
        """File > Close scene: Slicer's scene Clear (StartCloseEvent, nodes removed, EndCloseEvent)."""
        self.scene.Clear(0)

    def close(self):
        for widget in self._panels:
            widget.cleanup()
            for combo in widget.parent.findChildren(qMRMLNodeComboBox):
                combo.setMRMLScene(None)
        self._panels = []
