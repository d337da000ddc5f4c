"""Quality scores: the logistic calibration recovers a known model and flags low similarities."""

import numpy as np
import pytest
from xvrcore.metrics.quality import DEFAULT_MODEL, QualityModel, assess, fit, load_model, save_model


def test_fit_recovers_a_known_logistic_model():
    rng = np.random.default_rng(0)
    truth = QualityModel(intercept=-12.0, slope=20.0)
    sim = rng.uniform(0.2, 1.0, 4000)
    success = rng.random(4000) < np.array([truth.probability(s) for s in sim])
    errors = np.where(success, 0.3, 10.0)
    model = fit(sim, errors)
    assert model.intercept == pytest.approx(-12.0, rel=0.15) and model.slope == pytest.approx(20.0, rel=0.15)
    assert model.similarity_threshold == pytest.approx(0.6, abs=0.02)


def test_assess_flags_low_similarity_and_round_trips(tmp_path):
    low, high = assess(0.2), assess(0.95)
    assert not low["passed"] and high["passed"]
    assert 0 <= low["p_submillimetre"] < high["p_submillimetre"] <= 1
    assert assess(float("nan"))["passed"] is False
    path = save_model(tmp_path / "quality.json", DEFAULT_MODEL)
    assert load_model(path) == DEFAULT_MODEL


def test_fit_needs_both_outcomes():
    with pytest.raises(ValueError, match="successes and failures"):
        fit([0.9, 0.8, 0.85, 0.95], [0.1, 0.2, 0.3, 0.4])
