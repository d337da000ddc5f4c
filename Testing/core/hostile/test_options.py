"""Hostile inputs, class 10: numbers out of range stop at the command line (exit 2, one clear line
naming the option, the range and the value), before any file is read or anything is trained."""

import pytest
from xvrcore.app.cli import main

TRAIN = ["train", "--volume", "ct.nii.gz", "--output", "run"]
REGISTER = ["register", "x.dcm", "--volume", "ct.nii.gz", "--output", "out"]

CASES = [
    (TRAIN, ["--image-size", "7"], "xvrcore train", "argument --image-size/--height: must be an integer ≥ 32, got 7"),
    (TRAIN, ["--height", "16"], "xvrcore train", "argument --image-size/--height: must be an integer ≥ 32, got 16"),
    (TRAIN, ["--threads", "0"], "xvrcore train", "argument --threads: must be an integer ≥ 1, got 0"),
    (TRAIN, ["--batch-size", "0"], "xvrcore train", "argument --batch-size: must be an integer ≥ 1, got 0"),
    (TRAIN, ["--batch-size", "2.5"], "xvrcore train", "argument --batch-size: must be an integer ≥ 1, got '2.5'"),
    (TRAIN, ["--lr", "-0.1"], "xvrcore train", "argument --lr: must be a number > 0, got -0.1"),
    (TRAIN, ["--pose-loss-fraction", "1.5"], "xvrcore train",
     "argument --pose-loss-fraction: must be a number in [0, 1], got 1.5"),
    (TRAIN, ["--minutes", "nan"], "xvrcore train", "argument --minutes: must be a number > 0 (finite), got nan"),
    (TRAIN, ["--iterations", "0"], "xvrcore train", "argument --iterations: must be an integer ≥ 1, got 0"),
    (TRAIN, ["--checkpoint-every", "0"], "xvrcore train", "argument --checkpoint-every: must be an integer ≥ 1, got 0"),
    (TRAIN, ["--sdd", "0"], "xvrcore train", "argument --sdd: must be a number > 0, got 0"),
    (TRAIN, ["--delx", "-1"], "xvrcore train", "argument --pixel-spacing/--delx: must be a number > 0, got -1"),
    (TRAIN, ["--alpha", "-5", "inf"], "xvrcore train", "argument --alpha: must be a number (finite), got inf"),
    (REGISTER, ["--sdd", "-1000"], "xvrcore register", "argument --sdd: must be a number > 0, got -1000"),
    (REGISTER, ["--pixel-spacing", "0", "0.3"], "xvrcore register",
     "argument --pixel-spacing: must be a number > 0, got 0"),
    (REGISTER, ["--primary-angle", "1e308"], "xvrcore register",
     "argument --primary-angle: must be a number in [-180, 180] degrees, got 1e308"),
    (REGISTER, ["--secondary-angle", "91"], "xvrcore register",
     "argument --secondary-angle: must be a number in [-90, 90] degrees, got 91"),
    (REGISTER, ["--time-budget", "0"], "xvrcore register", "argument --time-budget: must be a number > 0 seconds, got 0"),
    (REGISTER, ["--structures", "0"], "xvrcore register", "argument --structures: must be an integer ≥ 1, got 0"),
    (REGISTER, ["--n-itrs", "0"], "xvrcore register",
     "argument --n-itrs/--n_itrs/--max-n-itrs/--max_n_itrs: must be an integer ≥ 1, got 0"),
    (REGISTER, ["--scales", "4"], "xvrcore register", "argument --scales: must be an integer in [8, 4096], got 4"),
    (REGISTER, ["--lr-xyz", "0"], "xvrcore register", "argument --lr-xyz/--lr_xyz: must be a number > 0, got 0"),
    (REGISTER, ["--max-n-plateaus", "0"], "xvrcore register",
     "argument --max-n-plateaus/--max_n_plateaus: must be an integer ≥ 1, got 0"),
    (REGISTER, ["--carm", "0", "0", "0", "0", "nan", "0"], "xvrcore register",
     "argument --carm: must be a number (finite), got nan"),
    (["render", "--volume", "ct.nii.gz", "--carm", "0", "0", "0", "0", "-800", "0", "--output", "a.png"],
     ["--size", "3"], "xvrcore render", "argument --size: must be an integer in [16, 4096], got 3"),
    (["render", "--volume", "ct.nii.gz", "--carm", "0", "0", "0", "0", "-800", "0", "--output", "a.png"],
     ["--spacing", "0"], "xvrcore render", "argument --spacing: must be a number > 0, got 0"),
    (["evaluate", "--volume", "ct.nii.gz", "--output", "ev"], ["--n", "0"], "xvrcore evaluate",
     "argument --n: must be an integer ≥ 1, got 0"),
    (["demo"], ["--size", "-5"], "xvrcore demo", "argument --size: must be an integer in [16, 4096], got -5"),
]


@pytest.mark.parametrize("command, options, prog, message", CASES, ids=[" ".join(c[1]) for c in CASES])
def test_an_out_of_range_option_is_refused_at_the_command_line(tmp_path, monkeypatch, capsys, command, options,
                                                               prog, message):
    monkeypatch.chdir(tmp_path)  # nothing may be written, wherever the paths point
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main([*command, *options])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"{prog}: error: {message}" in err.splitlines(), err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
