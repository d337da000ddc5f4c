"""Training-run state on disk: safetensors + JSON that keep the types of keys and tuples; checkpoints
written as one unit; the temporaries of interrupted runs removed, never those of live ones."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from xvrcore.learning.model_files import CheckpointError
from xvrcore.learning.run_state import (
    clean_stale_temporaries,
    latest_checkpoint,
    load_state,
    save_state,
    write_checkpoint,
)


def test_training_state_round_trip_keeps_types(tmp_path):
    opt = torch.optim.Adam([torch.nn.Parameter(torch.randn(3, 2))], lr=1e-3)
    opt.param_groups[0]["params"][0].grad = torch.ones(3, 2)
    opt.step()
    state = {"optimizer": opt.state_dict(), "iteration": 7, "history": [{"mtre_mm": 1.5}], "pair": (1, "a")}
    save_state(tmp_path, state)
    back = load_state(tmp_path)
    assert back["iteration"] == 7 and back["pair"] == (1, "a") and back["history"] == [{"mtre_mm": 1.5}]
    assert list(back["optimizer"]["state"]) == [0]  # integer keys stay integers
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    opt2 = torch.optim.Adam([torch.nn.Parameter(torch.randn(3, 2))], lr=1e-3)
    opt2.load_state_dict(back["optimizer"])


def _checkpoint(output, iteration, value=1.0, names=None):
    """A checkpoint holding ``value``; ``names`` collects the temporary folder's name."""

    def write(folder):
        if names is not None:
            names.append(folder.name)
        save_state(folder, {"iteration": iteration, "w": torch.full((2,), value)})
        (folder / "model.json").write_text("{}")

    return write_checkpoint(output, iteration, write, keep=5)


def test_a_checkpoint_written_again_replaces_the_old_one_whole(tmp_path):
    _checkpoint(tmp_path, 2, 1.0)
    again = _checkpoint(tmp_path, 2, 7.0)
    assert latest_checkpoint(tmp_path) == again
    assert torch.equal(load_state(again)["w"], torch.full((2,), 7.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "checkpoint-0000002"]  # nothing set aside is left


def test_latest_names_only_a_complete_checkpoint_of_the_run(tmp_path):
    _checkpoint(tmp_path, 2)
    four = _checkpoint(tmp_path, 4)
    (tmp_path / "LATEST").write_text("../../etc\n")
    assert latest_checkpoint(tmp_path) == four  # a pointer out of the run is ignored
    (four / "state.json").unlink()
    (tmp_path / "LATEST").write_text("checkpoint-0000004\n")
    assert latest_checkpoint(tmp_path).name == "checkpoint-0000002"  # an incomplete one is not resumed


def test_only_temporaries_of_ended_processes_on_this_machine_are_removed(tmp_path):
    names = []
    _checkpoint(tmp_path, 2, names=names)
    real = names[0]  # .tmp-checkpoint-<pid>@<host>-<random>
    assert re.match(rf"^\.tmp-checkpoint-{os.getpid()}@", real)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        temporaries = {
            "ended": real.replace(f"-{os.getpid()}@", f"-{ended.pid}@", 1),
            "live": real.replace(f"-{os.getpid()}@", f"-{live.pid}@", 1) + "x",
            "this process": real + "y",
            "another machine": f".tmp-checkpoint-{ended.pid}@another.host-abc12345",
            "an older version": ".tmp-checkpoint-def67890",
        }
        for name in temporaries.values():
            (tmp_path / name).mkdir()
            (tmp_path / name / "state.json").write_text("{}")
        removed = {p.name for p in clean_stale_temporaries(tmp_path)}
    finally:
        live.kill()
        live.wait()
    assert removed == {temporaries["ended"], temporaries["an older version"]}
    kept = {temporaries[k] for k in ("live", "this process", "another machine")}
    assert {p.name for p in tmp_path.iterdir()} == {"LATEST", "checkpoint-0000002", *kept}


@pytest.mark.parametrize(("damage", "words"), [
    (lambda d: (d / "state.json").write_text('{"__dict__": [[["float", 1], 2]]}'), "damaged training state"),
    (lambda d: (d / "state.json").write_text(json.dumps({"__tensor__": "nowhere"})), "damaged training state"),
    (lambda d: (d / "state.json").write_text("{"), "not a readable training state"),
    (lambda d: (d / "state.safetensors").write_bytes(b"\x00" * 5), "damaged safetensors file"),
])
def test_a_damaged_state_is_refused_naming_its_file(damage, words, tmp_path):
    folder = _checkpoint(tmp_path, 2)
    damage(folder)
    with pytest.raises(CheckpointError, match=words) as refused:
        load_state(folder)
    assert str(folder) in str(refused.value)
