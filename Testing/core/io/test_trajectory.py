"""A registration's trajectory: thinned to a bound with each stage's first, best and latest kept; its file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from xvrcore.geometry.camera import Intrinsics
from xvrcore.io.trajectory import (
    Trajectory,
    TrajectoryFileError,
    read_trajectory,
    record_sample,
    write_trajectory,
)


def _pose(shift: float) -> torch.Tensor:
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, 3] = torch.tensor([shift, 0.0, -800.0])
    return pose


def _record(iterations_per_stage: list[int], limit: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    samples: list[dict] = []
    for stage, iterations in enumerate(iterations_per_stage):
        for iteration in range(1, iterations + 1):
            record_sample(samples, {"stage": stage, "iteration": iteration, "similarity": float(rng.random()),
                                    "camera_to_world": _pose(iteration)}, limit)
    return samples


def test_a_long_registration_keeps_an_even_sample_and_each_stages_first_best_and_latest():
    rng = np.random.default_rng(0)
    sizes = [300, 300, 250, 150]  # 1000 iterations, steps 1 … 1000
    everything = [float(rng.random()) for _ in range(sum(sizes))]
    samples = _record(sizes, limit=50)
    assert len(samples) <= 50
    assert [s["similarity"] for s in samples] == [everything[s["step"] - 1] for s in samples]  # the step numbers hold
    starts = np.cumsum([0] + sizes)
    pinned = set()
    for stage in range(4):
        steps = range(starts[stage] + 1, starts[stage + 1] + 1)
        best = max(steps, key=lambda step: everything[step - 1])
        pinned |= {steps[0], best, steps[-1]}
    kept = {s["step"] for s in samples}
    assert pinned <= kept
    # stride 16 would keep 62 steps (over the limit); stride 32 keeps all 31 multiples of 32, evenly spread
    assert kept - pinned == {step for step in range(32, 1001, 32)} - pinned
    assert all(s["camera_to_world"][0, 3] == s["iteration"] for s in samples)  # each sample keeps its own pose


def test_a_short_registration_is_kept_whole():
    samples = _record([30, 20], limit=200)
    assert [s["step"] for s in samples] == list(range(1, 51))
    assert [s["iteration"] for s in samples] == list(range(1, 31)) + list(range(1, 21))


def _trajectory(samples: list[dict]) -> Trajectory:
    k = Intrinsics(-200.0, 200.0, 31.5, 31.5, 64, 64)  # a mirrored (DICOM) view
    return Trajectory(k, samples, {"similarity": 0.2, "camera_to_world": _pose(-5.0)},
                      {"similarity": 0.9, "camera_to_world": _pose(3.0)},
                      [{"size": [64, 64], "iterations": 3, "similarity": 0.9}], frame="max", mask_frame=None)


def test_the_file_reads_back_what_was_written_and_holds_no_name(tmp_path):
    samples = [{"stage": 0, "stages": 1, "size": [64, 64], "iteration": i, "step": i, "similarity": 0.3 * i,
                "camera_to_world": _pose(float(i))} for i in (1, 2, 3)]
    path = write_trajectory(tmp_path / "IM0001_trajectory.json", _trajectory(samples))
    back = read_trajectory(path)
    assert back.image_size == (64, 64) and back.intrinsics == _trajectory(samples).intrinsics
    assert back.frame == "max" and back.mask_frame is None and back.stages[0]["iterations"] == 3
    assert [s["similarity"] for s in back.samples] == [0.3, 0.6, 0.3 * 3]
    assert all(torch.equal(a["camera_to_world"], b["camera_to_world"]) for a, b in zip(back.samples, samples))
    assert torch.equal(back.result["camera_to_world"], _pose(3.0)) and back.initial["similarity"] == 0.2
    assert "IM0001" not in path.read_text() and [p.name for p in tmp_path.iterdir()] == [path.name]  # atomic


@pytest.mark.parametrize("change, words", [
    (lambda r: r.update(samples=[]), "empty"),
    (lambda r: r.pop("format"), "not a registration trajectory"),
    (lambda r: r.update(image_size=[64]), "image_size"),
    (lambda r: r["samples"][1].update(camera_to_world=[[1, 0], [0, 1]]), "sample 2: camera_to_world must be"),
    (lambda r: r["samples"][0]["camera_to_world"][0].__setitem__(0, 2.0), "sample 1: camera_to_world is not a rigid"),
    (lambda r: r["result"].update(similarity="high"), "'result': similarity must be a finite number"),
    (lambda r: r.update(version=7), "version 7"),
])
def test_a_broken_file_is_refused_naming_the_file_and_the_problem(tmp_path, change, words):
    samples = [{"stage": 0, "stages": 1, "size": [64, 64], "iteration": i, "similarity": 0.5,
                "camera_to_world": _pose(0.0)} for i in (1, 2)]
    path = write_trajectory(tmp_path / "t.json", _trajectory(samples))
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))
    with pytest.raises(TrajectoryFileError, match=str(path)) as raised:
        read_trajectory(path)
    assert words in str(raised.value)


def test_a_file_that_is_no_json_is_refused(tmp_path):
    path = tmp_path / "t.json"
    path.write_bytes(b"\x00GIF89a")
    with pytest.raises(TrajectoryFileError, match="not a readable trajectory file"):
        read_trajectory(path)
