"""The Slicer side's shape, checked as ``Testing/core/test_architecture.py`` checks the core: small modules
and functions, and an ``__all__`` in every helper module.

Covered: the panels' module files (``XVRTraining.py``, ``XVRRegistration.py``) with their helper packages
(``XVRTrainingLib``, ``XVRRegistrationLib``), and ``XVRCore/XVRCoreLib``. The ``.ui`` files are not Python.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PANELS = ["XVRTraining", "XVRRegistration"]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _helper_modules() -> list[Path]:
    folders = [REPO / "XVRCore" / "XVRCoreLib", *(REPO / m / f"{m}Lib" for m in PANELS)]
    return sorted(p for folder in folders for p in folder.glob("*.py"))


def _sources() -> list[Path]:
    return [*(REPO / m / f"{m}.py" for m in PANELS), *_helper_modules()]


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def test_the_panels_have_helper_packages():
    for module in PANELS:
        assert (REPO / module / f"{module}Lib" / "__init__.py").is_file(), f"{module}Lib is missing"


def test_modules_stay_small():
    big = []
    for path in _sources():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES and "One concept:" not in (ast.get_docstring(_tree(path)) or ""):
            big.append(f"{_name(path)}: {lines} lines")
    assert not big, "modules above ~400 lines that do not say why (\"One concept: ...\"):\n" + "\n".join(big)


def test_functions_stay_small():
    long = []
    for path in _sources():
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{_name(path)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "functions above ~60 lines:\n" + "\n".join(long)


@pytest.mark.parametrize("path", _helper_modules(), ids=_name)
def test_every_helper_module_declares_its_api(path, registration_module, training_module):
    """Imported as Slicer imports it (the module fixtures put the panels' folders on sys.path): ``__all__``
    names what the module defines, and every public function and class it defines is in ``__all__``."""
    package = path.parent.name
    module = importlib.import_module(package if path.stem == "__init__" else f"{package}.{path.stem}")
    if path.stem == "__init__" and not hasattr(module, "__all__"):
        assert not any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in _tree(path).body)
        return  # a package that only documents itself
    assert hasattr(module, "__all__"), f"{_name(path)} has no __all__"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{_name(path)}: __all__ names undefined {missing}"
    own = {name for name, value in vars(module).items()
           if not name.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value))
           and value.__module__ == module.__name__}
    undeclared = sorted(own - set(module.__all__))
    assert not undeclared, f"{_name(path)}: public but not in __all__ {undeclared}"


def test_one_panel_never_imports_the_other():
    """The panels share code through XVRCoreLib only (the XVRCore module is their one dependency)."""
    for module in PANELS:
        others = {f"{m}Lib" for m in PANELS if m != module} | {m for m in PANELS if m != module}
        for path in [REPO / module / f"{module}.py", *sorted((REPO / module / f"{module}Lib").glob("*.py"))]:
            for node in ast.walk(_tree(path)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                assert not {n.split(".")[0] for n in names} & others, f"{_name(path)}:{node.lineno} imports {names}"
