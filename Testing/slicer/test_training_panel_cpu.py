"""The training panel without and with a GPU: it says which, offers the network this computer can train, and for
the CPU (Quick) network says what to expect in the figures of benchmarks/README.md ("No header at all").

``torch.cuda.is_available`` is the dependency that is replaced (this machine has no GPU); the panel's
reaction is what is tested.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer")
torch = pytest.importorskip("torch")
pytest.importorskip("PySide6")

README = Path(__file__).resolve().parents[2] / "benchmarks" / "README.md"


def open_panel(slicer_app, training_module, monkeypatch, cuda: bool):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Test GPU")
    panel = slicer_app.createPanel(training_module, "XVRTraining")
    monkeypatch.setattr(panel.logic, "ensureDependencies", lambda **kwargs: None)
    slicer_app.enter(panel)
    return panel


def benchmark_figures():
    """(minutes, median start mm, % below 1 mm) of the Quick profile, read from the benchmarks' README."""
    text = " ".join(README.read_text().split())
    section = text[text.index("**No header at all**"):text.index("**Finetuning from another patient**")]
    long = re.search(r"trained for (\d+) minutes.*?median of (\d+) mm mTRE.*?\((\d+) %\) below 1 mm", section)
    short = re.search(r"after the panel's default (\d+) minutes: a median of (\d+) mm.*?(\d+) of (\d+) below 1 mm",
                      section)
    return [(int(long[1]), int(long[2]), int(long[3])),
            (int(short[1]), int(short[2]), round(100 * int(short[3]) / int(short[4])))]


def test_without_a_gpu_the_panel_offers_the_quick_network_and_says_what_to_expect(slicer_app, training_module,
                                                                                   monkeypatch):
    panel = open_panel(slicer_app, training_module, monkeypatch, cuda=False)
    advice = panel.ui.deviceAdviceLabel.text
    assert "No GPU" in advice and "Quick" in advice
    figures = benchmark_figures()
    assert sorted(figures) == [(5, 66, 83), (20, 37, 87)]  # the README's words, as the brief quotes them
    for minutes, start_mm, below_percent in figures:
        assert f"{minutes} minutes" in advice and f"{start_mm} mm" in advice and f"{below_percent} %" in advice
    assert panel.ui.deviceAdviceLabel.parentWidget().objectName == "inputsCollapsibleButton"  # in view, not Advanced

    p = panel._parameterNode
    assert (p.device.value, p.profile.value) == ("auto", "automatic")
    button = panel.ui.useSuggestedProfileButton
    assert "Quick" in button.text and button.enabled
    button.click()
    assert (p.device.value, p.profile.value) == ("cpu", "quick")
    assert not button.enabled  # taken
    assert panel.ui.profileComboBox.currentText.startswith("Quick")  # the Advanced section shows it
    assert panel.logic.launcher.resolveProfile(p.profile.value, p.device.value) == "quick"
    p.device = type(p.device).auto  # changed back under Advanced: offered again
    assert button.enabled


def test_with_a_gpu_the_panel_offers_the_standard_network(slicer_app, training_module, monkeypatch):
    panel = open_panel(slicer_app, training_module, monkeypatch, cuda=True)
    advice = panel.ui.deviceAdviceLabel.text
    assert "GPU found (Test GPU)" in advice and "Standard" in advice
    assert "No GPU" not in advice and " mm" not in advice
    button = panel.ui.useSuggestedProfileButton
    assert "Standard" in button.text
    button.click()
    p = panel._parameterNode
    assert (p.device.value, p.profile.value) == ("cuda", "standard")
    assert panel.logic.launcher.resolveProfile("automatic", "auto") == "standard"  # automatic agrees
