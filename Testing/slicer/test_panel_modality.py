"""The CT / MRA choice and the vessel segmentation in both panels reach the worker's command line."""

from __future__ import annotations

import pytest


def _value(command, flag):
    return command[command.index(flag) + 1]


@pytest.mark.parametrize("module_name", ["XVRRegistration", "XVRTraining"])
def test_choosing_mra_in_the_panel_sets_the_parameter(slicer_app, registration_module, training_module, module_name,
                                                      monkeypatch):
    module = registration_module if module_name == "XVRRegistration" else training_module
    panel = slicer_app.createPanel(module, module_name)
    monkeypatch.setattr(panel.logic, "ensureDependencies", lambda **kwargs: None)
    slicer_app.enter(panel)
    combo = panel.ui.modalityComboBox
    combo.setCurrentIndex(combo.findText("MRA (vessels)"))
    assert panel._parameterNode.modality.value == "mra"


def test_registration_command_modality_and_vessels(registration_module):
    from XVRRegistrationLib.launch import registrationCommand

    mra = registrationCommand("py", ["a.dcm"], "ct.nrrd", "out", modality="mra", vesselsPath="job/vessels.nrrd")
    assert _value(mra, "--modality") == "mra" and _value(mra, "--vessels") == "job/vessels.nrrd"
    auto = registrationCommand("py", ["a.dcm"], "ct.nrrd", "out")
    assert "--modality" not in auto and "--vessels" not in auto  # automatic: the core decides


def test_training_command_modality_and_vessels(training_module):
    from XVRTrainingLib.launch import trainingCommand

    mra = trainingCommand("py", "ct.nii.gz", "out", modality="mra", vesselsPath="inputs/vessels.nii.gz")
    assert _value(mra, "--modality") == "mra" and _value(mra, "--vessels") == "inputs/vessels.nii.gz"
    assert "--modality" not in trainingCommand("py", "ct.nii.gz", "out")
