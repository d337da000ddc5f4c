"""The command-line builders: every list they build parses back to the values passed; bad values are refused."""

import subprocess
import sys
from pathlib import Path

import pytest
from xvrcore.app.cli import _start_method, build_parser, main
from xvrcore.app.commands import REGISTER_OPTIONS, TRAIN_OPTIONS, register_command, train_command

REGISTER_CASES = [
    {"volume": "ct.nrrd", "output": "out"},
    {"volume": "ct.nrrd", "output": Path("out dir"), "labels": "labels.nrrd", "label_names": "names.ctbl",
     "structures": [3, 4, 12], "landmarks": "lm.json", "frame": 3, "mask_frame": 0, "pixel_spacing": (0.3, 0.31),
     "sdd": 1020, "sod": 785.4, "primary_angle": -30.25, "secondary_angle": -1e-05, "time_budget": 12.5,
     "no_retry": True, "overwrite": True, "device": "cpu", "cancel_file": "job/CANCEL", "progress_json": True,
     "quiet": True},
    {"volume": "ct.nrrd", "output": "out", "model": "model_dir", "allow_other_volume": True,
     "isocenter": [0.1 + 0.2, -12.0, 1e20], "frame": "mean", "device": "cuda"},
    {"volume": "ct.nrrd", "output": "out", "init_pose": "poses/", "frame": "max", "init": "pose"},
    {"volume": "ct.nrrd", "output": "out", "init": "carm", "carm": (0.5, -3.0, 2.0, 1e-05, -650.0, -2e-07),
     "orientation": "AP", "settings": "tuned.toml", "scales": [32, 64], "n_itrs": [10, 20], "lr_rot": [0.02],
     "lr_xyz": [4.0, 0.5], "patience": 0, "threshold": 1e-4, "max_n_plateaus": 2, "metric": "mncc"},
]

TRAIN_CASES = [
    {"volume": ["ct.nii.gz"], "output": "run"},
    {"volume": ["a.nii.gz", "b.nii.gz"], "output": "run", "preset": "skull", "profile": "quick", "minutes": 2.5,
     "batch_size": 8, "lr": 3e-3, "warmup": 0, "pose_loss_fraction": 0.25, "image_size": 64, "width": 48,
     "architecture": "resnet34", "parameterization": "rotation_6d", "device": "cpu", "threads": 2, "seed": 7,
     "validate_every": 50, "checkpoint_every": 100, "resume": True, "cancel_file": "run/CANCEL",
     "progress_json": True, "quiet": True},
    {"volume": ["ct.nii.gz"], "output": "run", "preset": "neurovasculature", "alpha": (-1.0, 2.0),
     "beta": (-2e-07, 4.0), "gamma": (-3.0, 6.0), "x": (-4.0, 8.0), "y": (-1000, -450), "z": (-0.1, 0.7),
     "orientation": "AP", "labelmap": "l.nii.gz", "labels": [3, 4], "init_from": "pre", "frame": "register",
     "template": "template.nii.gz", "iterations": 300},
    {"volume": ["ct.nii.gz"], "output": "run", "sdd": 1020.5, "image_size": 96, "pixel_spacing": 2.25},
]


def _plain(value):
    """What argparse gives back for a value passed: lists for sequences, text for paths."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _round_trip(command: list[str], options: dict) -> None:
    args = vars(build_parser().parse_args(command[3:]))
    for dest, value in options.items():
        assert args[dest] == _plain(value), dest


@pytest.mark.parametrize("options", REGISTER_CASES)
def test_register_command_round_trips(options):
    command = register_command(["a.dcm", Path("folder")], **options)
    assert command[:4] == [sys.executable, "-m", "xvrcore", "register"]
    _round_trip(command, {"xrays": ["a.dcm", "folder"], **options})


@pytest.mark.parametrize("options", TRAIN_CASES)
def test_train_command_round_trips(options):
    command = train_command(python="py", **options)
    assert command[:4] == ["py", "-m", "xvrcore", "train"]
    _round_trip(command, options)


def test_floats_are_written_exactly_and_none_or_false_is_left_out():
    command = register_command("a.dcm", volume="ct", output="out", sdd=0.1 + 0.2, sod=None, quiet=False, labels=None)
    assert command[command.index("--sdd") + 1] == repr(0.1 + 0.2)
    assert "--sod" not in command and "--quiet" not in command and "--labels" not in command
    assert train_command(volume="ct", output="run")[4:] == ["--volume", "ct", "--output", "run"]
    one = build_parser().parse_args(train_command(volume="ct", output="run")[3:])
    assert one.volume == ["ct"]  # one path: one --volume


def test_unknown_options_and_bad_values_are_refused():
    base = {"volume": "ct", "output": "out"}
    refused = [
        (lambda: register_command(["a.dcm"], **base, bogus=1), "bogus"),
        (lambda: register_command(["a.dcm"], **base, device="tpu"), "device"),
        (lambda: register_command(["a.dcm"], **base, init="guess"), "init"),
        (lambda: register_command(["a.dcm"], **base, frame="median"), "frame"),
        (lambda: register_command(["a.dcm"], **base, pixel_spacing=(0.3,)), "pixel_spacing"),
        (lambda: register_command(["a.dcm"], **base, time_budget=-1.0), "time_budget"),
        (lambda: register_command(["a.dcm"], **base, mask_frame=1.5), "mask_frame"),
        (lambda: register_command(["a.dcm"], **base, sdd=float("nan")), "sdd"),
        (lambda: register_command(["a.dcm"], **base, landmarks="l.json", model="m"), "landmarks, model"),
        (lambda: register_command(["a.dcm"], output="out"), "volume"),
        (lambda: register_command([], **base), "X-ray"),
        (lambda: train_command(**base, profile="fast"), "profile"),
        (lambda: train_command(**base, preset="spine"), "preset"),
        (lambda: train_command(**base, orientation="LR"), "orientation"),
        (lambda: train_command(**base, architecture="vit"), "architecture"),
        (lambda: train_command(**base, parameterization="matrix"), "parameterization"),
        (lambda: train_command(**base, frame="max"), "frame"),
        (lambda: train_command(**base, alpha=(1.0, 2.0, 3.0)), "alpha"),
        (lambda: train_command(**base, learning_rate=1e-3), "learning_rate"),
    ]
    for build, name in refused:
        with pytest.raises(ValueError, match=name):
            build()


def _actions(command: str) -> dict:
    return {a.dest: a for a in build_parser()._subparsers._group_actions[0].choices[command]._actions}


def test_choices_are_the_core_tables():
    from xvrcore.app import evaluate
    from xvrcore.drr import METHODS
    from xvrcore.geometry.carm import ORIENTATIONS
    from xvrcore.learning.network import ARCHITECTURES, PARAMETERIZATIONS
    from xvrcore.learning.sampling import PRESETS
    from xvrcore.learning.training import PROFILES
    from xvrcore.registration import INIT_METHODS
    from xvrcore.volume.frames import FRAME_MODES

    train, register, render = _actions("train"), _actions("register"), _actions("render")
    assert train["profile"].choices is PROFILES and train["preset"].choices is PRESETS
    assert train["orientation"].choices is ORIENTATIONS and train["frame"].choices is FRAME_MODES
    assert train["architecture"].choices is ARCHITECTURES and train["parameterization"].choices is PARAMETERIZATIONS
    assert register["init"].choices is INIT_METHODS
    assert render["method"].choices is METHODS and render["orientation"].choices is ORIENTATIONS
    assert _actions("demo")["method"].choices is METHODS
    assert _actions("evaluate")["preset"].choices is evaluate.PRESETS
    # The preset's aliases still work and name the table's entry.
    assert build_parser().parse_args(train_command(volume="ct", output="o", preset="neuro")[3:]).preset == "neurovasculature"


def test_every_option_is_a_keyword_of_its_builder():
    assert {o.dest for o in REGISTER_OPTIONS} == set(_actions("register")) - {"help"}
    assert {o.dest for o in TRAIN_OPTIONS} == set(_actions("train")) - {"help"}


def test_the_start_method_follows_the_start_file_and_refuses_a_contradiction(tmp_path, capsys):
    def start(**options):
        return _start_method(build_parser().parse_args(register_command(["a.dcm"], volume="ct", output="o", **options)[3:]))

    assert start() == "dicom" and start(landmarks="l.json") == "landmarks" and start(model="m") == "model"
    assert start(init_pose="p.json") == "pose" and start(init="pose", init_pose="p.json") == "pose"
    command = register_command(["a.dcm"], volume=str(tmp_path / "ct.nrrd"), output=str(tmp_path), init="dicom",
                               landmarks="l.json", quiet=True)
    assert main(command[3:]) == 2
    assert "--init dicom contradicts --landmarks" in capsys.readouterr().err


def test_python_dash_m_xvrcore_runs_the_command_line():
    version = subprocess.run([sys.executable, "-m", "xvrcore", "--version"], check=False, capture_output=True,
                             text=True, encoding="utf-8", errors="replace", timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("xvrcore "), version.stderr[-2000:]
    command = register_command(["a.dcm"], volume="ct", output="out")
    helped = subprocess.run([*command[:4], "--help"], check=False, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120)
    assert helped.returncode == 0 and "--pixel-spacing ROW COL" in helped.stdout, helped.stderr[-2000:]
