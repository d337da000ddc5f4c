"""The liveness check behind folder locks and checkpoint temporaries, on real processes."""

import os
import subprocess
import sys
import time

import pytest
from xvrcore.io.processes import process_alive, process_start


def test_this_process_and_a_running_child_are_alive():
    assert process_alive(os.getpid(), process_start(os.getpid()))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_alive(child.pid, process_start(child.pid))
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid)  # ended and reaped


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="zombies and start times are read from /proc")
def test_a_zombie_and_a_reused_pid_are_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    for _ in range(600):  # the child exits at once; until waited for, it is a zombie
        with open(f"/proc/{child.pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.05)
    assert not process_alive(child.pid)
    child.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a live PID recorded with another start time: a later process that reuses the number
        assert not process_alive(live.pid, process_start(live.pid) - 1)
    finally:
        live.kill()
        live.wait()
