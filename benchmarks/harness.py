"""Benchmark harness: throughput timing and memory-isolated runs (pure Python + psutil).

No renderer/competitor is imported at module level, so this file works from any venv (ours or the
competitors' benchmark venv).

* ``measure_throughput(fn, batch_size, min_seconds=3.0, warmup=1)`` -- wall-clock images/s.
* ``run_isolated("module:function", kwargs, python=sys.executable, ...)`` -- runs the function in a
  fresh child interpreter, passing ``kwargs`` as JSON, and returns its JSON-able dict plus memory
  figures (``baseline_rss_mb``, ``peak_rss_mb``, ``extra_peak_mb``).  If the function accepts a
  ``mark_baseline`` parameter, the harness passes a callback; the function calls it after its setup
  (volume loaded etc.), which records the RSS baseline and resets the kernel's peak-RSS high-water
  mark, so ``extra_peak_mb = peak - baseline`` is the memory of the measured work only.

Run ``python harness.py demo`` (from the benchmark venv) for the reference table.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

__all__ = ["IsolatedRunError", "measure_throughput", "run_isolated"]


def measure_throughput(fn, batch_size: int, min_seconds: float = 3.0, warmup: int = 1) -> dict:
    """Call ``fn()`` ``warmup`` times untimed, then repeatedly until ``min_seconds`` have elapsed
    (at least once).  Each call is assumed to produce ``batch_size`` images.

    Returns ``dict(images_per_s, seconds_per_call, n_calls, total_seconds, warmup)``.
    """
    for _ in range(int(warmup)):
        fn()
    n = 0
    t0 = time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            break
    return {
        "images_per_s": batch_size * n / elapsed,
        "seconds_per_call": elapsed / n,
        "n_calls": n,
        "total_seconds": elapsed,
        "warmup": int(warmup),
    }


class IsolatedRunError(RuntimeError):
    """The child process failed.  ``kind`` is one of ``"exception"``, ``"oom"`` (killed by the
    kernel / watchdog for memory, or an allocation failure), ``"timeout"``, ``"protocol"``."""

    def __init__(self, message: str, kind: str, returncode, stderr_tail: str, info: dict):
        super().__init__(message)
        self.kind = kind
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.info = info


# Code run by the child interpreter: python -c _CHILD <spec.json> <result.json>
_CHILD = r"""
import inspect, importlib, json, os, resource, sys, time

def _rss_kb():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * (os.sysconf('SC_PAGE_SIZE') // 1024)

def _hwm_kb():
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None

spec = json.load(open(sys.argv[1]))
for p in reversed(spec['sys_path']):
    sys.path.insert(0, p)
state = {'baseline_kb': None, 'baseline_t': None, 'hwm_reset': False, 'ru_at_baseline_kb': None}

def mark_baseline():
    state['baseline_kb'] = _rss_kb()
    state['ru_at_baseline_kb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    state['baseline_t'] = time.time()
    try:  # reset the peak-RSS high-water mark (Linux >= 4.0) so setup transients do not count
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        state['hwm_reset'] = True
    except OSError:
        state['hwm_reset'] = False

mod_name, fn_name = spec['target'].split(':')
fn = getattr(importlib.import_module(mod_name), fn_name)
kwargs = dict(spec['kwargs'])
try:
    params = inspect.signature(fn).parameters
    accepts = 'mark_baseline' in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
except (TypeError, ValueError):
    accepts = False
if accepts:
    kwargs['mark_baseline'] = mark_baseline
else:
    mark_baseline()
result = fn(**kwargs)
if result is None:
    result = {}
ru_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
hwm_kb = _hwm_kb()
if state['baseline_kb'] is None:  # the function never called it: baseline = start of the call
    mark_baseline()
if state['hwm_reset'] and hwm_kb is not None:
    peak_kb, source = hwm_kb, 'VmHWM after clear_refs reset at baseline'
else:
    peak_kb, source = ru_kb, 'getrusage(RUSAGE_SELF).ru_maxrss (includes setup transients)'
mem = {
    'baseline_rss_mb': state['baseline_kb'] / 1024.0,
    'peak_rss_mb': peak_kb / 1024.0,
    'extra_peak_mb': (peak_kb - state['baseline_kb']) / 1024.0,
    'ru_maxrss_mb': ru_kb / 1024.0,
    'ru_maxrss_at_baseline_mb': (state['ru_at_baseline_kb'] or 0) / 1024.0,
    'peak_source': source,
}
out = {'result': result, 'memory': mem}
with open(sys.argv[2], 'w') as f:
    json.dump(out, f, default=lambda o: o.item() if hasattr(o, 'item') else str(o))
"""

_OOM_MARKERS = ("MemoryError", "DefaultCPUAllocator: can't allocate memory", "CUDA out of memory",
                "OutOfMemoryError", "std::bad_alloc", "Cannot allocate memory")


def _tail(path: Path, n_chars: int) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-n_chars:].decode("utf-8", "replace")


def _available_mb() -> float | None:
    try:
        import psutil

        return psutil.virtual_memory().available / 2**20
    except Exception:
        return None


def run_isolated(target: str, kwargs: dict | None = None, *, python: str | None = None,
                 sys_path: list[str] | None = None, timeout: float = 600.0,
                 max_rss_mb: float | None = None, env: dict | None = None, n_threads: int | None = None,
                 cwd: str | None = None, raise_on_error: bool = True, stderr_tail_chars: int = 4000,
                 poll_interval: float = 0.05) -> dict:
    """Run ``target`` (``"module:function"``) in a fresh child interpreter and return its result.

    Args:
        target: ``"module:function"``; the function takes keyword arguments and returns a JSON-able
            dict.  If it has a ``mark_baseline`` parameter (or ``**kwargs``) it receives a callback
            to call once its setup is done (see module docstring); otherwise the baseline is taken
            right before the call (after importing the module).
        kwargs: JSON-serialisable keyword arguments.
        python: interpreter of the child (default ``sys.executable``), e.g.
            the benchmark environment's python.
        sys_path: directories prepended to the child's ``sys.path`` (default: this file's directory
            and its parent, so both ``"competitors:bench"`` and ``"benchmarks.competitors:bench"``
            resolve).
        timeout: wall-clock seconds before the child is killed (``kind="timeout"``).
        max_rss_mb: optional watchdog: kill the child once its RSS exceeds this (``kind="oom"``).
            Independently, a SIGKILL from the kernel OOM killer is reported as ``kind="oom"``.
        env: extra environment variables for the child.
        n_threads: if given, sets ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` in the child.
        raise_on_error: raise ``IsolatedRunError`` on failure (default); if False return
            ``{"ok": False, "error": ..., "error_kind": ..., "returncode": ..., "stderr_tail": ...}``.

    Returns:
        The function's dict, plus ``ok=True``, ``peak_rss_mb``, ``baseline_rss_mb``,
        ``extra_peak_mb`` (all MiB), ``peak_source``, ``child_wall_s``, ``monitor_peak_rss_mb`` (the
        parent's psutil polling of the child's RSS, a cross-check that may miss short spikes).
    """
    python = python or sys.executable
    sys_path = [str(p) for p in (sys_path if sys_path is not None else [HERE, HERE.parent])]
    child_env = dict(os.environ)
    if n_threads is not None:
        child_env.update(OMP_NUM_THREADS=str(n_threads), MKL_NUM_THREADS=str(n_threads))
    child_env.update(env or {})
    child_env.setdefault("PYTHONUNBUFFERED", "1")

    try:
        import psutil
    except ImportError:  # pragma: no cover
        psutil = None

    with tempfile.TemporaryDirectory(prefix="xvr_bench_") as tmp:
        tmp = Path(tmp)
        spec_path, result_path = tmp / "spec.json", tmp / "result.json"
        out_path, err_path = tmp / "stdout.txt", tmp / "stderr.txt"
        spec_path.write_text(json.dumps({"target": target, "kwargs": kwargs or {}, "sys_path": sys_path}))
        info = {"target": target, "python": python, "kwargs": kwargs or {}}
        t0 = time.perf_counter()
        with open(out_path, "wb") as fout, open(err_path, "wb") as ferr:
            proc = subprocess.Popen([python, "-c", _CHILD, str(spec_path), str(result_path)],
                                    stdout=fout, stderr=ferr, env=child_env, cwd=cwd, start_new_session=True)
            ps = None
            if psutil is not None:
                try:
                    ps = psutil.Process(proc.pid)
                except psutil.Error:
                    ps = None
            monitor_peak = 0
            killed_by = None
            while True:
                rc = proc.poll()
                if rc is not None:
                    break
                if ps is not None:
                    try:
                        rss = ps.memory_info().rss
                        monitor_peak = max(monitor_peak, rss)
                        if max_rss_mb is not None and rss > max_rss_mb * 2**20:
                            killed_by = "watchdog"
                            proc.kill()
                    except psutil.Error:
                        pass
                if time.perf_counter() - t0 > timeout:
                    killed_by = "timeout"
                    proc.kill()
                if killed_by:
                    proc.wait()
                    break
                time.sleep(poll_interval)
            rc = proc.wait()
        wall = time.perf_counter() - t0
        info.update(child_wall_s=wall, monitor_peak_rss_mb=monitor_peak / 2**20)
        err_tail = _tail(err_path, stderr_tail_chars)

        if rc == 0 and killed_by is None and result_path.exists():
            payload = json.loads(result_path.read_text())
            out = dict(payload.get("result") or {})
            out.update(payload["memory"])
            out.update(ok=True, child_wall_s=wall, monitor_peak_rss_mb=monitor_peak / 2**20)
            return out

        # ---- failure classification
        if killed_by == "timeout":
            kind, msg = "timeout", f"{target} exceeded the timeout of {timeout:.0f} s"
        elif killed_by == "watchdog":
            kind, msg = "oom", (f"{target} exceeded max_rss_mb={max_rss_mb:.0f} MiB "
                                f"(RSS reached {monitor_peak / 2**20:.0f} MiB) and was killed by the harness")
        elif rc is not None and rc < 0 and -rc == signal.SIGKILL:
            avail = _available_mb()
            kind, msg = "oom", (f"{target} was killed by SIGKILL (most likely the kernel OOM killer; "
                                f"child RSS reached >= {monitor_peak / 2**20:.0f} MiB"
                                + (f", {avail:.0f} MiB available now" if avail is not None else "") + ")")
        elif any(m in err_tail for m in _OOM_MARKERS):
            kind, msg = "oom", (f"{target} failed to allocate memory (child RSS reached >= "
                                f"{monitor_peak / 2**20:.0f} MiB)")
        elif rc == 0:
            kind, msg = "protocol", f"{target} exited 0 but wrote no result"
        else:
            sig = ""
            if rc is not None and rc < 0:
                try:
                    sig = f" ({signal.Signals(-rc).name})"
                except ValueError:
                    pass
            kind, msg = "exception", f"{target} failed with exit code {rc}{sig}"
        full = f"{msg}\n--- child stderr (tail) ---\n{err_tail}"
        if raise_on_error:
            raise IsolatedRunError(full, kind, rc, err_tail, info)
        return {"ok": False, "error": msg, "error_kind": kind, "returncode": rc, "stderr_tail": err_tail,
                **info}
