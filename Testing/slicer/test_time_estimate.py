"""The time estimate shown before Start (issue 18): the core's estimate for the selected X-ray's detector size and
the chosen device, updated through the panel's parameter-node observer when the X-ray or the device changes.
"""

from __future__ import annotations

import os

import pytest

slicer = pytest.importorskip("slicer")
pytest.importorskip("torch")
pytest.importorskip("PySide6")

from panel_helpers import import_xrays
from xvrcore.registration.timing import estimate_seconds


def test_the_label_shows_the_estimate_for_the_xray_and_follows_the_device(registration_panel, synthetic_xrays):
    from xvrcore.xray import read_xray
    from XVRRegistrationLib.time_estimate import xraySize

    panel = registration_panel
    assert panel.ui.timeEstimateLabel.text == ""  # no X-ray yet: nothing to estimate
    xrays = import_xrays(panel, synthetic_xrays)
    p = panel._parameterNode
    panel.ui.xrayVolumeSelector.userSelect(xrays["view_a"])
    rows, cols = read_xray(synthetic_xrays["view_a"][0]).pixels.shape
    assert xraySize(xrays["view_a"]) == (rows, cols) == (80, 96)
    threads = os.cpu_count()

    combo = panel.ui.deviceComboBox
    combo.setCurrentIndex(combo.findText("CPU"))  # the user picks the device
    cpu = estimate_seconds(rows, cols, "cpu", threads).text()
    assert cpu in panel.ui.timeEstimateLabel.text and "CPU" in panel.ui.timeEstimateLabel.text
    combo.setCurrentIndex(combo.findText("GPU (CUDA)"))
    cuda = estimate_seconds(rows, cols, "cuda", threads).text()
    assert cuda != cpu
    assert cuda in panel.ui.timeEstimateLabel.text and "GPU" in panel.ui.timeEstimateLabel.text

    p.registerAll = True  # both X-rays: the larger one's figures and the total
    total = round(2 * estimate_seconds(rows, cols, "cuda", threads).median_s)
    assert panel.ui.timeEstimateLabel.text.endswith(f"2 X-rays: about {total} s in all")


def test_the_estimate_grows_with_the_detector(registration_module):
    """A larger X-ray reads and downsamples for longer: the panel's text follows the core's figures."""
    from XVRRegistrationLib import time_estimate

    class Image:
        def __init__(self, cols, rows):
            self.dims = (cols, rows, 1)

        def GetDimensions(self):
            return self.dims

    class Xray:
        def __init__(self, cols, rows):
            self.image = Image(cols, rows)

        def GetImageData(self):
            return self.image

    small = time_estimate.estimateText([Xray(256, 256)], "cpu", threads=2)
    large = time_estimate.estimateText([Xray(4096, 4096)], "cpu", threads=2)
    assert estimate_seconds(256, 256, "cpu", 2).text() in small
    assert estimate_seconds(4096, 4096, "cpu", 2).text() in large
    assert small != large
    assert time_estimate.estimateText([], "cpu") == ""
