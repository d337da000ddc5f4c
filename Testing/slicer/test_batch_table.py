"""The batch table as a user meets it after a batch registration: two results and one failure give three
rows; the rows sort; a row selects its X-ray and the X-ray selector selects its row; "Next to check" walks
through the unchecked X-rays, lowest quality first; a saved and reloaded scene shows the same rows.
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest

slicer = pytest.importorskip("slicer")
pytest.importorskip("torch")
pytest.importorskip("PySide6")

from panel_helpers import import_xrays, poll_until_finished


def _batch_job(xrays, truth, folder):
    """A RegistrationJob whose process reports view_a passed, view_b to check and view_c failed."""
    from xvrcore.geometry.pose import camera_pose
    from xvrcore.io.events import PREFIX
    from xvrcore.io.pose_json import write_pose_json
    from XVRCoreLib.xray_plane import xray_intrinsics
    from XVRRegistrationLib.job import RegistrationJob

    folder.mkdir(parents=True, exist_ok=True)
    events = []
    for name, quality, similarity in (("view_a", {"p_submillimetre": 0.95, "passed": True}, 0.91),
                                      ("view_b", {"p_submillimetre": 0.30, "passed": False}, 0.62)):
        result = write_pose_json(folder / f"{name}.json", camera_pose(
            xray_intrinsics(xrays[name]), truth[name], quality=quality, similarity={"final": similarity}))
        events.append({"event": "input_done", "stem": name, "sop_instance_uid": None, "json": str(result)})
    events.append({"event": "input_failed", "stem": "view_c", "sop_instance_uid": None,
                   "error": "view_c.dcm: the registration diverged (similarity 0.05)\ndetails"})
    code = "\n".join(f"print({PREFIX + json.dumps(e)!r})" for e in events) + "\nraise SystemExit(1)"
    inputs = [{name: (node, None) for name, node in xrays.items()}]
    return RegistrationJob([[sys.executable, "-c", code]], folder / "job", inputs).start()


@pytest.fixture
def batch(registration_panel, synthetic_xrays, tmp_path):
    """The panel after a batch of three X-rays: two results and one failure."""
    panel = registration_panel
    third = tmp_path / "cd" / "view_c.dcm"
    third.parent.mkdir()
    shutil.copy(synthetic_xrays["view_a"][0], third)
    xrays = import_xrays(panel, {**synthetic_xrays, "view_c": (third, None)}, ("view_a", "view_b", "view_c"))
    truth = {name: synthetic_xrays[name][1] for name in ("view_a", "view_b")}
    panel._job = _batch_job(xrays, truth, tmp_path / "results")
    panel._timer.start()
    poll_until_finished(panel)
    return panel, xrays


def _cells(panel) -> list:
    table = panel.ui.resultsTable
    return [[table.item(r, c).text() for c in range(table.columnCount)] for r in range(table.rowCount)]


def _names(panel) -> list:
    return [row[0] for row in _cells(panel)]


def _sort(panel, label) -> None:
    """The user picks an order in the sort box."""
    combo = panel.ui.batchSortComboBox
    index = combo.findText(label)
    assert index >= 0, [combo.itemText(i) for i in range(combo.count)]
    combo.setCurrentIndex(index)


def _selected(panel) -> list:
    return sorted({index.row() for index in panel.ui.resultsTable.selectedIndexes()})


def test_two_results_and_a_failure_give_three_rows_that_sort_and_follow_the_xray(batch, slicer_app):
    panel, xrays = batch
    cells = _cells(panel)
    assert len(cells) == 3
    # Sorted by status by default: the failure first, then the one to check, then the pass.
    assert [(row[0], row[1]) for row in cells] == [("view_c", "failed"), ("view_b", "CHECK"), ("view_a", "pass")]
    assert cells[0][5] == "view_c.dcm: the registration diverged (similarity 0.05)"  # its message, first line
    assert cells[0][2:4] == ["", ""] and cells[2][2:4] == ["0.910", "0.95"]
    assert any(kind == "errorDisplay" for kind, _ in slicer_app.dialogs)  # the failure is also said in a dialog

    _sort(panel, "Name")
    assert _names(panel) == ["view_a", "view_b", "view_c"]
    _sort(panel, "Similarity (lowest first)")
    assert _names(panel) == ["view_c", "view_b", "view_a"]
    _sort(panel, "Quality (lowest first)")
    assert _names(panel) == ["view_c", "view_b", "view_a"]
    _sort(panel, "Name")

    p = panel._parameterNode
    panel.ui.resultsTable.selectRow(1)  # the user clicks view_b's row
    assert p.xrayVolume is xrays["view_b"]
    assert panel.ui.xrayVolumeSelector.currentNode() is xrays["view_b"]
    assert p.outputTransform is panel.logic.poses.poseNode(xrays["view_b"])
    assert _selected(panel) == [1]
    panel.ui.xrayVolumeSelector.userSelect(xrays["view_c"])  # and the other way: the selector moves the row
    assert _selected(panel) == [2]
    panel.ui.resultsTable.selectRow(0)
    assert p.xrayVolume is xrays["view_a"] and _selected(panel) == [0]


def test_next_to_check_walks_the_unchecked_lowest_quality_first(batch):
    panel, xrays = batch
    p = panel._parameterNode
    panel.ui.xrayVolumeSelector.userSelect(xrays["view_a"])
    seen = []
    for _ in range(3):
        panel.ui.nextToCheckButton.click()
        seen.append(p.xrayVolume.GetName())
    assert seen == ["view_c", "view_b", "view_a"]  # failed, then to check, then passed; then round again

    panel.ui.nextToCheckButton.click()  # view_c
    panel.ui.markCheckedButton.click()
    panel.ui.nextToCheckButton.click()
    assert p.xrayVolume is xrays["view_b"]
    panel.ui.markCheckedButton.click()
    panel.ui.nextToCheckButton.click()
    assert p.xrayVolume is xrays["view_a"]
    assert panel.ui.nextToCheckButton.enabled is False  # view_a is the last one unchecked: nothing after it
    panel.ui.markCheckedButton.click()
    checked = {row[0]: row[4] for row in _cells(panel)}
    assert checked == {"view_a": "yes", "view_b": "yes", "view_c": "yes"}
    assert not panel.ui.nextToCheckButton.enabled


def test_the_table_survives_saving_and_loading_the_scene(batch, tmp_path):
    from XVRCoreLib.scene import load_scene_mrb, save_scene_mrb

    panel, xrays = batch
    panel.ui.xrayVolumeSelector.userSelect(xrays["view_b"])
    panel.ui.markCheckedButton.click()
    before = _cells(panel)
    bundle = save_scene_mrb(slicer.mrmlScene, tmp_path / "case.mrb")
    slicer.app.closeScene()
    assert panel.ui.resultsTable.rowCount == 0  # a closed scene has no rows
    load_scene_mrb(slicer.mrmlScene, bundle)

    assert _cells(panel) == before
    loaded = {node.GetName(): node for node in panel.logic.xrays.xrayNodes(slicer.mrmlScene)}
    panel.ui.resultsTable.selectRow(_names(panel).index("view_a"))
    assert panel._parameterNode.xrayVolume is loaded["view_a"]
    panel.ui.registeredPoseButton.click()  # the registered pose came back with the scene
    assert panel.logic.review.registeredPose(loaded["view_a"]) is not None
