"""The registration panel at the width of Slicer's module panel (about 400 px), the whole of its content
in height, after an X-ray was imported and registered: grabbed offscreen from the real widget on its real
``.ui`` (Resources/Screenshots/xvrregistration_panel.png with XVR_WRITE_SCREENSHOTS=1; the README shows it).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
pytest.importorskip("torch")
pytest.importorskip("PySide6")

from panel_helpers import fake_registration_result, import_xrays, poll_until_finished

SCREENSHOTS = Path(__file__).resolve().parents[2] / "Resources" / "Screenshots"
MODULE_PANEL_WIDTH = 400  # Slicer's module panel in its default main window


def _grab(widget) -> np.ndarray:
    from PySide6 import QtGui

    image = widget.grab().toImage().convertToFormat(QtGui.QImage.Format_RGB888)
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, : 3 * image.width()].reshape(image.height(), image.width(), 3).copy()


def test_registration_panel_at_module_panel_width(slicer_app, registration_panel, synthetic_xrays, tmp_path):
    from PIL import Image
    from PySide6 import QtWidgets

    panel = registration_panel
    xray = import_xrays(panel, synthetic_xrays, ("view_a",))["view_a"]
    panel._parameterNode.outputDirectory = Path("/data/case-001/xvr")  # shown only, nothing is written there
    panel._job = fake_registration_result(xray, synthetic_xrays["view_a"][1], tmp_path,
                              quality={"similarity": 0.91, "p_submillimetre": 0.87, "passed": True})
    panel._timer.start()
    poll_until_finished(panel)
    assert panel.ui.resultsTable.rowCount == 1

    widget, W = panel.parent, QtWidgets.QWidget  # W's methods: PythonQt reads Qt properties as attributes
    # The module panel's width, or the panel's own minimum if that is wider (Slicer would scroll sideways):
    # the minimum depends on the fonts the machine has, so it is reported by the picture, not asserted.
    width = max(MODULE_PANEL_WIDTH, W.minimumSizeHint(widget).width())
    height = W.heightForWidth(widget, width) if W.hasHeightForWidth(widget) else -1
    widget.setFixedSize(width, height if height > 0 else W.sizeHint(widget).height())
    widget.show()
    QtWidgets.QApplication.processEvents()
    picture = _grab(widget)
    assert picture.shape[1] == width and picture.shape[0] > 800
    # Everything laid out inside the picture: no widget of the panel reaches past its right or bottom edge.
    for child in widget.findChildren(QtWidgets.QWidget):
        if W.isVisibleTo(child, widget):
            corner = W.mapTo(child, widget, W.rect(child).bottomRight())
            assert corner.x() < width and corner.y() < picture.shape[0], W.objectName(child)
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 20  # text, frames, widgets: not blank
    Image.fromarray(picture).save(tmp_path / "xvrregistration_panel.png")
    if os.environ.get("XVR_WRITE_SCREENSHOTS"):
        Image.fromarray(picture).save(SCREENSHOTS / "xvrregistration_panel.png")
    widget.hide()
