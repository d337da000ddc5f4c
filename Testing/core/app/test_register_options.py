"""The options users tune at the command line: ``--settings``, the common options over it,
``--show-settings`` (no inputs needed, read back by ``--settings``), and train's detector options."""

import pytest
from xvrcore.app.cli import _training_config, build_parser, main
from xvrcore.registration.settings import DEFAULT_STAGES, RegistrationSettings
from xvrcore.registration.settings_file import read_settings_file


def _shown(capsys, *options) -> str:
    capsys.readouterr()
    assert main(["register", "--show-settings", *map(str, options)]) == 0
    return capsys.readouterr().out


def test_show_settings_needs_no_inputs_and_reads_back(tmp_path, capsys):
    text = _shown(capsys)
    path = tmp_path / "shown.toml"
    path.write_text(text)
    assert read_settings_file(path) == RegistrationSettings()  # the defaults, exactly
    assert _shown(capsys, "--settings", path) == text  # and printed the same when read back


def test_explicit_options_override_the_settings_file(tmp_path, capsys):
    path = tmp_path / "mine.toml"
    path.write_text("patience = 4\nthreshold = 0.01\nretry_searches = []\n")
    shown = tmp_path / "shown.toml"
    shown.write_text(_shown(capsys, "--settings", path, "--patience", 9, "--n-itrs", 11, "--lr_rot", 0.03,
                            "--max_n_plateaus", 1, "--metric", "mix", "--time-budget", 20))
    read = read_settings_file(shown)
    assert (read.patience, read.threshold, read.retry_searches, read.max_reductions) == (9, 0.01, (), 0)
    assert [s.iterations for s in read.stages] == [11] * len(DEFAULT_STAGES)
    assert {s.lr_rotation for s in read.stages} == {0.03} and {s.similarity_weight for s in read.stages} == {0.5}
    assert read.time_budget_s == 20.0


def test_no_retry_and_scales_show_in_the_settings(tmp_path, capsys):
    shown = tmp_path / "shown.json"
    shown.write_text("{}")  # JSON is read as well: an empty file means the defaults
    path = tmp_path / "shown.toml"
    path.write_text(_shown(capsys, "--settings", shown, "--no-retry", "--scales", 24, 48, 96))
    read = read_settings_file(path)
    assert read.retry_searches == () and [s.size for s in read.stages] == [24, 48, 96]


@pytest.mark.parametrize("options, words", [
    (["--n-itrs", "1", "2"], "--n-itrs: give one value or one per stage (4 stages), got 2"),
    (["--settings", "nowhere.toml"], "nowhere.toml: settings file not found"),
])
def test_settings_errors_are_one_clear_line(capsys, options, words):
    assert main(["register", "--show-settings", *options]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_bad_settings_file_stops_register_before_any_input(tmp_path, capsys):
    path = tmp_path / "typo.toml"
    path.write_text("[[stages]]\nsize = 40\niterations = 5\nlr_rot = 0.1\nlr_translation = 1.0\n")
    code = main(["register", str(tmp_path / "x.dcm"), "--volume", str(tmp_path / "ct.nii.gz"), "--settings", str(path),
                 "--output", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "typo.toml: unknown key 'stages[0].lr_rot'" in err and "lr_rotation" in err
    assert not (tmp_path / "out").exists()


def test_train_takes_its_detector_from_the_options():
    def config(*options):
        return _training_config(build_parser().parse_args(["train", "--volume", "ct.nii.gz", "--output", "o", *options]))

    preset = config()
    assert (preset.sdd, preset.pixel_spacing, preset.image_size) == (None, None, 128)  # the preset's detector
    given = config("--sdd", "1100", "--height", "96", "--delx", "2.5")  # xvr's names
    assert (given.sdd, given.pixel_spacing, given.image_size) == (1100.0, 2.5, 96)
    assert config("--pixel-spacing", "1.5", "--image-size", "64").pixel_spacing == 1.5
