"""Registration settings as a file: TOML and JSON round trips, clear errors naming the file and the
key, and the common options (scales, iterations, steps, patience, plateaus, metric) applied on top."""

import json
from dataclasses import replace

import pytest
from xvrcore.registration.settings import DEFAULT_STAGES, RegistrationSettings, SearchSettings, Stage
from xvrcore.registration.settings_file import (
    SettingsFileError,
    read_settings_file,
    settings_text,
    tuned_settings,
)

ODD = replace(RegistrationSettings(), search=None, time_budget_s=12.5, retry_searches=(SearchSettings(step_mm=7.5),),
              stages=(Stage(48, 15, 2e-3, 0.5, patience=2), Stage(96, 7, 1e-5, 0.05, 0.25, max_reductions=0)))


@pytest.mark.parametrize("form", ["toml", "json"])
@pytest.mark.parametrize("settings", [RegistrationSettings(), ODD], ids=["defaults", "odd"])
def test_written_settings_read_back_unchanged(tmp_path, form, settings):
    path = tmp_path / f"s.{form}"
    path.write_text(settings_text(settings, form))
    assert read_settings_file(path) == settings


def test_a_partial_file_keeps_the_defaults_for_the_rest(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("patience = 5\n[search]\nstep_mm = 20.0\n")
    read = read_settings_file(path)
    assert read == replace(RegistrationSettings(), patience=5, search=SearchSettings(step_mm=20.0))


@pytest.mark.parametrize("text, words", [
    ("patiense = 5\n", ["unknown key 'patiense'", "valid keys: stages, search, retry_searches", "patience"]),
    ("[[stages]]\nsize = 40\niterations = 9\nlr_rot = 0.1\nlr_translation = 1.0\n",
     ["unknown key 'stages[0].lr_rot'", "lr_rotation"]),
    ('patience = "5"\n', ["patience must be an integer, got str '5'"]),
    ("threshold = -1.0\n", ["threshold must be ≥ 0, got -1.0"]),
    ("[[stages]]\nsize = 40\niterations = 9\nlr_rotation = 0.1\nlr_translation = 1.0\nsimilarity_weight = 1.5\n",
     ["stages[0].similarity_weight must be ≥ 0 and ≤ 1, got 1.5"]),
    ("[[stages]]\nsize = 40\niterations = 9\n", ["stages[0] needs lr_rotation, lr_translation"]),
    ("stages = []\n", ["stages must list at least one value"]),
    ('method = "cubic"\n', ["method must be one of"]),
    ("[search]\ntilt_deg = []\n", ["search.tilt_deg must list at least one value"]),
    ("retry_below = 2\n", ["retry_below must be ≥ -1 and ≤ 1, got 2.0"]),
    ("patience = \n", ["not valid TOML"]),
])
def test_bad_settings_are_refused_naming_the_file_and_the_key(tmp_path, text, words):
    path = tmp_path / "tuned.toml"
    path.write_text(text)
    with pytest.raises(SettingsFileError) as error:
        read_settings_file(path)
    message = str(error.value)
    assert message.startswith(str(path)), message
    for word in words:
        assert word in message, message


def test_json_settings_and_file_errors(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"search": None, "max_reductions": 1}))
    assert read_settings_file(path) == replace(RegistrationSettings(), search=None, max_reductions=1)
    with pytest.raises(SettingsFileError, match="must be .toml or .json"):
        read_settings_file(tmp_path / "s.yaml")
    with pytest.raises(SettingsFileError, match="missing.toml: settings file not found"):
        read_settings_file(tmp_path / "missing.toml")
    path.write_text("[1, 2]")
    with pytest.raises(SettingsFileError, match="must be a table of keys"):
        read_settings_file(path)


def test_scales_rebuild_the_schedule_from_the_stages_at_the_same_place():
    two = tuned_settings(RegistrationSettings(), scales=[32, 64])
    assert [s.size for s in two.stages] == [32, 64]
    assert two.stages[0] == replace(DEFAULT_STAGES[0], size=32)  # the first stage's steps and weight
    assert two.stages[1] == replace(DEFAULT_STAGES[-1], size=64)  # the last one's
    one = tuned_settings(RegistrationSettings(), scales=[100])
    assert one.stages == (replace(DEFAULT_STAGES[-1], size=100),)


def test_per_stage_options_take_one_value_or_one_per_stage():
    same = tuned_settings(RegistrationSettings(), iterations=[7], lr_rotation=[0.5])
    assert [s.iterations for s in same.stages] == [7] * len(DEFAULT_STAGES)
    assert {s.lr_rotation for s in same.stages} == {0.5}
    each = tuned_settings(RegistrationSettings(), scales=[30, 60], lr_translation=[3.0, 1.0])
    assert [s.lr_translation for s in each.stages] == [3.0, 1.0]
    with pytest.raises(ValueError, match=r"iterations: give one value or one per stage \(4 stages\), got 2"):
        tuned_settings(RegistrationSettings(), iterations=[1, 2])


def test_patience_plateaus_and_metric_apply_to_every_stage():
    tuned = tuned_settings(RegistrationSettings(), patience=4, max_plateaus=3, metric="gncc", threshold=1e-3)
    assert (tuned.patience, tuned.max_reductions, tuned.threshold) == (4, 2, 1e-3)  # N plateaus: N − 1 drops
    assert all(s.patience is None and s.max_reductions is None for s in tuned.stages)  # no stage keeps its own
    assert {s.similarity_weight for s in tuned.stages} == {0.0}
    assert tuned_settings(RegistrationSettings()) == RegistrationSettings()  # nothing given: unchanged
