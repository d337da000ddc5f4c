"""The panels' job files: the inputs a job reads (the CT copy, X-ray DICOMs written from nodes) live in a folder
of the job's own under the temporary directory, which goes when the job ends, stays with "keep temporary
files" on, and stays after a failure with the folder named in the outcome; the output folder gets only results.

The worker process is a small script standing in for ``python -m xvrcore train|register`` (the real ones are
tested in test_logic): it checks that its inputs exist while it runs, writes a result and exits with a given
code. What is tested is the launchers', the jobs' and the panel's handling of the files.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer")
pytest.importorskip("torch")

from panel_helpers import poll_until_finished
from XVRCoreLib import job_files, volumes


def fake_worker(folder, returncode: int):
    """An executable standing in for the Python that runs ``-m xvrcore <command> ...``: it records which of its
    ``--volume`` and X-ray inputs exist, writes ``result.json`` into ``--output`` and exits with ``returncode``."""
    from xvrcore.io.events import PREFIX

    script = folder / f"worker_{returncode}.py"
    script.write_text(f"""#!{sys.executable}
import json, pathlib, sys
args = sys.argv[1:]
output = pathlib.Path(args[args.index("--output") + 1])
volume = pathlib.Path(args[args.index("--volume") + 1])
xrays = [a for a in args[3:] if a.endswith(".dcm")] if args[2] == "register" else []
output.mkdir(parents=True, exist_ok=True)
seen = {{"volume": str(volume), "volume_exists": volume.is_file(), "xrays_exist": [pathlib.Path(x).is_file() for x in xrays]}}
(output / "result.json").write_text(json.dumps(seen))
print({PREFIX!r} + json.dumps({{"event": "finished", "model": str(output)}}))
sys.exit({returncode})
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def files_under(folder) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def ct(scene, torso_crop):
    return volumes.volume_node_from_volume(scene, torso_crop[0], name="CT")


def test_a_finished_training_leaves_only_its_results_and_no_temporary_folder(training_module, ct, tmp_path):
    temporary = tmp_path / "slicer-temp"
    logic = training_module.XVRTrainingLogic(temporaryBase=temporary)
    out = tmp_path / "run"
    job = logic.launcher.startTraining(ct, None, out, device="cpu", python=fake_worker(tmp_path, 0))
    inputs = job.jobFolder.path
    assert inputs.parent == temporary / "XVR" and out not in inputs.parents
    assert job.command[job.command.index("--cancel-file") + 1] == str(inputs / "CANCEL")  # not in the run folder
    result = job.wait(timeout=60)
    assert job.returncode == 0, result["log"]
    seen = json.loads((out / "result.json").read_text())
    assert seen["volume_exists"] and seen["volume"].startswith(str(inputs))  # the CT was there while it ran
    assert files_under(out) == {"result.json"}  # no CT copy, no inputs folder, no cancel file
    assert not inputs.exists() and job.keptFolder is None
    assert list((temporary / "XVR").iterdir()) == []


def test_keep_temporary_files_from_the_panel_keeps_the_folder(slicer_app, training_panel, training_module, ct,
                                                              tmp_path):
    panel = training_panel
    assert not panel.ui.keepTemporaryFilesCheckBox.checked  # off by default
    panel.ui.keepTemporaryFilesCheckBox.checked = True  # as the user ticks it in Advanced
    assert job_files.keep_temporary_files()
    other = slicer_app.createPanel(training_module, "XVRTraining")  # the one setting, read by every panel
    assert other.ui.keepTemporaryFilesCheckBox.checked

    panel._job = panel.logic.launcher.startTraining(ct, None, tmp_path / "run", device="cpu",
                                                    python=fake_worker(tmp_path, 0))
    panel._timer.start()
    poll_until_finished(panel)
    inputs = panel._job.jobFolder.path
    assert inputs.parent == Path(slicer_app.temporaryPath) / "XVR"  # Slicer's temporary directory by default
    assert (inputs / "volume.nii.gz").is_file()
    assert f"Job files kept in {inputs}" in panel.ui.statusLabel.text
    assert files_under(tmp_path / "run") == {"result.json"}
    assert slicer_app.dialogs == []


def test_a_failed_training_keeps_its_files_and_names_the_folder(slicer_app, training_panel, ct, tmp_path):
    panel = training_panel
    panel._job = panel.logic.launcher.startTraining(ct, None, tmp_path / "run", device="cpu",
                                                    python=fake_worker(tmp_path, 3))
    panel._timer.start()
    poll_until_finished(panel)
    inputs = panel._job.jobFolder.path
    assert (inputs / "volume.nii.gz").is_file()
    assert "Training failed (exit code 3)" in panel.ui.statusLabel.text and str(inputs) in panel.ui.statusLabel.text
    assert [kind for kind, text in slicer_app.dialogs if str(inputs) in text] == ["errorDisplay"]
    assert files_under(tmp_path / "run") == {"result.json"}


def test_a_job_that_cannot_start_leaves_no_folder(training_module, ct, tmp_path):
    temporary = tmp_path / "slicer-temp"
    logic = training_module.XVRTrainingLogic(temporaryBase=temporary)
    with pytest.raises(OSError):
        logic.launcher.startTraining(ct, None, tmp_path / "run", device="cpu", python=str(tmp_path / "no-python"))
    assert list((temporary / "XVR").iterdir()) == []


@pytest.mark.parametrize("returncode", [0, 3])
def test_registration_inputs_live_in_the_jobs_folder(registration_module, scene, ct_node, synthetic_xrays, tmp_path,
                                                     returncode):
    """X-rays whose DICOM is gone are written from their nodes: into the job's folder, never the output."""
    logic = registration_module.XVRRegistrationLogic()
    logic.launcher.temporaryBase = tmp_path / "slicer-temp"
    xray = logic.xrays.importXray(synthetic_xrays["view_a"][0], scene, ct_node)
    xray.SetAttribute("XVR.Source", str(tmp_path / "moved-away.dcm"))  # the DICOM folder was moved
    out = tmp_path / "results"
    job = logic.launcher.startRegistration([xray], ct_node, None, "dicom", out, device="cpu",
                                           python=fake_worker(tmp_path, returncode))
    inputs = job.jobDirectory
    assert inputs.parent == tmp_path / "slicer-temp" / "XVR"
    final = job.wait(timeout=60)
    seen = json.loads((out / "result.json").read_text())
    assert seen["volume_exists"] and seen["volume"].startswith(str(inputs)) and seen["xrays_exist"] == [True]
    assert files_under(out) == {"result.json"}  # no CT copy, no .xvr-job folder
    if returncode == 0:
        assert not inputs.exists() and str(inputs) not in final["status"]
    else:
        assert {"volume.nrrd"} <= files_under(inputs) and any(p.startswith("xrays/") for p in files_under(inputs))
        assert "Finished with errors" in final["status"] and str(inputs) in final["status"]


def test_the_registration_panels_checkbox_is_the_same_setting(slicer_app, registration_panel, training_module):
    panel = registration_panel
    assert not panel.ui.keepTemporaryFilesCheckBox.checked and not job_files.keep_temporary_files()
    panel.ui.keepTemporaryFilesCheckBox.checked = True  # ticked in XVR Registration
    assert job_files.keep_temporary_files()
    training = slicer_app.createPanel(training_module, "XVRTraining")
    assert training.ui.keepTemporaryFilesCheckBox.checked  # and seen by XVR Training
    training.ui.keepTemporaryFilesCheckBox.checked = False
    assert not job_files.keep_temporary_files()
