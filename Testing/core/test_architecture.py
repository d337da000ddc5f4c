"""The package's shape, checked: layers that import only downward, no Slicer/VTK/Qt in the core, small units.

The layers are the README's data-path diagram (section "Layout"): a module may import from its own
subpackage and from the layers below it, never from a layer above. So the data path of one
registration (app → registration → learning/xray → drr → volume/metrics → io → geometry) only goes
down, and each concept has one home.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "XVRCore" / "xvrcore"

# Lower index = lower layer. Top-level modules of xvrcore (conventions, __init__, __main__) are outside.
LAYERS = ["geometry", "io", "volume", "metrics", "drr", "xray", "learning", "registration", "app"]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Absolute names of every module ``path`` imports (function-level imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _dotted(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "xvrcore" and parts[1] in LAYERS else None


def test_layers_import_only_downward():
    upward = []
    for path in _modules():
        own = _layer(_dotted(path))
        if own is None:
            continue
        for line, module in _imported_modules(path):
            other = _layer(module)
            if other is not None and LAYERS.index(other) > LAYERS.index(own):
                upward.append(f"{path.relative_to(PACKAGE)}:{line} ({own}) imports {module} ({other})")
    assert not upward, "imports that go up a layer:\n" + "\n".join(sorted(set(upward)))


def test_every_subpackage_is_a_layer():
    packages = {p.parent.relative_to(PACKAGE).parts[0] for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE}
    assert packages == set(LAYERS)


def test_the_core_imports_without_slicer_vtk_or_qt():
    """Every xvrcore module imports in a process where importing slicer, vtk or any Qt binding fails."""
    names = [_dotted(p) for p in _modules() if p.name != "__main__.py"]
    script = (
        "import importlib, sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('slicer', 'vtk', 'vtkmodules', 'qt', 'ctk', 'PythonQt', 'PySide6',\n"
        "                                  'PySide2', 'PyQt5', 'PyQt6', 'MRMLCorePython', 'trame_slicer'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Refuse())\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print('ok', len(sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300, check=False)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-3000:]


def _public_modules() -> list[Path]:
    return [p for p in _modules() if not p.name.startswith("_") or p.name == "__init__.py"]


@pytest.mark.parametrize("path", _public_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_public_module_declares_its_api(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if path.name == "__init__.py" and not any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body):
        return  # a namespace that only documents itself
    declared = [n for n in tree.body if isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in n.targets)]
    assert declared, f"{path.relative_to(PACKAGE)} has no __all__"
    names = importlib.import_module(_dotted(path)).__all__  # as Python sees it (xvrcore/__init__ derives it)
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    defined |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    defined |= {(a.asname or a.name).split(".")[0] for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in n.names}
    lazy = [n.value for n in tree.body if isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "_API" for t in n.targets)]
    defined |= set(ast.literal_eval(lazy[0])) if lazy else set()  # names loaded on first access (xvrcore/__init__)
    missing = [name for name in names if name not in defined]
    assert not missing, f"{path.relative_to(PACKAGE)}: __all__ names undefined {missing}"


def test_the_top_level_api_is_cheap_and_complete():
    """``import xvrcore`` loads no torch; every name it offers resolves to the object its subpackage defines."""
    script = (
        "import importlib, sys, xvrcore\n"
        "assert 'torch' not in sys.modules, 'import xvrcore imported torch'\n"
        "for name, module in xvrcore._API.items():\n"
        "    assert getattr(xvrcore, name) is getattr(importlib.import_module(module), name), name\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def _oversized_reason(path: Path) -> bool:
    """A module above the size limit says why at its top ("One concept: ...")."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return "One concept:" in doc


def test_modules_stay_small():
    big = []
    for path in _modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES and not _oversized_reason(path):
            big.append(f"{path.relative_to(PACKAGE)}: {lines} lines")
    assert not big, "modules above ~400 lines that do not say why:\n" + "\n".join(big)


def test_functions_stay_small():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "functions above ~60 lines:\n" + "\n".join(long)
