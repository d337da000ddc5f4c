"""Hostile cases for model files, checkpoints and the paths they name (issue 15, classes 3, 4 and 7):
damaged and forged model folders and xvr checkpoints, evil pickles, paths that leave their folder,
a kill -9 during training and inside a checkpoint write, and a full disk while a checkpoint or a
model is written.

Each case asserts the exit code, one clear line on stderr that names the file and the problem, and
that what was finished before the fault is byte-identical afterwards (:func:`digest`). Models are a
width-8 ResNet-18 for 32-pixel images; training runs take a few iterations on the 3 mm torso CT.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, assert_clear_error, digest, run_cli, run_process
from safetensors.torch import load_file, save_file
from xvrcore.learning.model_files import camera_metadata, load_model, save_model
from xvrcore.learning.network import ArchitectureSpec, InputSpec, PoseRegressor, PoseSpec
from xvrcore.learning.run_state import LATEST, latest_checkpoint, load_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN = ("--batch-size", "2", "--image-size", "32", "--width", "8", "--alpha", "-5", "5", "--beta", "-5", "5",
         "--validate-every", "0", "--checkpoint-every", "2", "--device", "cpu", "--threads", "1")
XVR_CONFIG = {"model_name": "resnet18", "norm_layer": "groupnorm", "parameterization": "quaternion_adjugate",
              "convention": "ZXY", "height": 128, "sdd": 1020.0, "delx": 2.1764375, "orientation": "AP",
              "reverse_x_axis": False, "unit_conversion_factor": 1000.0}


# ---- helpers -------------------------------------------------------------------------------------------


def _one_clear_line(outcome, code: int, names: str | Path, *words: str) -> str:
    """:func:`assert_clear_error`, and the error is the only line on stderr."""
    line = assert_clear_error(outcome, code, str(names), *words)
    assert outcome.err.strip().splitlines() == [line], outcome.err
    return line


def _edit_json(folder: Path, change) -> None:
    meta = json.loads((folder / "model.json").read_text())
    change(meta)
    (folder / "model.json").write_text(json.dumps(meta))


def _rehash(folder: Path) -> None:
    """Record the weights file's present hash, so that only the damage under test can be refused."""
    sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    _edit_json(folder, lambda meta: meta["weights"].__setitem__("sha256", sha))


def _safetensors_parts(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + size]), raw[8 + size:]


def _write_safetensors_parts(path: Path, header: dict, data: bytes) -> None:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def _first_tensor(header: dict) -> str:
    return min(k for k in header if k != "__metadata__")


class _Reduce:
    """An object that pickles as ``func(*args)``: how forged tensor records and exploits are written."""

    def __init__(self, func, args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _tensor_record(values: torch.Tensor, offset, size, stride) -> _Reduce:
    """A tensor record over the storage of ``values`` with the given (possibly forged) view."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage is what torch.save itself writes
        storage = values.storage()
    return _Reduce(torch._utils._rebuild_tensor_v2, (storage, offset, size, stride, False, collections.OrderedDict()))


def _rewrite_zip(path: Path, change, compression: int = zipfile.ZIP_STORED) -> None:
    """Rewrite the archive at ``path``; ``change(name, data)`` returns the new data or None to drop the entry."""
    with zipfile.ZipFile(path) as archive:
        entries = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in entries:
            new = change(name, data)
            if new is not None:
                archive.writestr(name, new)


def _storage_entry(name: str) -> bool:
    return re.search(r"/data/\d+$", name) is not None


def _popen(*args, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "XVRCore"), "OMP_NUM_THREADS": "1"}
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, *map(str, args)], env=env, stdout=fh, stderr=subprocess.STDOUT)


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _train_here(*args, capsys):
    """``xvrcore train`` in this process (no interpreter to start), leaving the signal handlers as they were."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run_cli("train", *args, *TRAIN, capsys=capsys)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-checkpoint-"))


# ---- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A valid tiny model folder (never modified: tests work on copies)."""
    arch = ArchitectureSpec("resnet18", 8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = arch.build(PoseSpec("rotation_6d", "ZXY", "PA", (0.0, -700.0, 0.0), 250.0))
    meta = {"architecture": arch.to_dict(), "camera": camera_metadata(1020.0, 32, 8.7, True),
            "input": InputSpec().to_dict(), "volume": {"sha256": "ab" * 32, "center": [0.0, 0.0, 0.0]},
            "frame": {"correction": None}, "training": {"kind": "patient-specific"}}
    return save_model(tmp_path_factory.mktemp("good") / "model", model, meta)


@pytest.fixture
def model_copy(model_folder, tmp_path) -> Path:
    return Path(shutil.copytree(model_folder, tmp_path / "model"))


@pytest.fixture(scope="module")
def xvr_pth(tmp_path_factory) -> Path:
    """A valid xvr checkpoint (full-size ResNet-18, as xvr writes it)."""
    path = tmp_path_factory.mktemp("xvr") / "subject01.pth"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        regressor = PoseRegressor("resnet18", "quaternion_adjugate")
    torch.save({"model_state_dict": regressor.state_dict(), "config": XVR_CONFIG, "itr": 10}, path)
    return path


@pytest.fixture(scope="module")
def trained_run(torso_ct, tmp_path_factory) -> Path:
    """A training run of two iterations with its checkpoint (never modified: tests work on copies)."""
    out = tmp_path_factory.mktemp("run") / "run"
    done = run_process("train", "--volume", torso_ct, "--output", out, "--iterations", "2", *TRAIN, "--quiet")
    assert done.code == 0, done.err
    assert latest_checkpoint(out).name == "checkpoint-0000002"
    return out


# ---- class 3: damaged model folders --------------------------------------------------------------------


def test_the_undamaged_model_is_read(model_folder, capsys):
    outcome = run_cli("model", "info", model_folder, capsys=capsys)
    assert outcome.code == 0 and outcome.err == ""
    assert json.loads(outcome.out)["architecture"]["width"] == 8


def test_model_json_without_weights_is_refused(model_copy, capsys):
    _edit_json(model_copy, lambda meta: meta.pop("weights"))
    before = digest(model_copy)
    _one_clear_line(run_cli("model", "info", model_copy, capsys=capsys), 2, model_copy / "model.json", "'weights'")
    assert digest(model_copy) == before


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(meta):
        for key in keys[:-1]:
            meta = meta[key]
        meta[keys[-1]] = value

    return change


BAD_FIELDS = {
    "sha256 a number": (_set("weights", "sha256", 5), "weights.sha256", "SHA-256"),
    "weights a string": (_set("weights", "model.safetensors"), "weights", "JSON object"),
    "weights.file a number": (_set("weights", "file", 3), "weights.file", "a file name"),
    "format_version text": (_set("format_version", "abc"), "format_version", "integer"),
    "unknown architecture": (_set("architecture", "name", "resnet99"), "architecture.name", "resnet18"),
    "width zero": (_set("architecture", "width", 0), "architecture.width", "integer"),
    "width of a billion": (_set("architecture", "width", 10**9), "architecture.width", "1024"),
    "unknown parameterization": (_set("pose", "parameterization", "nope"), "pose.parameterization", "rotation_6d"),
    "two-value translation offset": (_set("pose", "translation_offset", [0, 0]), "pose.translation_offset", "3"),
    "sdd as text": (_set("camera", "sdd", "far"), "camera.sdd", "positive number"),
    "mirrored as text": (_set("camera", "mirrored", "yes"), "camera.mirrored", "true or false"),
    "NaN focal length": (_set("camera", "intrinsics", "fx", float("nan")), "camera.intrinsics.fx", "non-zero number"),
    "zero std": (_set("input", "std", 0), "input.std", "positive number"),
    "3×3 frame correction": (_set("frame", "correction", [[1, 0, 0], [0, 1, 0], [0, 0, 1]]), "frame.correction", "4×4"),
    "CT centre as text": (_set("volume", "center", ["a", "b", "c"]), "volume.center", "finite numbers"),
    "modality a number": (_set("modality", 7), "modality", "'ct'"),
}


@pytest.mark.parametrize("case", list(BAD_FIELDS))
def test_a_model_json_field_of_the_wrong_type_or_value_is_refused(case, model_copy, capsys):
    change, field, wanted = BAD_FIELDS[case]
    _edit_json(model_copy, change)
    before = digest(model_copy)
    outcome = run_cli("model", "info", model_copy, capsys=capsys)
    _one_clear_line(outcome, 2, model_copy / "model.json", field, wanted)
    assert digest(model_copy) == before


def _truncate_in_data(path: Path) -> None:
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    path.write_bytes(raw[:8 + size + (len(raw) - 8 - size) // 2])


def _truncate_in_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:20])


def _offsets_past_the_end(path: Path) -> None:
    header, data = _safetensors_parts(path)
    header[_first_tensor(header)]["data_offsets"] = [0, 10**9]
    _write_safetensors_parts(path, header, data)


def _header_length_past_the_end(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 2**40) + raw[8:])


DAMAGED_WEIGHTS = {
    "truncated in the data": (_truncate_in_data, "damaged safetensors file"),
    "truncated in the header": (_truncate_in_header, "damaged safetensors file"),
    "empty": (lambda path: path.write_bytes(b""), "empty file"),
    "offsets past the end": (_offsets_past_the_end, "damaged safetensors file"),
    "header length past the end": (_header_length_past_the_end, "damaged safetensors file"),
}


@pytest.mark.parametrize("case", list(DAMAGED_WEIGHTS))
def test_damaged_weights_with_a_matching_hash_are_refused(case, model_copy, capsys):
    damage, words = DAMAGED_WEIGHTS[case]
    damage(model_copy / "model.safetensors")
    _rehash(model_copy)
    outcome = run_cli("model", "info", model_copy, capsys=capsys)
    _one_clear_line(outcome, 2, model_copy / "model.safetensors", words)


def test_a_header_that_lies_about_a_shape_is_refused(model_copy, capsys):
    header, data = _safetensors_parts(model_copy / "model.safetensors")
    name = "backbone.bn1.weight"  # 8 values: the same bytes read as 2 × 4
    assert header[name]["shape"] == [8]
    header[name]["shape"] = [2, 4]
    _write_safetensors_parts(model_copy / "model.safetensors", header, data)
    _rehash(model_copy)
    outcome = run_cli("model", "info", model_copy, capsys=capsys)
    _one_clear_line(outcome, 2, model_copy / "model.safetensors", name, "(2, 4)", "needs (8,)")


def test_weights_of_another_network_are_refused_in_one_line(model_copy, capsys):
    _edit_json(model_copy, _set("architecture", "width", 16))  # the weights are of width 8
    outcome = run_cli("model", "info", model_copy, capsys=capsys)
    _one_clear_line(outcome, 2, model_copy / "model.safetensors", "has shape", "the network needs")


def test_non_finite_weights_are_refused(model_copy, capsys):
    tensors = load_file(str(model_copy / "model.safetensors"))
    tensors["rot_regression.bias"][0] = float("nan")
    save_file(tensors, str(model_copy / "model.safetensors"))
    _rehash(model_copy)
    outcome = run_cli("model", "info", model_copy, capsys=capsys)
    _one_clear_line(outcome, 2, model_copy / "model.safetensors", "rot_regression.bias", "non-finite")


def _made(path: Path, make) -> Path:
    make(path)
    return path


NOT_A_MODEL = {
    "a text file": (lambda d: _made(d / "model", lambda p: p.write_text("not a model\n")), "is a file, not a model folder"),
    "an empty file": (lambda d: _made(d / "model", lambda p: p.write_bytes(b"")), "is an empty file, not a model folder"),
    "an empty folder": (lambda d: _made(d / "model", Path.mkdir), "no model found"),
    "an xvr checkpoint": (lambda d: _made(d / "model.pth", lambda p: p.write_bytes(b"PK")), "convert it first"),
}


@pytest.mark.parametrize("case", list(NOT_A_MODEL))
def test_a_model_path_that_is_no_model_folder_is_refused(case, tmp_path, capsys):
    make, words = NOT_A_MODEL[case]
    path = make(tmp_path)
    _one_clear_line(run_cli("model", "info", path, capsys=capsys), 2, path, words)


def test_register_from_a_damaged_model_fails_that_input_clearly(model_copy, torso_ct, good_xa, tmp_path, capsys):
    _truncate_in_data(model_copy / "model.safetensors")
    _rehash(model_copy)
    out = tmp_path / "out"
    outcome = run_cli("register", good_xa, "--volume", torso_ct, "--output", out, "--init", "model", "--model", model_copy,
                      "--quiet", capsys=capsys)
    assert_clear_error(outcome, 2, str(model_copy / "model.safetensors"), "damaged safetensors file")
    assert not (out / "good_xa.json").exists()  # no result from a model that could not be read


# ---- class 3: forged xvr checkpoints -------------------------------------------------------------------


def _forged_pth(path: Path, record) -> Path:
    torch.save({"model_state_dict": {"backbone.conv1.weight": record}, "config": XVR_CONFIG}, path)
    return path


FOUR = torch.arange(4, dtype=torch.float32)
FORGED_RECORDS = {
    "size past its storage": (lambda p: _forged_pth(p, _tensor_record(FOUR, 0, (1000,), (1,))), "reaches past its storage"),
    "offset past its storage": (lambda p: _forged_pth(p, _tensor_record(FOUR, 10**6, (2,), (1,))), "reaches past its storage"),
    "negative stride": (lambda p: _forged_pth(p, _tensor_record(FOUR, 0, (4,), (-1,))), "stride"),
    "size of text": (lambda p: _forged_pth(p, _tensor_record(FOUR, 0, ("4",), (1,))), "size"),
    "no storage": (lambda p: _forged_pth(p, _Reduce(torch._utils._rebuild_tensor_v2,
                                                    ("storage", 0, (4,), (1,), False, collections.OrderedDict()))),
                   "without a storage"),
}


@pytest.mark.parametrize("case", list(FORGED_RECORDS))
def test_a_forged_tensor_record_is_refused_by_import(case, tmp_path, capsys):
    make, words = FORGED_RECORDS[case]
    pth = make(tmp_path / "forged.pth")
    outcome = run_cli("model", "import-xvr", pth, tmp_path / "out", capsys=capsys)
    _one_clear_line(outcome, 2, pth, "forged or damaged", words)
    assert not (tmp_path / "out").exists()


def _storage_bytes_cut(name: str, data: bytes):
    return data[:8] if _storage_entry(name) else data


def _storage_dropped(name: str, data: bytes):
    return None if _storage_entry(name) else data


@pytest.mark.parametrize(("case", "change", "words"), [
    ("a storage shorter than its record", _storage_bytes_cut, "holds 8 bytes, but its record says 4 values"),
    ("a storage missing from the archive", _storage_dropped, "which the archive lacks"),
])
def test_a_checkpoint_whose_storages_do_not_back_its_records_is_refused(case, change, words, tmp_path, capsys):
    pth = _forged_pth(tmp_path / "cut.pth", FOUR.clone())
    _rewrite_zip(pth, change)
    outcome = run_cli("model", "import-xvr", pth, tmp_path / "out", capsys=capsys)
    _one_clear_line(outcome, 2, pth, words)


def test_a_zip_bomb_checkpoint_is_refused_before_it_is_expanded(tmp_path, capsys):
    pth = _forged_pth(tmp_path / "bomb.pth", torch.zeros(4 * 2**20))  # 16 MiB of zeros ...
    _rewrite_zip(pth, lambda name, data: data, compression=zipfile.ZIP_DEFLATED)  # ... in ~20 kB
    assert pth.stat().st_size < 2**20
    outcome = run_cli("model", "import-xvr", pth, tmp_path / "out", capsys=capsys)
    _one_clear_line(outcome, 2, pth, "larger than the file could hold")


def test_xvr_weights_of_the_wrong_shape_are_refused_in_one_line(tmp_path, capsys):
    state = PoseRegressor("resnet18", "quaternion_adjugate").state_dict()
    state["xyz_regression.weight"] = torch.zeros(3, 7)
    pth = tmp_path / "shapes.pth"
    torch.save({"model_state_dict": state, "config": XVR_CONFIG}, pth)
    outcome = run_cli("model", "import-xvr", pth, tmp_path / "out", capsys=capsys)
    _one_clear_line(outcome, 2, pth.name, "xyz_regression.weight", "(3, 7)", "needs (3, 512)")


@pytest.mark.parametrize(("key", "value"), [("height", "abc"), ("sdd", -1020.0), ("orientation", "LR")])
def test_an_xvr_config_value_that_makes_no_camera_is_refused(key, value, tmp_path, capsys):
    pth = tmp_path / "config.pth"
    torch.save({"model_state_dict": {}, "config": {**XVR_CONFIG, key: value}}, pth)
    outcome = run_cli("model", "import-xvr", pth, tmp_path / "out", capsys=capsys)
    _one_clear_line(outcome, 2, pth.name, f"config {key}")


# ---- evil pickles --------------------------------------------------------------------------------------


def _exploits(marker: Path) -> dict[str, _Reduce]:
    return {
        "os.system": _Reduce(os.system, (f"touch {marker}",)),
        "builtins.exec": _Reduce(exec, (f"open({str(marker)!r}, 'w').write('x')",)),
        "builtins.eval": _Reduce(eval, (f"open({str(marker)!r}, 'w').write('x')",)),
        "subprocess.call": _Reduce(subprocess.call, (["touch", str(marker)],)),
    }


@pytest.mark.parametrize("exploit", ["os.system", "builtins.exec", "builtins.eval", "subprocess.call"])
def test_an_evil_pickle_runs_nothing_on_import(exploit, tmp_path, capsys):
    marker = tmp_path / "pwned"
    pth = tmp_path / "evil.pth"
    state = {"backbone.conv1.weight": torch.zeros(2), "note": _exploits(marker)[exploit]}  # hidden among tensors
    torch.save({"model_state_dict": state, "config": XVR_CONFIG}, pth)
    outcome = run_cli("model", "import-xvr", pth, tmp_path / "out", capsys=capsys)
    _one_clear_line(outcome, 2, pth.name, "refusing to load", "nothing was executed")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_an_evil_pickle_runs_nothing_when_pulled_from_a_repository(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "pwned"
    repo = tmp_path / "repo"
    repo.mkdir()
    torch.save({"model_state_dict": {}, "config": _exploits(marker)["os.system"]}, repo / "evil.pth")
    monkeypatch.setenv("XVR_MODELS_DIR", str(tmp_path / "models"))
    outcome = run_cli("model", "pull", repo, "--file", "evil.pth", capsys=capsys)
    _one_clear_line(outcome, 2, "evil.pth", "refusing to load", "posix.system")
    assert not marker.exists()
    assert not list(tmp_path.rglob("model.json"))


def test_an_evil_pickle_runs_nothing_when_finetuning_from_it(torso_ct, tmp_path, capsys):
    marker = tmp_path / "pwned"
    pth = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {}, "config": {**XVR_CONFIG, "note": _exploits(marker)["builtins.exec"]}}, pth)
    out = tmp_path / "run"
    outcome = _train_here("--volume", torso_ct, "--output", out, "--init-from", pth, "--iterations", "2", "--quiet",
                          capsys=capsys)
    _one_clear_line(outcome, 2, pth.name, "refusing to load", "__builtin__.exec")
    assert not marker.exists()
    assert not out.exists() or not list(out.rglob("*.safetensors"))


# ---- class 4: paths that leave their folder ------------------------------------------------------------


def _weights_outside(model: Path, how: str) -> str:
    """Point the model at a weights file outside its folder: a copy of its own weights (the hash matches)."""
    outside = model.parent / "elsewhere" / "weights.safetensors"
    outside.parent.mkdir()
    shutil.copy(model / "model.safetensors", outside)
    if how == "symlink":
        (model / "model.safetensors").unlink()
        (model / "model.safetensors").symlink_to(outside)
        return "model.safetensors"
    name = os.path.relpath(outside, model) if how == "relative" else str(outside)
    _edit_json(model, _set("weights", "file", name))
    return name


@pytest.mark.parametrize(("how", "words"), [
    ("relative", "leaves its folder"), ("absolute", "leaves its folder"), ("symlink", "outside"),
])
def test_a_weights_file_outside_the_model_folder_is_not_followed(how, words, model_copy, capsys):
    _weights_outside(model_copy, how)
    outcome = run_cli("model", "info", model_copy, capsys=capsys)
    _one_clear_line(outcome, 2, model_copy / "model.json", "weights.file", words)


def test_a_weights_file_of_etc_is_not_followed(model_copy, capsys):
    _edit_json(model_copy, _set("weights", "file", "../../../etc/hostname"))
    outcome = run_cli("model", "info", model_copy, capsys=capsys)
    _one_clear_line(outcome, 2, model_copy / "model.json", "'../../../etc/hostname'", "leaves its folder")


def _markups(path: Path) -> Path:
    points = [[10.0, 20.0, 30.0], [-5.0, 40.0, 12.0], [33.0, -8.0, 50.0], [0.0, 0.0, -20.0]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"markups": [{"coordinateSystem": "RAS", "controlPoints": [
        {"label": str(i), "position": p} for i, p in enumerate(points)]}]}))
    return path


@pytest.mark.parametrize(("how", "words"), [
    ("etc", "leaves the landmarks file's folder"), ("absolute", "leaves the landmarks file's folder"),
    ("symlink", "outside"),
])
def test_a_landmarks_file_cannot_lead_to_a_file_outside_its_folder(how, words, torso_ct, good_xa, tmp_path, capsys):
    outside = _markups(tmp_path / "elsewhere" / "ct.mrk.json")  # a valid markups file, outside the folder
    folder = tmp_path / "landmarks"
    folder.mkdir()
    name = {"etc": "../../../etc/hostname", "absolute": str(outside), "symlink": "ct.mrk.json"}[how]
    if how == "symlink":
        (folder / "ct.mrk.json").symlink_to(outside)
    landmarks = folder / "l.json"
    landmarks.write_text(json.dumps({"points_2d": [[1, 2], [30, 4], [5, 60], [60, 60]], "points_3d": name}))
    out = tmp_path / "out"
    outcome = run_cli("register", good_xa, "--volume", torso_ct, "--output", out, "--landmarks", landmarks, "--quiet",
                      capsys=capsys)
    assert_clear_error(outcome, 2, str(landmarks), "points_3d", words)
    assert not (out / "good_xa.json").exists()


# ---- class 7: kills and full disks while a checkpoint is written -------------------------------------


def test_kill_9_during_training_leaves_an_intact_checkpoint_that_resumes(torso_ct, tmp_path, capsys):
    out = tmp_path / "run"
    run = _popen("-m", "xvrcore", "train", "--volume", torso_ct, "--output", out, "--iterations", "100000", *TRAIN,
                 "--quiet", log=tmp_path / "first.log")
    deadline = time.monotonic() + 300  # a deadline for a stuck run, not a measurement
    while not (out / LATEST).exists():
        assert run.poll() is None, (tmp_path / "first.log").read_text()
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    second = _train_here("--volume", torso_ct, "--output", out, "--iterations", "4", "--resume", "--quiet", capsys=capsys)
    _one_clear_line(second, 2, str(out), "another xvrcore run", f"PID {run.pid}")  # two jobs, one folder
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    found = latest_checkpoint(out)
    kept = digest(found)
    assert load_model(found).metadata["training"]["iteration"] == load_state(found)["iteration"]  # intact and readable
    iteration = load_state(found)["iteration"]
    resumed = _train_here("--volume", torso_ct, "--output", out, "--iterations", iteration + 2, "--resume", capsys=capsys)
    assert resumed.code == 0, resumed.err
    assert f"resuming {found.name} at iteration {iteration}" in resumed.out
    assert latest_checkpoint(out).name == f"checkpoint-{iteration + 2:07d}"
    assert digest(found) == kept  # the checkpoint it resumed from, untouched
    assert load_model(out).metadata["training"]["iteration"] == iteration + 2
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporaries, no lock


_DIE_IN_SECOND_CHECKPOINT = """
import os, signal, sys
from xvrcore.app.cli import main
from xvrcore.learning.training import resume

real, calls = resume.save_state, []


def save_state_then_die(folder, state):
    calls.append(folder)
    if len(calls) == 2:  # the second checkpoint: its model is written, its state half, then kill -9
        (folder / "state.safetensors").write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGKILL)
    real(folder, state)


resume.save_state = save_state_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_inside_a_checkpoint_write_leaves_a_temporary_that_the_next_run_removes(torso_ct, tmp_path, capsys):
    whole = _train_here("--volume", torso_ct, "--output", tmp_path / "whole", "--iterations", "4", "--quiet", capsys=capsys)
    assert whole.code == 0, whole.err
    out = tmp_path / "run"
    killed = _popen("-c", _DIE_IN_SECOND_CHECKPOINT, "train", "--volume", torso_ct, "--output", out, "--iterations", "4",
                    *TRAIN, "--quiet", log=tmp_path / "killed.log")
    assert killed.wait(timeout=300) == -signal.SIGKILL, (tmp_path / "killed.log").read_text()
    (stale,) = _temporaries(out)  # the half-written checkpoint
    assert re.match(rf"^\.tmp-checkpoint-{killed.pid}@", stale)
    assert latest_checkpoint(out).name == "checkpoint-0000002"
    kept = digest(out / "checkpoint-0000002")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        busy = out / stale.replace(f"-{killed.pid}@", f"-{live.pid}@", 1)  # as a running job's would be named
        busy.mkdir()
        resumed = _train_here("--volume", torso_ct, "--output", out, "--iterations", "4", "--resume", capsys=capsys)
        assert resumed.code == 0, resumed.err
        assert "removed 1 unfinished checkpoint" in resumed.out and "resuming checkpoint-0000002" in resumed.out
        # the dead run's temporary is gone, the live one's kept; no lock, no half-written model file
        assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [busy.name]
    finally:
        live.kill()
        live.wait()
    assert digest(out / "checkpoint-0000002") == kept
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "whole" / "model.safetensors").read_bytes()


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one_resumable(trained_run, torso_ct, tmp_path, capsys):
    out = Path(shutil.copytree(trained_run, tmp_path / "run"))
    before = digest(out)
    # 100 kB: the model description fits, the weights (~700 kB) do not.
    full = run_process("train", "--volume", torso_ct, "--output", out, "--iterations", "4", *TRAIN, "--resume", "--quiet",
                       env={"PYTHONDONTWRITEBYTECODE": "1"}, preexec_fn=_file_size_limit(100_000))
    _one_clear_line(full, 3, out / "checkpoint-0000004", "the disk is full", "results finished before are kept")
    assert digest(out) == before and [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    again = _train_here("--volume", torso_ct, "--output", out, "--iterations", "4", "--resume", "--quiet", capsys=capsys)
    assert again.code == 0, again.err
    assert latest_checkpoint(out).name == "checkpoint-0000004" and load_model(out).metadata["training"]["iteration"] == 4


def test_a_full_disk_while_a_model_is_replaced_keeps_the_old_pair(model_copy, xvr_pth, capsys, monkeypatch):
    before = digest(model_copy)
    real_write_bytes = Path.write_bytes

    def no_space_for_weights(self, data):
        if ".safetensors" in self.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", no_space_for_weights)
    outcome = run_cli("model", "import-xvr", xvr_pth, model_copy, capsys=capsys)
    monkeypatch.undo()
    _one_clear_line(outcome, 3, model_copy / "model.safetensors", "the disk is full")
    assert digest(model_copy) == before  # the old model.json and weights, still a pair
    assert load_model(model_copy).metadata["architecture"]["width"] == 8


def test_a_damaged_training_state_is_refused_on_resume(trained_run, torso_ct, tmp_path, capsys):
    out = Path(shutil.copytree(trained_run, tmp_path / "run"))
    state = out / "checkpoint-0000002" / "state.json"
    state.write_text(state.read_text()[:100])
    before = digest(out)
    outcome = _train_here("--volume", torso_ct, "--output", out, "--iterations", "4", "--resume", "--quiet", capsys=capsys)
    _one_clear_line(outcome, 2, state, "training state")
    assert digest(out) == before
