"""How long a registration will take, said before it starts (the panel's and the command line's estimate).

The refinement's cost hardly depends on the detector: every stage is sized in pixels
(:mod:`xvrcore.registration.settings`) and the QA pictures are capped in size, so only reading and
downsampling the X-ray grow with it. The CPU figures are the median and 90th percentile of the default
schedule measured by ``benchmarks/bench_speed.py`` on the project's 2-core CPU machine (2 torch threads;
pelvis, head and torso CTs, perturbed and header starts), doubled for one thread. The CUDA figures are
the paper's (about 2 s on its GPU) until a GPU run of the benchmark replaces them. A shared machine is
slower: the estimate says "about".
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TimeEstimate", "estimate_seconds"]

# (median, 90th percentile) seconds per X-ray of the default schedule, from a perturbed or header start,
# on 2 CPU threads (benchmarks/bench_speed.py, README "Speed").
_CPU_SECONDS = (6.0, 10.0)
_CUDA_SECONDS = (2.0, 3.0)
_READ_SECONDS_PER_MEGAPIXEL = 0.15  # decoding, log conversion and area downsampling of the X-ray


@dataclass(frozen=True)
class TimeEstimate:
    median_s: float
    p90_s: float

    def text(self) -> str:
        """E.g. "about 3 s per X-ray (up to 6 s)"."""
        return f"about {_rounded(self.median_s)} s per X-ray (up to {_rounded(self.p90_s)} s)"


def _rounded(seconds: float) -> str:
    return f"{seconds:.1f}" if seconds < 2 else f"{round(seconds):d}"


def estimate_seconds(rows: int, cols: int, device: str = "cpu", threads: int = 2) -> TimeEstimate:
    """The expected seconds per X-ray of ``rows`` × ``cols`` pixels on ``device`` ("cpu" or "cuda…")
    with ``threads`` CPU threads (ignored on CUDA)."""
    if rows < 1 or cols < 1:
        raise ValueError(f"an X-ray has at least one pixel, got {rows} × {cols}")
    read = _READ_SECONDS_PER_MEGAPIXEL * rows * cols / 1e6
    if str(device).startswith("cuda"):
        median, p90 = _CUDA_SECONDS
    else:
        scale = 2.0 if threads < 2 else 1.0  # measured on 2 threads; more than 2: not measured, said as 2
        median, p90 = (s * scale for s in _CPU_SECONDS)
    return TimeEstimate(median + read, p90 + read)
