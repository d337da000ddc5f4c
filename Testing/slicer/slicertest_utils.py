"""Helpers shared by the Slicer-side tests (imported by conftest.py and the test files)."""

from __future__ import annotations

import importlib.util
import sys
import types
import unittest
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TORSO = Path("open") / "ct" / "torso_totalseg"


def new_scene(cache_dir: Path):
    """A scene wired like Slicer's application does: module logics, IO managers (for .mrb), colours."""
    slicer = pytest.importorskip("slicer")
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    color_logic = app_logic.GetColorLogic()
    color_logic.SetMRMLScene(scene)
    color_logic.AddDefaultColorNodes()
    app_logic.SetModuleLogic("Colors", color_logic)
    logics = {}
    for name, cls in [("SubjectHierarchy", "vtkSlicerSubjectHierarchyModuleLogic"), ("Markups", "vtkSlicerMarkupsLogic"),
                      ("Segmentations", "vtkSlicerSegmentationsModuleLogic"), ("Volumes", "vtkSlicerVolumesLogic"),
                      ("Transforms", "vtkSlicerTransformLogic"), ("Sequences", "vtkSlicerSequencesLogic")]:
        logic = getattr(slicer, cls)()
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app_logic)
        app_logic.SetModuleLogic(name, logic)
        logics[name] = logic
    remote = slicer.vtkMRMLRemoteIOLogic()
    remote.SetMRMLScene(scene)
    remote.SetMRMLApplicationLogic(app_logic)
    cache_dir.mkdir(parents=True, exist_ok=True)
    remote.GetCacheManager().SetRemoteCacheDirectory(str(cache_dir))
    data_io = slicer.vtkDataIOManagerLogic()
    data_io.SetMRMLScene(scene)
    data_io.SetMRMLApplicationLogic(app_logic)
    data_io.SetAndObserveDataIOManager(remote.GetDataIOManager())
    remote.AddDataIOToScene()
    scene._xvr_keep = (app_logic, logics, remote, data_io)  # the logics live as long as the scene
    return scene


# ---- the module scripts, importable without the Slicer application -----------------------------------------


def _stub_application_modules() -> None:
    slicer = pytest.importorskip("slicer")
    if "slicer.ScriptedLoadableModule" in sys.modules:
        return

    base = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        """As Slicer's: the module name from the class name, the parent panel's layout, ``resourcePath``."""

        def __init__(self, parent=None):
            self.moduleName = type(self).__name__.removesuffix("Widget")
            self.parent = parent
            self.layout = parent.layout() if parent is not None else None

        def resourcePath(self, filename):
            return str(REPO / self.moduleName / "Resources" / filename)

        def setup(self):
            pass

        def cleanup(self):
            pass

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            self.moduleName = type(self).__name__.removesuffix("Logic")
            self.isSingletonParameterNode = True

        def getParameterNode(self):
            """As Slicer's: the module's singleton vtkMRMLScriptedModuleNode in ``slicer.mrmlScene``."""
            scene = slicer.mrmlScene
            node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node is None:
                node = slicer.vtkMRMLScriptedModuleNode()
                node.SetSingletonTag(self.moduleName)
                node.SetName(scene.GenerateUniqueName(self.moduleName))
                node.SetAttribute("ModuleName", self.moduleName)
                node = scene.AddNode(node)
            elif node.GetAttribute("ModuleName") != self.moduleName:
                node.SetAttribute("ModuleName", self.moduleName)  # a scene close resets the node
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=0):
            pass

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(base, cls.__name__, cls)

    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text

    import parameter_wrapper_emulation

    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    parameter_wrapper_emulation.install(wrapper)  # our emulation of Slicer's wrapper (see its docstring)
    for name, module in (("ScriptedLoadableModule", base), ("i18n", i18n), ("parameterNodeWrapper", wrapper)):
        sys.modules[f"slicer.{name}"] = module
        setattr(slicer, name, module)


def load_module_script(module: str):
    """Import ``<module>/<module>.py`` as the Slicer application would (with the stubs above).

    Slicer puts a scripted module's folder on ``sys.path`` when it registers the module, so the module's
    ``<module>Lib`` package (and anything else beside the script) imports the same way here.
    """
    _stub_application_modules()
    if module in sys.modules:
        return sys.modules[module]
    folder = str(REPO / module)
    if folder not in sys.path:
        sys.path.append(folder)
    spec = importlib.util.spec_from_file_location(module, REPO / module / f"{module}.py")
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module] = loaded
    spec.loader.exec_module(loaded)
    return loaded


def true_pose(center, primary=20.0, secondary=-8.0, roll=2.0, offset=(4.0, -3.0), sod=650.0):
    """A C-arm pose the DICOM header cannot express exactly (in-plane roll, isocentre off the ray)."""
    import torch
    from xvrcore.geometry.positioner import pose_from_positioner
    from xvrcore.geometry.rotations import axis_angle_to_matrix

    nominal = pose_from_positioner(primary, secondary, sod, torch.as_tensor(np.asarray(center, dtype=np.float64)))
    pose = nominal.clone()
    pose[:3, :3] = axis_angle_to_matrix(nominal[:3, 2] * np.deg2rad(roll)) @ nominal[:3, :3]
    pose[:3, 3] = nominal[:3, 3] + nominal[:3, :3] @ torch.tensor([*offset, 0.0], dtype=torch.float64)
    return pose


# ---- the dependency installation ---------------------------------------------------------------------------


class InstallerStandIns:
    """Stand-ins recording what the installation calls: PyTorchUtils (the PyTorch extension), ``slicer.packaging``
    (Slicer >= 5.11; None: Slicer 5.10, where importing it fails) and ``slicer.util.pip_install``/``restart``."""

    def __init__(self, monkeypatch, packaging: bool, torch_installed: bool = False, while_downloading=None):
        import sys
        import types

        import slicer
        import slicer.util

        self.calls: list[tuple] = []
        self.torch_installed = torch_installed
        stand_in = self

        class PyTorchUtilsLogic:
            def torchInstalled(self):
                return stand_in.torch_installed

            def installTorch(self, askConfirmation=True, torchVersionRequirement=None, **kwargs):
                stand_in.calls.append(("installTorch", askConfirmation, torchVersionRequirement))
                # light-the-torch's output as slicer.util.logProcessOutput prints it, line by line
                print("Collecting torch>=2.2", flush=True)
                print("  Downloading torch-2.5.1-cp312-cp312-manylinux1_x86_64.whl (2.3 GB)\n  42% |####", end="")
                print(" |", flush=True)
                if while_downloading is not None:
                    while_downloading()  # what the user sees while the download runs
                stand_in.torch_installed = True
                return types.ModuleType("torch")

        torch_utils = types.ModuleType("PyTorchUtils")
        torch_utils.PyTorchUtilsLogic = PyTorchUtilsLogic
        monkeypatch.setitem(sys.modules, "PyTorchUtils", torch_utils)
        if packaging:
            module = types.ModuleType("slicer.packaging")
            module.pip_ensure = lambda requirements, **kwargs: self.calls.append(("pip_ensure", list(requirements), kwargs))
            monkeypatch.setitem(sys.modules, "slicer.packaging", module)
        else:
            monkeypatch.setitem(sys.modules, "slicer.packaging", None)  # import slicer.packaging fails
            monkeypatch.delattr(slicer, "packaging", raising=False)
        monkeypatch.setattr(slicer.util, "pip_install", lambda requirements, **kw: self.calls.append(("pip_install", list(requirements))),
                            raising=False)
        monkeypatch.setattr(slicer.util, "restart", lambda: self.calls.append(("restart",)), raising=False)

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]
