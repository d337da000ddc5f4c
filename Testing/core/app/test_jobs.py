"""The background-job protocol with a real subprocess: events, log lines, cancel, terminate."""

import sys
import textwrap
import time

from xvrcore.app.jobs import JobRunner
from xvrcore.io.events import EXIT_CANCELLED, PREFIX, CancelToken, format_event, parse_line

WORKER = textwrap.dedent(
    """
    import sys, time
    from xvrcore.io.events import CancelToken, emit, EXIT_CANCELLED
    token = CancelToken(sys.argv[1])
    total = int(sys.argv[2])
    print("starting (a plain log line)", flush=True)
    for i in range(total):
        if token():
            emit("cancelled", done=i)
            sys.exit(EXIT_CANCELLED)
        emit("progress", done=i + 1, total=total, loss=1.0 / (i + 1))
        time.sleep(float(sys.argv[3]))
    emit("finished", done=total)
    """
)


def _runner(tmp_path, total, delay):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    job = tmp_path / "job"
    return JobRunner([sys.executable, str(script), str(job / "CANCEL"), str(total), str(delay)], job)


def test_events_round_trip_and_ordinary_lines_are_log():
    line = format_event("progress", done=3, total=10, loss=0.5)
    assert line.startswith(PREFIX)
    assert parse_line(line) == {"event": "progress", "done": 3, "total": 10, "loss": 0.5}
    assert parse_line("epoch 3 done") is None
    assert parse_line(PREFIX + "{not json") is None


def test_worker_progress_is_collected(tmp_path):
    runner = _runner(tmp_path, 5, 0.01)
    runner.start()
    update = runner.wait(timeout=60)
    assert update.returncode == 0
    events = update.events
    assert [e["done"] for e in events if e["event"] == "progress"] == [1, 2, 3, 4, 5]
    assert events[-1]["event"] == "finished"
    assert update.log == ["starting (a plain log line)"]


def test_cancel_file_stops_the_worker_cleanly(tmp_path):
    runner = _runner(tmp_path, 10000, 0.02)
    runner.start()
    deadline = time.monotonic() + 30
    seen = []
    while len(seen) < 3 and time.monotonic() < deadline:
        seen += [e for e in runner.poll().events if e["event"] == "progress"]
        time.sleep(0.02)
    runner.cancel()
    update = runner.wait(timeout=30)
    assert update.returncode == EXIT_CANCELLED
    assert any(e["event"] == "cancelled" for e in update.events)


def test_terminate_kills_a_worker_that_ignores_cancel(tmp_path):
    script = tmp_path / "stuck.py"
    script.write_text("import time\nprint('stuck', flush=True)\nwhile True: time.sleep(0.1)\n")
    runner = JobRunner([sys.executable, str(script)], tmp_path / "job")
    runner.start()
    time.sleep(0.5)
    runner.cancel()
    runner.terminate(grace_s=0.0)
    update = runner.wait(timeout=30)
    assert update.returncode is not None and update.returncode != 0
    assert not runner.running


def test_cancel_token_reads_the_file(tmp_path):
    token = CancelToken(tmp_path / "CANCEL")
    assert not token()
    (tmp_path / "CANCEL").touch()
    assert token()
