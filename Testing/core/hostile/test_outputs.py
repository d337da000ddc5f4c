"""Hostile cases for a registration's outputs: two runs into one folder, kills and full disks while
writing, folders that cannot be written, silent choices, file names that identify patients, and
inputs with the same file name.

Each case asserts the exit code, one clear line on stderr, and that every result finished before the
fault is byte-identical afterwards (:func:`digest`). Registrations are cut to one 32-pixel stage of a
few iterations (``FAST``): these tests are about the files, not the accuracy.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import REPO_ROOT, assert_clear_error, digest, run_cli, run_process
from pydicom.uid import generate_uid
from xvrcore.io.lock import LOCK_NAME, FolderBusyError, lock_folder
from xvrcore.registration.inputs import name_inputs, sop_instance_uid

FAST = ("--scales", "32", "--n-itrs", "3", "--no-retry", "--quiet")
PARTS = (".json", ".tfm", "_overlay.png", "_checkerboard.png")


# ---- helpers -------------------------------------------------------------------------------------------


def _copy_with_uid(source: Path, target: Path, seed: str) -> Path:
    """``source`` as another image: the same pixels and geometry, a SOP Instance UID of its own."""
    ds = pydicom.dcmread(source)
    uid = generate_uid(entropy_srcs=[seed])
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target)
    return target


def _batch(good_xa: Path, folder: Path, names=("a", "b", "c")) -> Path:
    for name in names:
        _copy_with_uid(good_xa, folder / f"{name}.dcm", f"hostile-outputs-{folder.name}-{name}")
    return folder


def _register(*args, capsys, ct: Path, out: Path):
    return run_cli("register", *args, "--volume", ct, "--output", out, *FAST, capsys=capsys)


def _result_files(out: Path, stem: str) -> dict[str, str]:
    found = {k: v for k, v in digest(out).items() if k.startswith(stem)}
    assert sorted(found) == sorted(stem + p for p in PARTS), found
    return found


def _no_leftovers(out: Path) -> None:
    """No lock, no temporaries, and every result complete (each picture and transform with its JSON)."""
    names = {p.name for p in out.iterdir()}
    assert LOCK_NAME not in names
    assert not [n for n in names if n.startswith(".")], names
    for name in names:
        for part in PARTS[1:]:
            if name.endswith(part):
                assert name[: -len(part)] + ".json" in names, f"{name} without its JSON"


def _popen(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "XVRCore"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "xvrcore", *map(str, args)], env=env, text=True, encoding="utf-8", errors="replace",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 300) -> None:
    """Poll until ``condition()``; fails if the process ended first (a deadline, not a measurement)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"the first run ended (exit {process.returncode}) before {what}:\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.05)


def _dead_pid() -> int:
    """The PID of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ---- class 6: two runs into one output folder ------------------------------------------------------------


def test_a_second_process_into_a_busy_folder_is_refused_and_the_first_finishes(torso_ct, good_xa, tmp_path):
    out = tmp_path / "out"
    first = _popen("register", good_xa, "--volume", torso_ct, "--output", out, *FAST)
    _wait_for(lambda: (out / LOCK_NAME).exists(), first, "the lock")
    first.send_signal(signal.SIGSTOP)  # paused while the second starts, however fast it would have finished
    try:
        second = run_process("register", good_xa, "--volume", torso_ct, "--output", out, *FAST)
    finally:
        first.send_signal(signal.SIGCONT)
    line = assert_clear_error(second, 2, str(out), "another xvrcore run", f"PID {first.pid}")
    assert "wait for it to finish" in line
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    _result_files(out, "good_xa")
    _no_leftovers(out)


def test_a_folder_locked_by_this_process_is_refused_before_anything_is_loaded(torso_ct, good_xa, tmp_path, capsys,
                                                                              monkeypatch):
    from xvrcore.registration import pipeline

    monkeypatch.setattr(pipeline, "prepare_target", lambda *a, **k: pytest.fail("the CT was loaded"))
    out = tmp_path / "out"
    with lock_folder(out):
        outcome = _register(good_xa, capsys=capsys, ct=torso_ct, out=out)
        assert_clear_error(outcome, 2, str(out), f"PID {os.getpid()}")
        with pytest.raises(FolderBusyError, match="another xvrcore run"):
            lock_folder(out)
    assert list(out.iterdir()) == []  # released, nothing written


def test_a_stale_lock_of_a_killed_run_is_taken_over_with_a_message(torso_ct, good_xa, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    pid = _dead_pid()
    (out / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "since": "earlier"}))
    outcome = _register(good_xa, capsys=capsys, ct=torso_ct, out=out)
    assert outcome.code == 0, outcome.err
    line = next(line for line in outcome.err.splitlines() if "took over" in line)
    assert f"PID {pid}" in line and str(out) in line and "Traceback" not in outcome.err
    _result_files(out, "good_xa")
    _no_leftovers(out)


def test_a_lock_is_released_only_by_its_holder(tmp_path):
    lock = lock_folder(tmp_path)
    holder = json.loads((tmp_path / LOCK_NAME).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    (tmp_path / LOCK_NAME).write_text(json.dumps({**holder, "token": "another run's"}))
    lock.release()  # not ours any more (judged stale and taken over): left alone
    assert (tmp_path / LOCK_NAME).exists()
    (tmp_path / LOCK_NAME).unlink()
    with lock_folder(tmp_path):
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()


# ---- class 7: kills, leftovers and full disks --------------------------------------------------------------


def test_kill_9_during_a_batch_keeps_the_first_result_and_a_rerun_completes_the_rest(torso_ct, good_xa, tmp_path,
                                                                                     capsys):
    inputs, out = _batch(good_xa, tmp_path / "in"), tmp_path / "out"
    run = _popen("register", inputs, "--volume", torso_ct, "--output", out, *FAST)
    _wait_for(lambda: (out / "a.json").exists(), run, "the first result")
    run.send_signal(signal.SIGKILL)
    run.communicate()
    first = _result_files(out, "a")
    assert (out / LOCK_NAME).exists()  # a kill -9 cannot release it
    rerun = _register(inputs, capsys=capsys, ct=torso_ct, out=out)
    assert rerun.code == 0, rerun.err
    assert "took over" in rerun.err and "skipped 1" in rerun.out
    assert _result_files(out, "a") == first
    for stem in ("b", "c"):
        _result_files(out, stem)
    _no_leftovers(out)


def test_leftovers_of_an_interrupted_run_are_removed_and_finished_results_kept(torso_ct, good_xa, tmp_path, capsys):
    inputs, out = _batch(good_xa, tmp_path / "in", ("a", "b")), tmp_path / "out"
    assert _register(inputs / "a.dcm", capsys=capsys, ct=torso_ct, out=out).code == 0
    finished = _result_files(out, "a")
    (out / ".b.json.k2j3h4g5.json").write_text("{")  # a temporary of a killed write (io.atomic's naming)
    (out / "b.tfm").write_text("half of a unit")  # a kill between the parts and the JSON
    (out / "b_overlay.png").write_bytes(b"\x89PNG")
    (out / ".my notes").write_text("not ours")
    outcome = _register(inputs, capsys=capsys, ct=torso_ct, out=out)
    assert outcome.code == 0, outcome.err
    assert "removed 1 temporary file" in outcome.err
    assert _result_files(out, "a") == finished
    assert (out / "b.tfm").read_text() != "half of a unit"
    _result_files(out, "b")
    assert (out / ".my notes").read_text() == "not ours"


def test_a_full_disk_stops_the_batch_keeps_finished_results_and_exits_3(torso_ct, good_xa, tmp_path, capsys,
                                                                        monkeypatch):
    from xvrcore.registration import outputs

    inputs, out = _batch(good_xa, tmp_path / "in"), tmp_path / "out"
    assert _register(inputs / "a.dcm", inputs / "b.dcm", capsys=capsys, ct=torso_ct, out=out).code == 0
    before = digest(out)
    save_png = outputs.save_png

    def fills_up(path, image):
        if Path(path).name.startswith(".b_"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return save_png(path, image)

    monkeypatch.setattr(outputs, "save_png", fills_up)
    outcome = _register(inputs, "--overwrite", "--progress-json", capsys=capsys, ct=torso_ct, out=out)
    events = [json.loads(line[6:]) for line in outcome.out.splitlines() if line.startswith("@@XVR ")]
    line = assert_clear_error(outcome, 3, "b.dcm", "disk is full", "stopped the batch")
    assert "b_overlay.png" in line  # the file being written, by name
    assert [e["input"] for e in events if e["event"] == "input_start"] == ["a.dcm", "b.dcm"]  # c never started
    after = digest(out)
    assert {k: after[k] for k in before if k.startswith("b")} == {k: before[k] for k in before if k.startswith("b")}
    assert sorted(after) == sorted(before)  # a re-done, b's old result intact, nothing of c, no temporaries
    assert events[-1]["event"] == "run_done" and events[-1]["disk_full"] is True


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_file_size_limit_in_a_child_process_is_a_full_disk(torso_ct, good_xa, tmp_path, capsys):
    inputs, out = _batch(good_xa, tmp_path / "in"), tmp_path / "out"
    assert _register(inputs / "a.dcm", capsys=capsys, ct=torso_ct, out=out).code == 0
    finished = digest(out)
    # 2 kB: the lock (~200 B) and the transform (~350 B) fit, the overlay picture (~7 kB) does not.
    outcome = run_process("register", inputs, "--volume", torso_ct, "--output", out, *FAST,
                          env={"PYTHONDONTWRITEBYTECODE": "1"}, preexec_fn=_file_size_limit(2000))
    assert_clear_error(outcome, 3, "b.dcm", "disk is full")
    assert "stopped: the disk is full" in outcome.out
    assert digest(out) == finished  # a untouched; nothing of b or c, no temporaries, no lock


# ---- class 8: folders that cannot be written, found before any registration ----------------------------------


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused_before_registration(torso_ct, good_xa, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        outcome = _register(good_xa, capsys=capsys, ct=torso_ct, out=out)
    finally:
        out.chmod(0o755)
    assert_clear_error(outcome, 2, str(out), "not writable")
    assert list(out.iterdir()) == []


def test_an_unwritable_output_folder_is_refused_before_the_ct_is_loaded(torso_ct, good_xa, tmp_path, capsys,
                                                                        monkeypatch):
    """The same as a read-only folder, for any user (root included): creating the lock file is refused."""
    from xvrcore.io import lock
    from xvrcore.registration import pipeline

    monkeypatch.setattr(pipeline, "prepare_target", lambda *a, **k: pytest.fail("the CT was loaded"))
    real_open = os.open

    def refused(path, flags, *args):
        if Path(path).name == LOCK_NAME:
            raise PermissionError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(lock.os, "open", refused)
    out = tmp_path / "out"
    outcome = _register(good_xa, capsys=capsys, ct=torso_ct, out=out)
    assert_clear_error(outcome, 2, str(out), "not writable", "read-only file system")


@pytest.mark.parametrize("where", ["under_a_file", "is_a_file"])
def test_an_output_folder_that_a_file_blocks_is_refused(torso_ct, good_xa, tmp_path, capsys, where):
    blocker = tmp_path / "results.txt"
    blocker.write_text("a file, not a folder")
    out = blocker / "out" if where == "under_a_file" else blocker
    outcome = _register(good_xa, capsys=capsys, ct=torso_ct, out=out)
    assert_clear_error(outcome, 2, str(out), "is a file")
    assert blocker.read_text() == "a file, not a folder"


# ---- class 9: choices made for the user are said and recorded -------------------------------------------------


def _write_series(volume: sitk.Image, folder: Path, series_uid: str, slices: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = volume.GetDirection()
    for k in range(slices):
        image = sitk.Cast(volume[:, :, k], sitk.sitkInt16)
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (("0008|0060", "CT"), ("0020|000e", series_uid), ("0020|000d", "1.2.3.4"),
                           ("0008|0018", f"{series_uid}.{k + 1}"), ("0020|0013", str(k + 1)),
                           ("0020|0032", "\\".join(map(str, position))),
                           ("0020|0037", "\\".join(map(str, direction[0:7:3] + direction[1:8:3]))),
                           ("0018|0050", str(volume.GetSpacing()[2])), ("0028|1052", "0"), ("0028|1053", "1")):
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid}_{k:03d}.dcm"))
        writer.Execute(image)


def test_a_dicom_folder_with_several_series_says_which_it_used(torso_ct, good_xa, tmp_path, capsys):
    volume = sitk.ReadImage(str(torso_ct))
    folder = tmp_path / "ct_folder"
    _write_series(volume, folder, "1.2.826.0.1.3680043.8.498.101", volume.GetSize()[2])
    _write_series(volume, folder, "1.2.826.0.1.3680043.8.498.202", 3)
    out = tmp_path / "out"
    outcome = _register(good_xa, capsys=capsys, ct=folder, out=out)
    assert outcome.code == 0, outcome.err
    said = [line for line in outcome.err.splitlines() if "warning" in line and "2 DICOM series" in line]
    assert len(said) == 1 and str(folder) in said[0] and "1.2.826.0.1.3680043.8.498.101" in said[0]
    recorded = json.loads((out / "good_xa.json").read_text())["warnings"]
    series = [w for w in recorded if "2 DICOM series" in w]
    assert len(series) == 1 and str(tmp_path) not in series[0] and "ct_folder" in series[0]  # no path


def test_a_label_map_on_another_grid_is_said_and_recorded(torso_ct, good_xa, tmp_path, capsys):
    labels = sitk.ReadImage(str(torso_ct.parent / "torso_ct_3mm_crop30_labels.nii.gz"))
    shifted = tmp_path / "labels_shifted.nii.gz"
    sitk.WriteImage(labels, str(shifted))  # the 30-slice crop's grid, unlike the full CT's
    out = tmp_path / "out"
    outcome = _register(good_xa, "--labels", shifted, capsys=capsys, ct=torso_ct, out=out)
    assert outcome.code == 0, outcome.err
    said = [line for line in outcome.err.splitlines() if "warning" in line and "resampled" in line]
    assert len(said) == 1 and "labels_shifted.nii.gz" in said[0]
    recorded = [w for w in json.loads((out / "good_xa.json").read_text())["warnings"] if "resampled" in w]
    assert len(recorded) == 1 and str(tmp_path) not in recorded[0]


# ---- class 11 and issue 14 (3): file names --------------------------------------------------------------------


def _all_text(out: Path) -> str:
    return " ".join([p.name for p in out.iterdir()] + [p.read_text() for p in out.glob("*.json")]
                    + [p.read_text() for p in out.glob("*.tfm")])


@pytest.mark.parametrize("naming", ["uid", "hash"])
def test_anonymous_names_keep_the_file_names_out_of_every_output(torso_ct, good_xa, tmp_path, capsys, naming):
    patient = _copy_with_uid(good_xa, tmp_path / "DOE^JANE" / "DOE_JANE_1957.dcm", "anonymous")
    ct = tmp_path / "DOE_JANE_ct.nii.gz"
    shutil.copy(torso_ct, ct)
    out = tmp_path / "out"
    outcome = _register(patient, "--name-outputs", naming, capsys=capsys, ct=ct, out=out)
    assert outcome.code == 0, outcome.err
    uid = sop_instance_uid(patient)
    name = uid if naming == "uid" else hashlib.sha256(uid.encode()).hexdigest()[:16]
    _result_files(out, name)
    text = _all_text(out)
    assert "DOE" not in text and "JANE" not in text and str(tmp_path) not in text
    record = json.loads((out / f"{name}.json").read_text())["input"]
    assert record["name"] == name and "file" not in record
    assert (uid in text) == (naming == "uid")  # hash: not even the UID


def test_two_inputs_with_one_file_name_get_their_own_results_and_start_files(torso_ct, good_xa, tmp_path, capsys):
    first = _copy_with_uid(good_xa, tmp_path / "series1" / "IM000001", "series1")
    second = _copy_with_uid(good_xa, tmp_path / "series2" / "IM000001", "series2")
    items = name_inputs([first, second])
    suffix = {i.path: hashlib.sha256(i.sop_instance_uid.encode()).hexdigest()[:8] for i in items}
    assert [i.name for i in items] == [f"IM000001-{suffix[first]}", f"IM000001-{suffix[second]}"]
    starts = tmp_path / "starts"  # per-X-ray start poses follow the names: each finds its own
    out = tmp_path / "out"
    assert _register(first, capsys=capsys, ct=torso_ct, out=tmp_path / "pose").code == 0
    starts.mkdir()
    for item in items:
        shutil.copy(tmp_path / "pose" / "IM000001.json", starts / f"{item.name}.json")
    outcome = _register(first, second, "--init-pose", starts, "--progress-json", capsys=capsys, ct=torso_ct, out=out)
    assert outcome.code == 0, outcome.err
    events = [json.loads(line[6:]) for line in outcome.out.splitlines() if line.startswith("@@XVR ")]
    done = {e["stem"]: e for e in events if e["event"] == "input_done"}
    assert sorted(done) == sorted(i.name for i in items)
    for item in items:
        record = json.loads((out / f"{item.name}.json").read_text())
        assert record["input"]["sop_instance_uid"] == item.sop_instance_uid == done[item.name]["sop_instance_uid"]
        assert record["initialization"]["method"] == "pose" and record["initialization"]["file"] == f"{item.name}.json"
        _result_files(out, item.name)


def test_a_result_of_another_xray_under_the_same_name_is_neither_skipped_nor_overwritten(torso_ct, good_xa, tmp_path,
                                                                                        capsys):
    first = _copy_with_uid(good_xa, tmp_path / "cd1" / "IM000001.dcm", "cd1")
    second = _copy_with_uid(good_xa, tmp_path / "cd2" / "IM000001.dcm", "cd2")
    out = tmp_path / "out"
    assert _register(first, capsys=capsys, ct=torso_ct, out=out).code == 0
    finished = digest(out)
    outcome = _register(second, capsys=capsys, ct=torso_ct, out=out)
    assert outcome.code == 0 and "registered 1, skipped 0" in outcome.out, outcome.out + outcome.err
    after = digest(out)
    assert {k: after[k] for k in finished} == finished
    new = sorted(set(after) - set(finished))
    assert len(new) == 4 and all(k.startswith("IM000001-") for k in new)
    record = json.loads((out / next(k for k in new if k.endswith(".json"))).read_text())
    assert record["input"]["sop_instance_uid"] == sop_instance_uid(second)
    again = _register(second, capsys=capsys, ct=torso_ct, out=out)  # now it is finished: skipped
    assert "skipped 1" in again.out and digest(out) == after


def test_names_are_unique_case_insensitively_and_copies_differ_by_path(good_xa, tmp_path):
    upper = _copy_with_uid(good_xa, tmp_path / "x" / "IM1.dcm", "case")
    lower = tmp_path / "y" / "im1.dcm"
    lower.parent.mkdir()
    shutil.copy(upper, lower)  # the same image twice: the same UID, so the paths tell them apart
    names = [i.name for i in name_inputs([upper, lower])]
    assert len({n.casefold() for n in names}) == 2
    assert names == [f"IM1-{hashlib.sha256(str(upper.resolve()).encode()).hexdigest()[:8]}",
                     f"im1-{hashlib.sha256(str(lower.resolve()).encode()).hexdigest()[:8]}"]
    assert np.array_equal(pydicom.dcmread(upper).pixel_array, pydicom.dcmread(lower).pixel_array)
