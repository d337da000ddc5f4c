"""Structural checks of the Slicer extension that run without Slicer.

The module scripts cannot be imported outside Slicer (``slicer.ScriptedLoadableModule``, ``qt`` and ``ctk``
exist only there), so they are read with ``ast``; the Qt Designer files are read with ElementTree and the
CMake files with a small evaluator of the few commands they use, cross-checked by the real ``cmake -P``
(with the Slicer macros stubbed) when cmake is installed.
"""

from __future__ import annotations

import ast
import json
import py_compile
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUI_MODULES = ["XVRTraining", "XVRRegistration"]
ALL_MODULES = ["XVRCore", *GUI_MODULES]

# Class name suffix -> required base class (the parameter node is checked separately).
MODULE_CLASSES = {
    "": "ScriptedLoadableModule",
    "Widget": "ScriptedLoadableModuleWidget",
    "Logic": "ScriptedLoadableModuleLogic",
    "Test": "ScriptedLoadableModuleTest",
}
# Must be imported lazily (inside functions): heavy, or missing until the user agrees to install them.
LAZY_IMPORTS = {"torch", "torchvision", "xvrcore", "xvr", "diffdrr", "PyTorchUtils", "light_the_torch"}
# Also lazy in the panels and their helper packages: XVRCoreLib is on sys.path only once XVRCore is registered.
PANEL_LAZY_IMPORTS = LAZY_IMPORTS | {"XVRCoreLib"}
# The part of a panel's helper package that holds widgets (Qt); the rest of it is logic.
PANEL_WIDGET_FILES = {"panel.py", "qa_controls.py", "batch_table.py", "panel_extras.py",
                      "sample_data.py"}  # sample_data: SampleData's loader callback (scene and dialog, like a button)
SAMPLE_DATA = {"XVRTraining": ("XVRPelvisCT.nii.gz", "XVRPelvisCT.txt")}  # what SampleData offers, shipped
# Must never run at import time, in the module constructor or while the GUI is built.
INSTALL_CALLS = {
    "pip_install",
    "pip_ensure",
    "pip_uninstall",
    "installTorch",
    "ensureDependencies",
    "executePythonModule",
    "_executePythonModule",
}
# Widget classes the parameterNodeWrapper GUI connectors accept for each parameter kind (exact class match).
CONNECTOR_WIDGETS = {
    "node": {"qMRMLNodeComboBox", "qMRMLSubjectHierarchyTreeView"},
    "enum": {"QComboBox"},
    "path": {"ctkPathLineEdit", "ctkDirectoryButton"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget"},
    "int": {"QSpinBox", "QSlider"},
    "bool": {"QCheckBox", "QPushButton"},
    "str": {"QLineEdit", "QTextEdit", "QComboBox"},
}
CATALOG_KEYS = {  # slicer-extension-catalog-entry-schema-v1.0.2 (additionalProperties: false)
    "$schema",
    "category",
    "scm_url",
    "scm_revision",
    "scm_type",
    "build_dependencies",
    "dicom_support_rule",
    "build_subdirectory",
    "enabled",
    "tier",
}


# ---------------------------------------------------------------------------------------------------------
# helpers: Python sources


def module_script(module: str) -> Path:
    return REPO / module / f"{module}.py"


def lib_scripts(module: str) -> list[Path]:
    """The files of the module's helper package ``<module>Lib`` (imported with the module file)."""
    return sorted((REPO / module / f"{module}Lib").glob("*.py"))


def parse(path: Path) -> ast.Module:
    # feature_version keeps the scripts parseable by Python 3.10 (the oldest we support).
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 10))


def classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def dotted(node: ast.AST) -> str:
    """'a.b.c' for Name/Attribute chains, '' otherwise."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def call_name(node: ast.Call) -> str:
    return dotted(node.func).rsplit(".", 1)[-1]


def source_files(directory: Path) -> list[Path]:
    """Files of the source tree below ``directory``: what git tracks or would track.

    Build products beside the sources (``pip install -e`` writes ``*.egg-info`` into XVRCore/,
    Python writes ``__pycache__``) are ignored by .gitignore and are not part of the module.
    """
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", str(directory)],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout
        return [REPO / line for line in out.splitlines() if (REPO / line).is_file()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: skip the usual build products
        return [
            p for p in directory.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and not any(part.endswith(".egg-info") for part in p.parts)
        ]


def walk_import_time(node: ast.AST):
    """Like ast.walk, but skips function bodies: yields what runs when the module is imported."""
    yield node
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            # decorators and default values still run at import time
            yield from (n for d in getattr(child, "decorator_list", []) for n in walk_import_time(d))
            yield from (
                n for d in child.args.defaults + child.args.kw_defaults if d for n in walk_import_time(d)
            )
            continue
        yield from walk_import_time(child)


def imported_roots(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name.split(".")[0] for alias in node.names}
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return {node.module.split(".")[0]}
    return set()


def method(cls: ast.ClassDef, name: str) -> ast.FunctionDef | None:
    return next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == name), None)


def enum_members(cls: ast.ClassDef) -> list[str] | None:
    """Member names if the class derives from enum.Enum, else None."""
    if not any(dotted(base) in ("enum.Enum", "Enum") for base in cls.bases):
        return None
    return [t.id for n in cls.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]


def parameter_fields(tree: ast.Module, module: str) -> dict[str, ast.AnnAssign]:
    cls = classes(tree)[f"{module}ParameterNode"]
    return {
        n.target.id: n for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
    }


def annotation_kind(annotation: ast.AST, enums: set[str]) -> tuple[str, str, list[ast.Call]]:
    """(kind, type name, validators) of a parameter annotation; kind is a CONNECTOR_WIDGETS key or '?'."""
    validators: list[ast.Call] = []
    if isinstance(annotation, ast.Subscript) and dotted(annotation.value) in (
        "Annotated",
        "typing.Annotated",
    ):
        elements = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
        annotation, validators = elements[0], [e for e in elements[1:] if isinstance(e, ast.Call)]
    name = dotted(annotation)
    short = name.rsplit(".", 1)[-1]
    if short.startswith("vtkMRML") and short.endswith("Node"):
        kind = "node"
    elif name in enums:
        kind = "enum"
    elif name in ("pathlib.Path", "Path", "pathlib.PurePath", "PurePath"):
        kind = "path"
    elif name in ("float", "int", "bool", "str"):
        kind = name
    else:
        kind = "?"
    return kind, short, validators


# ---------------------------------------------------------------------------------------------------------
# helpers: Qt Designer files


def ui_path(module: str) -> Path:
    return REPO / module / "Resources" / "UI" / f"{module}.ui"


def ui_widgets(root: ET.Element) -> dict[str, ET.Element]:
    return {w.get("name"): w for w in root.iter("widget")}


def ui_property(widget: ET.Element, name: str) -> ET.Element | None:
    return next((p for p in widget.findall("property") if p.get("name") == name), None)


def ui_parameter_bindings(root: ET.Element) -> dict[str, str]:
    """widget name -> SlicerParameterName."""
    bindings = {}
    for name, widget in ui_widgets(root).items():
        prop = ui_property(widget, "SlicerParameterName")
        if prop is not None:
            bindings[name] = prop.findtext("string", default="")
    return bindings


# ---------------------------------------------------------------------------------------------------------
# helpers: CMake


def cmake_commands(text: str) -> list[tuple[str, list[tuple[str, bool]]]]:
    """(command, [(argument, quoted)]) for each command in a CMake file (enough for the files here)."""
    text = "\n".join(re.sub(r'#(?=(?:[^"]*"[^"]*")*[^"]*$).*', "", line) for line in text.splitlines())
    commands, position = [], 0
    start = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
    while match := start.search(text, position):
        depth, i = 1, match.end()
        while depth:
            if text[i] == '"':
                i = text.index('"', i + 1)
            elif text[i] == "(":
                depth += 1
            elif text[i] == ")":
                depth -= 1
            i += 1
        body, position = text[match.end() : i - 1], i
        args = [
            (m.group(1), True) if m.group(1) is not None else (m.group(2), False)
            for m in re.finditer(r'"((?:[^"\\]|\\.)*)"|([^\s"()]+)', body)
        ]
        commands.append((match.group(1), args))
    return [c for c in commands if c[0].lower() not in ("if", "elseif", "else", "endif")]


def cmake_evaluate(directory: Path) -> tuple[dict[str, list[str]], list[tuple[str, list[str]]]]:
    """Run set()/file(GLOB)/list(SORT) of directory/CMakeLists.txt; return the variables and other calls."""
    variables: dict[str, list[str]] = {"CMAKE_CURRENT_SOURCE_DIR": [str(directory)]}

    def expand(arg: str, quoted: bool) -> list[str]:
        value = re.sub(r"\$\{(\w+)\}", lambda m: ";".join(variables.get(m.group(1), [])), arg)
        return [value] if quoted else [v for v in value.split(";") if v]

    calls = []
    for command, raw in cmake_commands((directory / "CMakeLists.txt").read_text(encoding="utf-8")):
        args = [value for arg, quoted in raw for value in expand(arg, quoted)]
        if command == "set":
            variables[args[0]] = args[1:]
        elif command == "file" and args[0] in ("GLOB", "GLOB_RECURSE"):
            rest, relative = [a for a in args[2:] if a != "CONFIGURE_DEPENDS"], None
            if "RELATIVE" in rest:
                at = rest.index("RELATIVE")
                relative, rest = Path(rest[at + 1]), rest[:at] + rest[at + 2 :]
            found = []
            for pattern in rest:
                pattern_path = Path(pattern) if Path(pattern).is_absolute() else directory / pattern
                base, name = pattern_path.parent, pattern_path.name
                matches = base.rglob(name) if args[0] == "GLOB_RECURSE" else base.glob(name)
                found += [
                    str(p.relative_to(relative)) if relative else str(p) for p in matches if p.is_file()
                ]
            variables[args[1]] = found
        elif command == "list" and args[0] == "SORT":
            variables[args[1]] = sorted(variables.get(args[1], []))
        else:
            calls.append((command, args))
    return variables, calls


def macro_arguments(args: list[str]) -> dict[str, list[str]]:
    """Split slicerMacroBuildScriptedModule arguments by keyword."""
    keywords = {"NAME", "SCRIPTS", "RESOURCES", "WITH_GENERIC_TESTS", "WITH_SUBDIR", "VERBOSE"}
    parsed: dict[str, list[str]] = {}
    current = None
    for arg in args:
        if arg in keywords:
            current = arg
            parsed.setdefault(arg, [])
        elif current is not None:
            parsed[current].append(arg)
    return parsed


def build_call(module: str) -> dict[str, list[str]]:
    _, calls = cmake_evaluate(REPO / module)
    found = [args for command, args in calls if command == "slicerMacroBuildScriptedModule"]
    assert len(found) == 1, f"{module}/CMakeLists.txt must call slicerMacroBuildScriptedModule once"
    return macro_arguments(found[0])


def script_exists(directory: Path, script: str) -> bool:
    # slicerMacroBuildScriptedModule accepts scripts with or without the .py extension
    return (directory / script).is_file() or (directory / f"{script}.py").is_file()


def installed_files(module: str) -> set[str]:
    """Paths relative to the module folder that end up in the installed qt-scripted-modules folder."""
    call = build_call(module)
    return {s if s.endswith(".py") else f"{s}.py" for s in call.get("SCRIPTS", [])} | set(
        call.get("RESOURCES", [])
    )


# ---------------------------------------------------------------------------------------------------------
# Python scripts


def all_module_scripts() -> list[Path]:
    return sorted(p for m in ALL_MODULES for p in [*(REPO / m).glob("*.py"), *lib_scripts(m)])


@pytest.mark.parametrize("path", all_module_scripts(), ids=lambda p: str(p.relative_to(REPO)))
def test_module_scripts_compile(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)
    parse(path)


@pytest.mark.parametrize("module", GUI_MODULES)
def test_module_defines_template_classes(module):
    tree = parse(module_script(module))
    defined = classes(tree)
    for suffix, base in MODULE_CLASSES.items():
        name = module + suffix
        assert name in defined, f"{module}.py must define class {name}"
        bases = {dotted(b).rsplit(".", 1)[-1] for b in defined[name].bases}
        assert base in bases, f"{name} must derive from {base}"
    parameter_node = defined.get(f"{module}ParameterNode")
    assert parameter_node is not None, f"{module}.py must define class {module}ParameterNode"
    decorators = {
        dotted(d.func if isinstance(d, ast.Call) else d).rsplit(".", 1)[-1]
        for d in parameter_node.decorator_list
    }
    assert (
        "parameterNodeWrapper" in decorators
    ), f"{module}ParameterNode must be decorated with @parameterNodeWrapper"
    assert parameter_fields(tree, module), f"{module}ParameterNode declares no parameters"
    logic = defined[f"{module}Logic"]
    for name in ("getParameterNode", "ensureDependencies"):
        assert method(logic, name), f"{module}Logic must define {name}()"
    test = defined[f"{module}Test"]
    assert method(test, "setUp") and any(
        n.name.startswith("test") for n in test.body if isinstance(n, ast.FunctionDef)
    )


@pytest.mark.parametrize("module", ALL_MODULES)
def test_no_heavy_imports_or_installs_at_import_time(module):
    tree = parse(module_script(module))
    defined = classes(tree)
    # A panel's module file imports its helper package: that import is part of loading the module.
    panel = module in GUI_MODULES
    lazy_imports = PANEL_LAZY_IMPORTS if panel else LAZY_IMPORTS
    for path in [module_script(module), *(lib_scripts(module) if panel else [])]:
        name = path.relative_to(REPO)
        for node in walk_import_time(parse(path)):
            lazy = imported_roots(node) & lazy_imports
            assert not lazy, f"{name} line {node.lineno}: import {lazy} inside the function that needs it"
            if isinstance(node, ast.Call):
                assert (
                    call_name(node) not in INSTALL_CALLS
                ), f"{name} line {node.lineno}: {call_name(node)}() runs at import time"
    # The module constructor and GUI construction must not install either (first use does).
    constructors = [(module, "__init__"), (f"{module}Widget", "__init__"), (f"{module}Widget", "setup")]
    for class_name, method_name in constructors:
        function = method(defined[class_name], method_name) if class_name in defined else None
        for node in ast.walk(function) if function else []:
            if isinstance(node, ast.Call):
                assert (
                    call_name(node) not in INSTALL_CALLS
                ), f"{class_name}.{method_name} calls {call_name(node)}(); install on first use instead"


@pytest.mark.parametrize("module", GUI_MODULES)
def test_module_metadata(module):
    tree = parse(module_script(module))
    init = method(classes(tree)[module], "__init__")
    assigned = {dotted(t): n.value for n in ast.walk(init) if isinstance(n, ast.Assign) for t in n.targets}
    for field in ("title", "categories", "contributors", "helpText", "acknowledgementText"):
        assert f"self.parent.{field}" in assigned, f"{module}: self.parent.{field} is not set"
    assert "XVRCore" in ast.literal_eval(
        assigned["self.parent.dependencies"]
    ), f"{module} must depend on XVRCore (it provides the xvrcore package)"
    source = module_script(module).read_text(encoding="utf-8")
    citation = (
        "Gopalakrishnan et al., Rapid patient-specific neural networks for intraoperative X-ray to volume"
    )
    assert citation in re.sub(r'"\s*\n\s*"', "", source), f"{module}: xvr citation missing"
    assert "XVR_CITATION" in ast.unparse(assigned["self.parent.acknowledgementText"])


def test_core_module_is_hidden():
    tree = parse(module_script("XVRCore"))
    defined = classes(tree)
    assert set(defined) == {"XVRCore"}, "XVRCore.py is a bare hidden module (no widget, no logic)"
    assigns = {
        dotted(t): n.value
        for n in ast.walk(defined["XVRCore"])
        if isinstance(n, ast.Assign)
        for t in n.targets
    }
    assert (
        isinstance(assigns.get("self.parent.hidden"), ast.Constant)
        and assigns["self.parent.hidden"].value is True
    )
    assert "sys.path" in (
        ast.get_docstring(tree) or ""
    ), "XVRCore.py's docstring must say why the module exists"


@pytest.mark.parametrize("module", GUI_MODULES)
def test_parameter_node_defaults_are_valid(module):
    tree = parse(module_script(module))
    defined = classes(tree)
    enums = {name: members for name, cls in defined.items() if (members := enum_members(cls)) is not None}
    for field, node in parameter_fields(tree, module).items():
        kind, type_name, validators = annotation_kind(node.annotation, set(enums))
        assert (
            kind != "?"
        ), f"{module}ParameterNode.{field}: unsupported annotation {ast.unparse(node.annotation)}"
        default = node.value
        if kind == "enum" and default is not None:
            owner, _, member = dotted(default).rpartition(".")
            assert (
                owner == type_name and member in enums[type_name]
            ), f"{field}: bad default {ast.unparse(default)}"
        for validator in validators:
            if dotted(validator.func).endswith("WithinRange") and isinstance(default, ast.Constant):
                low, high = (ast.literal_eval(a) for a in validator.args)
                assert (
                    low <= default.value <= high
                ), f"{field}: default {default.value} outside [{low}, {high}]"
    # Enum labels shown in combo boxes must cover every member (a missing one raises KeyError in the GUI).
    for name, members in enums.items():
        label = method(defined[name], "label")
        for table in (n for n in ast.walk(label) if isinstance(n, ast.Dict)) if label else []:
            keys = {dotted(k).rpartition(".")[2] for k in table.keys if dotted(k).startswith(f"{name}.")}
            assert keys == set(members), f"{name}.label() covers {sorted(keys)}, members are {members}"


# ---------------------------------------------------------------------------------------------------------
# Qt Designer files


@pytest.mark.parametrize("module", GUI_MODULES)
def test_ui_file_structure(module):
    root = ET.parse(ui_path(module)).getroot()
    assert root.tag == "ui" and root.findtext("class") == module
    top = root.find("widget")
    assert top is not None and top.get("class") == "qMRMLWidget" and top.get("name") == module
    widgets = ui_widgets(root)
    assert len(widgets) == len(list(root.iter("widget"))), "widget names in the .ui must be unique"
    custom = {c.findtext("class") for c in root.iter("customwidget")}
    for name, widget in widgets.items():
        cls = widget.get("class")
        assert cls.startswith("Q") or cls in custom, f"{name}: class {cls} is not declared in <customwidgets>"
    inputs = [
        w
        for w in root.iter("widget")
        if w.get("class") == "ctkCollapsibleButton"
        and ui_property(w, "text") is not None
        and ui_property(w, "text").findtext("string") == "Inputs"
    ]
    assert inputs, "the panel starts with an 'Inputs' ctkCollapsibleButton"
    scene_receivers = set()
    for connection in root.iter("connection"):
        sender, receiver = connection.findtext("sender"), connection.findtext("receiver")
        assert sender in widgets and receiver in widgets, f"connection {sender} -> {receiver}: unknown widget"
        if connection.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)":
            assert sender == module and connection.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
            scene_receivers.add(receiver)
    for name, widget in widgets.items():
        if widget.get("class", "").startswith("qMRML") and widget.get("class") != "qMRMLWidget":
            assert name in scene_receivers, f"{name} never gets the MRML scene (mrmlSceneChanged connection)"


@pytest.mark.parametrize("module", GUI_MODULES)
def test_widget_names_used_in_code_exist(module):
    tree = parse(module_script(module))
    widgets = ui_widgets(ET.parse(ui_path(module)).getroot())
    used = {
        n.attr
        for path in [module_script(module), *lib_scripts(module)]  # the panel's sections live in <module>Lib
        for n in ast.walk(parse(path))
        if isinstance(n, ast.Attribute) and dotted(n.value) == "self.ui"
    }
    assert "applyButton" in used
    missing = used - set(widgets)
    assert not missing, f"{module}.py uses self.ui.{sorted(missing)} but {module}.ui has no such widget"
    resources = {
        n.args[0].value
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and call_name(n) == "resourcePath"
        and n.args
        and isinstance(n.args[0], ast.Constant)
    }
    assert f"UI/{module}.ui" in resources, f"{module}.py must load Resources/UI/{module}.ui"
    for resource in resources:
        assert (
            REPO / module / "Resources" / resource
        ).is_file(), f"resourcePath({resource!r}) does not exist"


@pytest.mark.parametrize("module", GUI_MODULES)
def test_ui_parameter_bindings_match_parameter_node(module):
    tree = parse(module_script(module))
    defined = classes(tree)
    enums = {name for name, cls in defined.items() if enum_members(cls) is not None}
    fields = parameter_fields(tree, module)
    root = ET.parse(ui_path(module)).getroot()
    widgets = ui_widgets(root)
    bindings = ui_parameter_bindings(root)
    for widget_name, parameter in bindings.items():
        field = parameter.split(".")[0]  # parameter packs bind as "pack.member"
        assert (
            field in fields
        ), f"{widget_name}: SlicerParameterName {parameter!r} is not a {module}ParameterNode field"
        kind, type_name, _ = annotation_kind(fields[field].annotation, enums)
        widget_class = widgets[widget_name].get("class")
        if "." not in parameter:
            assert widget_class in CONNECTOR_WIDGETS[kind], (
                f"{widget_name} ({widget_class}) cannot show the {kind} parameter {field!r}; "
                f"use one of {sorted(CONNECTOR_WIDGETS[kind])}"
            )
        if widget_class == "qMRMLNodeComboBox":
            node_types = ui_property(widgets[widget_name], "nodeTypes")
            listed = [s.text for s in node_types.iter("string")] if node_types is not None else []
            assert listed == [type_name], f"{widget_name}: nodeTypes {listed} != annotation {type_name}"
    unbound = set(fields) - {p.split(".")[0] for p in bindings.values()}
    assert not unbound, f"{module}ParameterNode fields without a widget in {module}.ui: {sorted(unbound)}"


# ---------------------------------------------------------------------------------------------------------
# CMake


def test_extension_cmakelists():
    variables, calls = cmake_evaluate(REPO)
    assert ("project", ["SlicerXVR"]) in calls
    assert ("find_package", ["Slicer", "REQUIRED"]) in calls
    for name in (
        "HOMEPAGE",
        "CATEGORY",
        "CONTRIBUTORS",
        "DESCRIPTION",
        "ICONURL",
        "SCREENSHOTURLS",
        "DEPENDS",
    ):
        assert variables.get(f"EXTENSION_{name}"), f"EXTENSION_{name} is not set"
    assert "PyTorch" in " ".join(variables["EXTENSION_DEPENDS"]).split()
    icon_url = variables["EXTENSION_ICONURL"][0]
    assert (
        icon_url.endswith("/Resources/Icons/SlicerXVR.png")
        and (REPO / "Resources/Icons/SlicerXVR.png").is_file()
    )
    raw = cmake_commands((REPO / "CMakeLists.txt").read_text(encoding="utf-8"))
    included = [args[0][0] for command, args in raw if command == "include"]
    assert included == [
        "${Slicer_USE_FILE}",
        "${Slicer_EXTENSION_GENERATE_CONFIG}",
        "${Slicer_EXTENSION_CPACK}",
    ]
    subdirectories = [args[0] for command, args in calls if command == "add_subdirectory"]
    assert subdirectories == ALL_MODULES
    for subdirectory in subdirectories:
        assert (
            REPO / subdirectory / "CMakeLists.txt"
        ).is_file(), f"add_subdirectory({subdirectory}): no CMakeLists"
    # every module folder of the extension is built
    module_dirs = {p.parent.name for p in REPO.glob("*/*.py") if p.stem == p.parent.name}
    assert module_dirs <= set(
        subdirectories
    ), f"module folders not added: {sorted(module_dirs - set(subdirectories))}"


@pytest.mark.parametrize("module", ALL_MODULES)
def test_module_cmakelists_files_exist(module):
    directory = REPO / module
    variables, calls = cmake_evaluate(directory)
    assert variables.get("MODULE_NAME") == [module]
    scripts = variables.get("MODULE_PYTHON_SCRIPTS", [])
    resources = variables.get("MODULE_PYTHON_RESOURCES", [])
    assert f"{module}.py" in scripts
    for script in scripts:
        assert script_exists(directory, script), f"{module}: MODULE_PYTHON_SCRIPTS lists missing {script}"
    for resource in resources:
        assert (directory / resource).is_file(), f"{module}: MODULE_PYTHON_RESOURCES lists missing {resource}"
    call = build_call(module)
    assert call.get("NAME") == [module]
    assert call.get("SCRIPTS") == scripts and call.get("RESOURCES", []) == resources
    # Everything the module needs at run time is installed: all its Python files and all its resources.
    listed = installed_files(module)
    on_disk = {
        str(p.relative_to(directory))
        for p in source_files(directory)
        if p.parts[len(directory.parts)] != "Testing" and p.name != "CMakeLists.txt"
    }
    assert not on_disk - listed, f"{module}: files not packaged by CMakeLists.txt: {sorted(on_disk - listed)}"
    # Testing subdirectories
    for command, args in calls:
        if command == "add_subdirectory":
            assert (
                directory / args[0] / "CMakeLists.txt"
            ).is_file(), f"{module}: add_subdirectory({args[0]})"
            for sub_command, sub_args in cmake_evaluate(directory / args[0])[1]:
                if sub_command == "add_subdirectory":
                    assert (directory / args[0] / sub_args[0] / "CMakeLists.txt").is_file()
    if module in GUI_MODULES:
        assert "WITH_GENERIC_TESTS" in call
        assert ("slicer_add_python_unittest", ["SCRIPT", f"{module}.py"]) in calls
        assert ("add_subdirectory", ["Testing"]) in calls
        sample_data = {f"Resources/SampleData/{name}" for name in SAMPLE_DATA.get(module, ())}
        assert set(resources) == {
            f"Resources/Icons/{module}.png",
            f"Resources/UI/{module}.ui",
            "Resources/requirements.txt",
        } | sample_data


def test_core_package_is_packaged():
    scripts = set(build_call("XVRCore")["SCRIPTS"])
    package = REPO / "XVRCore" / "xvrcore"
    expected = {
        str(p.relative_to(REPO / "XVRCore")) for p in package.rglob("*.py") if "__pycache__" not in p.parts
    }
    assert "xvrcore/__init__.py" in expected and expected <= scripts


def test_installed_files_do_not_collide():
    """All modules install into one qt-scripted-modules folder: files with the same path must be identical."""
    owners: dict[str, str] = {}
    for module in ALL_MODULES:
        for relative in installed_files(module):
            if relative in owners:
                first = (REPO / owners[relative] / relative).read_bytes()
                assert (
                    first == (REPO / module / relative).read_bytes()
                ), f"{owners[relative]} and {module} install different files to {relative}"
            owners[relative] = module


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
@pytest.mark.parametrize("directory", ["", *ALL_MODULES])
def test_cmake_script_mode_agrees(directory, tmp_path):
    """Run each CMakeLists.txt with real cmake (Slicer macros stubbed); compare with the evaluator above."""
    driver = tmp_path / "driver.cmake"
    driver.write_text(
        """
function(project)
  message("XVRCHECK project=${ARGV}")
endfunction()
function(find_package)
endfunction()
function(add_subdirectory dir)
  message("XVRCHECK add_subdirectory=${dir}")
endfunction()
function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(A "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(A_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "unknown arguments: ${A_UNPARSED_ARGUMENTS}")
  endif()
  message("XVRCHECK NAME=${A_NAME}")
  message("XVRCHECK SCRIPTS=${A_SCRIPTS}")
  message("XVRCHECK RESOURCES=${A_RESOURCES}")
endfunction()
function(slicer_add_python_unittest)
  message("XVRCHECK unittest=${ARGV}")
endfunction()
file(WRITE "${OUT}/empty.cmake" "")
set(Slicer_USE_FILE "${OUT}/empty.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${OUT}/empty.cmake")
set(Slicer_EXTENSION_CPACK "${OUT}/empty.cmake")
set(BUILD_TESTING ON)
# CONFIGURE_DEPENDS only matters to a build system; script mode rejects it.
macro(file)
  set(_xvrcheck_args "${ARGV}")
  list(REMOVE_ITEM _xvrcheck_args CONFIGURE_DEPENDS)
  _file(${_xvrcheck_args})
endmacro()
set(CMAKE_CURRENT_SOURCE_DIR "${SRC}")
include("${SRC}/CMakeLists.txt")
""",
        encoding="utf-8",
    )
    source = REPO / directory
    result = subprocess.run(
        ["cmake", f"-DSRC={source}", f"-DOUT={tmp_path}", "-P", str(driver)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    seen: dict[str, list[str]] = {}
    for line in result.stderr.splitlines():
        if line.startswith("XVRCHECK "):
            key, _, value = line[len("XVRCHECK ") :].partition("=")
            seen.setdefault(key, []).append(value)
    _, calls = cmake_evaluate(source)
    assert seen.get("add_subdirectory", []) == [a[0] for c, a in calls if c == "add_subdirectory"]
    if directory:
        call = build_call(directory)
        assert seen["NAME"] == [directory]
        assert seen["SCRIPTS"][0].split(";") == call["SCRIPTS"]
        assert [r for r in seen["RESOURCES"][0].split(";") if r] == call.get("RESOURCES", [])
    else:
        assert seen["project"] == ["SlicerXVR"]


# ---------------------------------------------------------------------------------------------------------
# Resources


@pytest.mark.parametrize(
    "icon",
    ["Resources/Icons/SlicerXVR.png", *[f"{m}/Resources/Icons/{m}.png" for m in GUI_MODULES]],
)
def test_icons_are_128px_pngs(icon):
    image_module = pytest.importorskip("PIL.Image")
    with image_module.open(REPO / icon) as image:
        assert image.format == "PNG" and image.size == (128, 128)
        image.load()  # decodes the whole file: catches truncated images
        extrema = image.convert("RGBA").getextrema()
    assert extrema[3][1] > 0 and any(low != high for low, high in extrema[:3]), f"{icon} is blank"


def read_requirements(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "-"))]


@pytest.mark.parametrize("module", GUI_MODULES)
def test_requirements_parse_and_match_pyproject(module):
    requirements = read_requirements(REPO / module / "Resources" / "requirements.txt")
    assert requirements
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - packaging is nearly always present
        pattern = re.compile(
            r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]+\])?\s*((==|>=|<=|~=|!=|<|>)\s*[\w.*+!-]+\s*,?\s*)*$"
        )
        for line in requirements:
            assert pattern.match(line), f"{module} requirements.txt: cannot parse {line!r}"
        names = {re.split(r"[\[<>=!~ ]", line)[0].lower() for line in requirements}
    else:
        names = {Requirement(line).name.lower() for line in requirements}
        requirements = [str(Requirement(line)) for line in requirements]
    assert "torch" not in names, "torch is installed through the PyTorch extension, not requirements.txt"
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    with open(REPO / "pyproject.toml", "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    expected = [d.replace(" ", "") for d in dependencies if not re.match(r"torch\b", d)]
    assert sorted(r.replace(" ", "") for r in requirements) == sorted(
        expected
    ), f"{module}/Resources/requirements.txt must list pyproject's runtime dependencies except torch"


def test_extension_catalog_entry():
    entry = json.loads((REPO / "SlicerXVR.json").read_text(encoding="utf-8"))
    assert set(entry) <= CATALOG_KEYS, f"keys not in the catalog schema: {sorted(set(entry) - CATALOG_KEYS)}"
    assert {"$schema", "category", "scm_url"} <= set(entry)
    assert entry["$schema"].startswith("https://raw.githubusercontent.com/Slicer/Slicer/")
    assert entry["category"] == "Registration"
    variables, _ = cmake_evaluate(REPO)
    assert entry["build_dependencies"] == " ".join(variables["EXTENSION_DEPENDS"]).split()
    assert entry["category"] == variables["EXTENSION_CATEGORY"][0]
    assert entry["scm_url"].removesuffix(".git") == variables["EXTENSION_HOMEPAGE"][0]
    assert isinstance(entry.get("tier", 1), int) and 1 <= entry.get("tier", 1) <= 5
    rule = entry["dicom_support_rule"]
    clauses = re.split(r"\s+or\s+", rule)
    assert all(re.fullmatch(r"Modality == '[A-Z]{2}'", c) for c in clauses), f"unexpected rule syntax: {rule}"
    assert {c[-3:-1] for c in clauses} == {"XA", "RF", "DX", "CR"}


# ---------------------------------------------------------------------------------------------------------
# Logic/widget separation (the logic runs headless; see test_logic.py)


@pytest.mark.parametrize("module", GUI_MODULES)
def test_logic_never_touches_widgets(module):
    """Logic and job classes use no widget (self.ui), no Qt and no slicer.mrmlScene: they take the nodes.

    So does the whole helper package but its widget part (PANEL_WIDGET_FILES): the logic's collaborators.
    """
    tree = parse(module_script(module))
    workers = [cls for name, cls in classes(tree).items() if name.endswith(("Logic", "Job"))]
    assert any(cls.name == f"{module}Logic" for cls in workers)
    helpers = [(str(p.relative_to(REPO)), parse(p)) for p in lib_scripts(module) if p.name not in PANEL_WIDGET_FILES]
    assert helpers, f"{module}Lib holds the logic's collaborators"
    for name, part in [(cls.name, cls) for cls in workers] + helpers:
        for node in ast.walk(part):
            assert not (isinstance(node, ast.Attribute) and dotted(node) == "self.ui"), f"{name} uses self.ui"
            assert "qt" not in imported_roots(node), f"{name} line {node.lineno} imports qt"
            assert dotted(node) != "slicer.mrmlScene", f"{name} line {getattr(node, 'lineno', '?')} uses slicer.mrmlScene"


@pytest.mark.parametrize("module", GUI_MODULES)
def test_qt_and_ctk_are_imported_inside_the_widget(module):
    """Importing the module script needs no Qt: the logic can be used (and tested) with the MRML libraries.

    The module script imports its helper package, so that holds for the package too (its widget part included).
    """
    for path in [module_script(module), *lib_scripts(module)]:
        for node in walk_import_time(parse(path)):
            assert not imported_roots(node) & {"qt", "ctk"}, (
                f"{path.relative_to(REPO)} line {node.lineno}: import qt/ctk at import time")


@pytest.mark.parametrize("module", GUI_MODULES)
def test_background_jobs_are_polled_from_a_timer_not_waited_for(module):
    """The widget polls its job from a QTimer; nothing in the widget (or its sections) blocks on a process."""
    tree = parse(module_script(module))
    widget = classes(tree)[f"{module}Widget"]
    calls = {call_name(n) for n in ast.walk(widget) if isinstance(n, ast.Call)}
    assert "QTimer" in calls and "poll" in calls
    blocking = {"wait", "communicate", "run", "check_output", "logProcessOutput"}
    assert not calls & blocking
    for path in (p for p in lib_scripts(module) if p.name in PANEL_WIDGET_FILES):
        assert not {call_name(n) for n in ast.walk(parse(path)) if isinstance(n, ast.Call)} & blocking, path.name
