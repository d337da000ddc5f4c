"""The panels' Qt Designer files, loaded for real with PySide6's QUiLoader (offscreen).

Slicer's custom widgets (qMRMLNodeComboBox, ctkPathLineEdit, ...) are stood in for by small Qt classes of
the same names with the properties the .ui files set, so the forms load and render completely. Checked:
every .ui loads without errors, every widget the module code uses exists (with the class the code expects),
every parameter-node binding names a real field of the parameter node and sits on a widget that can show
it, and the panels are grabbed as PNGs (Resources/Screenshots/ with XVR_WRITE_SCREENSHOTS=1).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

QtWidgets = pytest.importorskip("PySide6.QtWidgets")
from PySide6.QtCore import Property, QBuffer, QByteArray, QIODevice, Slot
from PySide6.QtUiTools import QUiLoader

REPO = Path(__file__).resolve().parents[2]
MODULES = ["XVRTraining", "XVRRegistration"]
SCREENSHOTS = REPO / "Resources" / "Screenshots"


# ---- stand-ins for Slicer's custom widgets ---------------------------------------------------------------


class qMRMLWidget(QtWidgets.QWidget):
    @Slot(object)
    def setMRMLScene(self, scene):
        pass


class qMRMLNodeComboBox(QtWidgets.QComboBox):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._types, self._flags, self._texts = [], {}, {}

    def _get_types(self):
        return self._types

    def _set_types(self, value):
        self._types = list(value)
        self.clear()
        self.addItem(f"({self._types[0].removeprefix('vtkMRML').removesuffix('Node')})" if self._types else "")

    nodeTypes = Property("QStringList", _get_types, _set_types)

    def _flag(name):
        return Property(bool, lambda self: self._flags.get(name, False),
                        lambda self, value: self._flags.__setitem__(name, bool(value)))

    noneEnabled = _flag("noneEnabled")
    addEnabled = _flag("addEnabled")
    removeEnabled = _flag("removeEnabled")
    renameEnabled = _flag("renameEnabled")
    showChildNodeTypes = _flag("showChildNodeTypes")

    def _text(name):
        return Property(str, lambda self: self._texts.get(name, ""), lambda self, value: self._texts.__setitem__(name, value))

    noneDisplay = _text("noneDisplay")
    baseName = _text("baseName")

    @Slot(object)
    def setMRMLScene(self, scene):
        pass


class ctkCollapsibleButton(QtWidgets.QGroupBox):
    def _get_text(self):
        return self.title()

    def _set_text(self, value):
        self.setTitle("▾ " + value)

    text = Property(str, _get_text, _set_text)
    collapsed = Property(bool, lambda self: getattr(self, "_collapsed", False),
                         lambda self, value: setattr(self, "_collapsed", bool(value)))


class ctkPathLineEdit(QtWidgets.QLineEdit):
    filters = Property(int, lambda self: 0, lambda self, value: None)
    options = Property(int, lambda self: 0, lambda self, value: None)
    settingKey = Property(str, lambda self: getattr(self, "_key", ""), lambda self, value: setattr(self, "_key", value))

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setPlaceholderText("…")


class ctkSliderWidget(QtWidgets.QDoubleSpinBox):
    pageStep = Property(float, lambda self: getattr(self, "_page", 1.0), lambda self, value: setattr(self, "_page", value))


STANDINS = [qMRMLWidget, qMRMLNodeComboBox, ctkCollapsibleButton, ctkPathLineEdit, ctkSliderWidget]
# What the code's widget accesses need: each used name must be this kind of Qt widget (or derive from it).
EXPECTED = {
    "applyButton": QtWidgets.QPushButton, "resumeButton": QtWidgets.QPushButton, "progressBar": QtWidgets.QProgressBar,
    "statusLabel": QtWidgets.QLabel, "logTextEdit": QtWidgets.QPlainTextEdit, "resultsTable": QtWidgets.QTableWidget,
    "flickerButton": QtWidgets.QPushButton, "checkerboardButton": QtWidgets.QPushButton,
    "customRangesCollapsibleButton": QtWidgets.QWidget,
}


@pytest.fixture(scope="module")
def app():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    instance = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["xvr-ui-test"])
    yield instance


def load(module: str):
    loader = QUiLoader()
    for cls in STANDINS:
        loader.registerCustomWidget(cls)
    form = loader.load(str(REPO / module / "Resources" / "UI" / f"{module}.ui"))
    assert form is not None, loader.errorString()
    assert loader.errorString() == ""
    return form


def panel_sources(module: str) -> list[Path]:
    """The module file and its helper package (the panel's sections live in ``<module>Lib``)."""
    return [REPO / module / f"{module}.py", *sorted((REPO / module / f"{module}Lib").glob("*.py"))]


def used_widget_names(module: str) -> set[str]:
    names = set()
    for path in panel_sources(module):
        names |= _used_widget_names(ast.parse(path.read_text(encoding="utf-8")))
    return names


def _used_widget_names(tree) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            if isinstance(node.value.value, ast.Name) and node.value.value.id == "self" and node.value.attr == "ui":
                names.add(node.attr)
        # getattr(self.ui, "name") with a literal or a dict of literal names
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and node.args:
            target = node.args[0]
            if isinstance(target, ast.Attribute) and target.attr == "ui":
                names |= _literal_names(tree, node.args[1])
    return names


def _literal_names(tree, expression) -> set[str]:
    if isinstance(expression, ast.Constant):
        return {expression.value}
    if isinstance(expression, ast.Name):  # a loop variable: the keys/items of the dict or tuple it iterates
        for node in ast.walk(tree):
            if isinstance(node, ast.For):
                targets = [node.target] + (list(node.target.elts) if isinstance(node.target, ast.Tuple) else [])
                if any(isinstance(t, ast.Name) and t.id == expression.id for t in targets):
                    return _strings(tree, node.iter)
    return set()


def _strings(tree, iterable) -> set[str]:
    if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Attribute) and iterable.func.attr == "items":
        iterable = iterable.func.value
    if isinstance(iterable, ast.Name):  # the dict assigned to that name
        name = iterable.id
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
                iterable = node.value
                break
    if isinstance(iterable, ast.Dict):
        return {k.value for k in iterable.keys if isinstance(k, ast.Constant)}
    if isinstance(iterable, (ast.Tuple, ast.List)):
        return {e.value for e in iterable.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return set()


def parameter_fields(module: str) -> dict[str, str]:
    tree = ast.parse((REPO / module / f"{module}.py").read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}ParameterNode")
    return {n.target.id: ast.unparse(n.annotation) for n in cls.body if isinstance(n, ast.AnnAssign)}


@pytest.mark.parametrize("module", MODULES)
def test_ui_loads_and_every_widget_the_code_uses_exists(app, module):
    form = load(module)
    assert type(form).__name__ == "qMRMLWidget" and form.objectName() == module
    used = used_widget_names(module)
    assert {"applyButton", "progressBar", "statusLabel", "logTextEdit"} <= used
    if module == "XVRRegistration":
        assert {"laoButton", "magnifyPlusButton"} <= used  # reached through getattr
    for name in sorted(used):
        widget = form.findChild(QtWidgets.QWidget, name)
        assert widget is not None, f"{module}.py uses self.ui.{name}; {module}.ui has no such widget"
        if name in EXPECTED:
            assert isinstance(widget, EXPECTED[name]), f"{name} is a {type(widget).__name__}"


@pytest.mark.parametrize("module", MODULES)
def test_every_parameter_binding_names_a_real_field(app, module):
    form = load(module)
    fields = parameter_fields(module)
    bound = {}
    for widget in form.findChildren(QtWidgets.QWidget):
        name = widget.property("SlicerParameterName")
        if name:
            assert name in fields, f"{widget.objectName()} binds {name!r}, not a field of {module}ParameterNode"
            bound[name] = widget
    assert set(bound) == set(fields), f"fields without a widget: {sorted(set(fields) - set(bound))}"
    for name, widget in bound.items():
        annotation = fields[name]
        if "vtkMRML" in annotation:
            assert isinstance(widget, qMRMLNodeComboBox) and widget.nodeTypes[0] in annotation
        elif "float" in annotation:
            assert isinstance(widget, QtWidgets.QDoubleSpinBox)
            low_high = annotation[annotation.find("WithinRange(") + 12 : annotation.find(")")].split(",")
            if "WithinRange" in annotation:  # the widget's range is the validator's range
                assert (widget.minimum(), widget.maximum()) == tuple(float(v) for v in low_high), name
        elif "int" in annotation:
            assert isinstance(widget, QtWidgets.QSpinBox)
        elif annotation == "bool":
            assert isinstance(widget, (QtWidgets.QCheckBox, QtWidgets.QPushButton))
        elif "Path" in annotation:
            assert isinstance(widget, ctkPathLineEdit)
        elif annotation == "str":
            assert isinstance(widget, (QtWidgets.QLineEdit, QtWidgets.QComboBox))
        else:  # an enum
            assert isinstance(widget, QtWidgets.QComboBox)


def enum_labels(module: str) -> dict[str, list[str]]:
    """{field: the labels its combo box shows} for the enum fields (what parameterNodeWrapper fills in)."""
    tree = ast.parse((REPO / module / f"{module}.py").read_text(encoding="utf-8"))
    labels = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        table = next((d for d in ast.walk(cls) if isinstance(d, ast.Dict)), None)
        if any(ast.unparse(b) in ("enum.Enum", "Enum") for b in cls.bases) and table is not None:
            labels[cls.name] = [v.args[0].value for v in table.values if isinstance(v, ast.Call)]
    return {field: labels[annotation] for field, annotation in parameter_fields(module).items() if annotation in labels}


@pytest.mark.parametrize("module", MODULES)
def test_panel_renders_offscreen(app, module, tmp_path):
    form = load(module)
    for field, labels in enum_labels(module).items():
        combo = next(w for w in form.findChildren(QtWidgets.QComboBox) if w.property("SlicerParameterName") == field)
        assert combo.count() == 0  # filled at run time from the enum, as parameterNodeWrapper does
        combo.addItems(labels)
    for box in form.findChildren(ctkCollapsibleButton):
        box.setVisible(True)
    form.resize(380, form.sizeHint().height())
    form.show()
    app.processEvents()
    image = form.grab().toImage()
    assert image.width() >= 300 and image.height() >= 400
    buffer = QByteArray()
    device = QBuffer(buffer)
    device.open(QIODevice.WriteOnly)
    assert image.save(device, "PNG")
    png = bytes(buffer.data())
    (tmp_path / f"{module}_panel.png").write_bytes(png)
    if os.environ.get("XVR_WRITE_SCREENSHOTS") and module != "XVRRegistration":  # that one: test_panel_screenshot
        (SCREENSHOTS / f"{module.lower()}_panel.png").write_bytes(png)
    # Not blank: many distinct grey levels (text, frames, widgets).
    from io import BytesIO

    from PIL import Image

    picture = Image.open(BytesIO(png)).convert("L")
    assert len(picture.histogram()) == 256 and sum(1 for count in picture.histogram() if count) > 20
    form.close()
