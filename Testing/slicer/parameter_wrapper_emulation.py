"""Our own emulation of Slicer's ``slicer.parameterNodeWrapper`` for the panel tests (no Slicer source used).

It keeps the behaviour the panels depend on, as read in Slicer's ``Base/Python/slicer/parameterNodeWrapper``:

* a decorated class gets one property per annotated field, stored in a real ``vtkMRMLScriptedModuleNode``
  (node references for MRML nodes, text for the rest); missing parameters get their defaults when the
  wrapper is made; a write is wrapped in StartModify/EndModify, so observers see one ModifiedEvent after
  the value is stored; ``WithinRange`` and the field's type are checked on write (``ValueError``/``TypeError``);
* ``connectGui(gui)`` binds every widget with a ``SlicerParameterName`` property (``gui``: a widget, or an
  object whose attributes are widgets, as ``slicer.util.childWidgetVariables`` returns) through a
  connector per widget kind; ``connectParametersToGui(mapping)`` takes widgets or connector instances.
  Binding writes each value to its widget, then connects the widget's change signal; widget changes are
  written to the parameter node;
* the GUI is updated from an observer of the parameter node's ModifiedEvent added by ``connectGui``
  (after any observer added before it, before any added after it). The update is **not** signal-blocked:
  the widgets emit their change signals, so any other slot connected to them runs; only the wrapper's own
  widget-to-parameter callbacks are skipped while it updates, and a ModifiedEvent raised inside the
  update does not start a second one;
* connectors fill enum combo boxes with the enum's ``label()``s, set a node combo box's ``nodeTypes``
  from the annotation and a spin box's range from ``WithinRange``; a path field writes ``str(path)`` (so an
  unset ``pathlib.Path()`` shows as ``"."``).
"""

from __future__ import annotations

import enum
import pathlib
import typing

__all__ = ["GuiConnector", "WithinRange", "install", "parameterNodeWrapper"]

PARAMETER_NAME_PROPERTY = "SlicerParameterName"


class WithinRange:
    """Validator: the value must lie in ``[minimum, maximum]``."""

    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value must be within range [{self.minimum}, {self.maximum}], is {value}")


# ---- values stored in the parameter node --------------------------------------------------------------------


def _is_node_type(kind) -> bool:
    import slicer

    return isinstance(kind, type) and issubclass(kind, slicer.vtkMRMLNode)


class _Field:
    """One parameter: its name, type, validators and default; how it is stored in the node."""

    def __init__(self, name, hint, owner):
        self.name = name
        self.kind, self.validators = _split(hint)
        if hasattr(owner, name):
            self.default = getattr(owner, name)
        elif _is_node_type(self.kind):
            self.default = None
        else:
            self.default = self.kind()  # "" / 0 / 0.0 / False / Path() (the serializers' defaults)

    def has(self, node) -> bool:
        return node.HasParameter(self.name)

    def write(self, node, value) -> None:
        self._check(value)
        if _is_node_type(self.kind):
            node.SetParameter(self.name, "")  # marks the parameter as set (None is a valid value)
            node.SetNodeReferenceID(self.name, value.GetID() if value is not None else None)
        elif self.kind is bool:
            node.SetParameter(self.name, "True" if value else "False")
        elif isinstance(self.kind, type) and issubclass(self.kind, enum.Enum):
            node.SetParameter(self.name, value.name)
        else:
            node.SetParameter(self.name, str(value))

    def read(self, node):
        if _is_node_type(self.kind):
            return node.GetNodeReference(self.name)
        text = node.GetParameter(self.name)
        if self.kind is bool:
            return text == "True"
        if isinstance(self.kind, type) and issubclass(self.kind, enum.Enum):
            return self.kind[text]
        if self.kind is int:
            return int(text)
        if self.kind is float:
            return float(text)
        return self.kind(text)  # str, pathlib.Path

    def _check(self, value) -> None:
        if _is_node_type(self.kind):
            if value is not None and not value.IsA(self.kind.__name__):
                raise TypeError(f"{self.name}: a {self.kind.__name__} is needed, not a {value.GetClassName()}")
            return
        accepted = (int, float) if self.kind is float else self.kind
        if value is None or not isinstance(value, accepted) or (self.kind in (int, float) and isinstance(value, bool)):
            raise TypeError(f"{self.name}: a {self.kind.__name__} is needed, not {value!r}")
        for validator in self.validators:
            validator.validate(value)


def _split(hint):
    if typing.get_origin(hint) is typing.Annotated:
        kind, *extras = typing.get_args(hint)
        return kind, [e for e in extras if hasattr(e, "validate")]
    return hint, []


# ---- widgets: connectors ------------------------------------------------------------------------------------


class GuiConnector:
    """Adapts one widget to one parameter: ``read``/``write`` the value, report changes through ``changed``.

    Subclasses implement ``_connect``/``_disconnect`` (the widget's change signal to ``self.changed``),
    ``widget``, ``read`` and ``write``. ``onChanged(callback)`` connects, ``onChanged(None)`` disconnects.
    """

    def __init__(self):
        self._callback = None

    def onChanged(self, callback) -> None:
        if callback is None and self._callback is not None:
            self._disconnect()
        elif callback is not None and self._callback is None:
            self._connect()
        self._callback = callback

    def changed(self, *args) -> None:
        if self._callback is not None:
            self._callback()

    def _connect(self):
        raise NotImplementedError

    def _disconnect(self):
        raise NotImplementedError

    def widget(self):
        raise NotImplementedError

    def read(self):
        raise NotImplementedError

    def write(self, value) -> None:
        raise NotImplementedError


class _SignalConnector(GuiConnector):
    """A connector whose widget reports changes through one Qt signal."""

    signal = ""

    def __init__(self, widget, field):
        super().__init__()
        self._widget, self._field = widget, field

    def _connect(self):
        getattr(self._widget, self.signal).connect(self.changed)

    def _disconnect(self):
        getattr(self._widget, self.signal).disconnect(self.changed)

    def widget(self):
        return self._widget


class _CheckBoxConnector(_SignalConnector):
    signal = "stateChanged"

    def read(self):
        return bool(self._widget.checked)

    def write(self, value):
        self._widget.checked = bool(value)


class _ButtonConnector(_CheckBoxConnector):
    signal = "toggled"


class _NumberConnector(_SignalConnector):
    signal = "valueChanged"

    def __init__(self, widget, field):
        super().__init__(widget, field)
        for validator in field.validators:
            if isinstance(validator, WithinRange):
                self._widget.minimum, self._widget.maximum = validator.minimum, validator.maximum

    def read(self):
        return self._field.kind(self._widget.value)

    def write(self, value):
        self._widget.value = value


class _EnumComboConnector(_SignalConnector):
    signal = "currentIndexChanged"

    def __init__(self, widget, field):
        super().__init__(widget, field)
        self._members = list(field.kind)
        widget.clear()
        for member in self._members:
            widget.addItem(member.label() if hasattr(member, "label") else member.name)

    def read(self):
        return self._members[self._widget.currentIndex]

    def write(self, value):
        self._widget.currentIndex = self._members.index(value)


class _LineEditConnector(_SignalConnector):
    signal = "textChanged"

    def read(self):
        return self._widget.text

    def write(self, value):
        self._widget.text = value


class _PathConnector(_SignalConnector):
    signal = "currentPathChanged"

    def read(self):
        return self._field.kind(self._widget.currentPath)

    def write(self, value):
        self._widget.currentPath = str(value)


class _NodeComboConnector(_SignalConnector):
    signal = "currentNodeChanged"

    def __init__(self, widget, field):
        super().__init__(widget, field)
        widget.nodeTypes = [field.kind.__name__]

    def read(self):
        return self._widget.currentNode()

    def write(self, value):
        self._widget.setCurrentNode(value)


def _connector(widget, field) -> GuiConnector:
    cls = type(widget).__name__
    kind = field.kind
    if cls in ("QCheckBox", "ctkCheckBox") and kind is bool:
        return _CheckBoxConnector(widget, field)
    if cls in ("QPushButton", "QToolButton") and kind is bool:
        return _ButtonConnector(widget, field)
    if cls in ("QSpinBox", "QSlider") and kind is int:
        return _NumberConnector(widget, field)
    if cls in ("QDoubleSpinBox", "ctkSliderWidget") and kind in (int, float):
        return _NumberConnector(widget, field)
    if cls in ("QComboBox", "ctkComboBox") and isinstance(kind, type) and issubclass(kind, enum.Enum):
        return _EnumComboConnector(widget, field)
    if cls == "QLineEdit" and kind is str:
        return _LineEditConnector(widget, field)
    if cls == "ctkPathLineEdit" and isinstance(kind, type) and issubclass(kind, pathlib.PurePath):
        return _PathConnector(widget, field)
    if cls == "qMRMLNodeComboBox" and _is_node_type(kind):
        return _NodeComboConnector(widget, field)
    raise RuntimeError(f"no connector for a {cls} showing {field.name} ({kind})")


# ---- the decorator ------------------------------------------------------------------------------------------


def _wrapper_init(self, parameterNode):
    self.parameterNode = parameterNode
    self._guis = {}  # tag -> {name: connector}
    self._guiObservers = {}  # tag -> observer tag
    self._nextTag = 0
    self._updatingGui = False
    for field in self.allParameters.values():
        if not field.has(parameterNode):
            field.write(parameterNode, field.default)


def _property(field):
    def get(self):
        return field.read(self.parameterNode)

    def set(self, value):
        was = self.parameterNode.StartModify()
        try:
            field.write(self.parameterNode, value)
        finally:
            self.parameterNode.EndModify(was)

    return property(get, set)


def _check_name(self, name):
    if name not in self.allParameters:
        raise ValueError(f"Cannot find a param with the given name: {name}")


def _get_value(self, name):
    _check_name(self, name)
    return getattr(self, name)


def _set_value(self, name, value):
    _check_name(self, name)
    setattr(self, name, value)


def _update_gui(self):
    if self._updatingGui:
        return
    self._updatingGui = True
    try:
        was = self.parameterNode.StartModify()
        try:
            for connectors in list(self._guis.values()):
                for name, connector in connectors.items():
                    connector.write(getattr(self, name))
        finally:
            self.parameterNode.EndModify(was)
    finally:
        self._updatingGui = False


def _gui_to_parameter(self, name, connector):
    def callback():
        was = self.parameterNode.StartModify()
        try:
            if not self._updatingGui:
                setattr(self, name, connector.read())
        finally:
            self.parameterNode.EndModify(was)

    return callback


def _connect_parameters_to_gui(self, mapping):
    import vtk

    for name in mapping:
        _check_name(self, name)
    connectors = {name: value if isinstance(value, GuiConnector) else _connector(value, self.allParameters[name])
                  for name, value in mapping.items()}
    tag = self._nextTag
    self._nextTag += 1
    self._guis[tag] = connectors
    for name, connector in connectors.items():
        connector.write(getattr(self, name))
        connector.onChanged(_gui_to_parameter(self, name, connector))
    self._guiObservers[tag] = self.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent,
                                                             lambda caller, event: _update_gui(self))
    return tag


def _connect_gui(self, gui):
    widgets = gui.findChildren(_qwidget()) if hasattr(gui, "isWidgetType") else list(vars(gui).values())
    mapping = {}
    for widget in widgets:
        name = widget.property(PARAMETER_NAME_PROPERTY) if hasattr(widget, "property") else None
        if name:
            mapping[name] = widget
    return _connect_parameters_to_gui(self, mapping)


def _qwidget():
    from PySide6.QtWidgets import QWidget

    return QWidget


def _disconnect_gui(self, tag):
    for connector in self._guis.pop(tag, {}).values():
        connector.onChanged(None)
    if tag in self._guiObservers:
        self.parameterNode.RemoveObserver(self._guiObservers.pop(tag))


def parameterNodeWrapper(cls=None):
    """Class decorator: typed access to a ``vtkMRMLScriptedModuleNode`` and GUI binding (see the module doc)."""
    if cls is None:
        return parameterNodeWrapper
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {name: _Field(name, hint, cls) for name, hint in hints.items()}
    for name, field in fields.items():
        setattr(cls, name, _property(field))
    cls.allParameters = fields
    cls.__init__ = _wrapper_init
    cls.getValue = _get_value
    cls.setValue = _set_value
    cls.connectGui = _connect_gui
    cls.connectParametersToGui = _connect_parameters_to_gui
    cls.disconnectGui = _disconnect_gui
    cls.default = lambda self, name: self.allParameters[name].default
    cls.dataType = staticmethod(lambda name: fields[name].kind)
    cls.StartModify = lambda self: self.parameterNode.StartModify()
    cls.EndModify = lambda self, was: self.parameterNode.EndModify(was)
    cls.AddObserver = lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(event, callback, priority)
    cls.RemoveObserver = lambda self, tag: self.parameterNode.RemoveObserver(tag)
    cls.Modified = lambda self: self.parameterNode.Modified()
    return cls


def install(module) -> None:
    """Fill ``module`` (the stand-in ``slicer.parameterNodeWrapper``) with this emulation."""
    for name in __all__:
        if name != "install":
            setattr(module, name, globals()[name])
