"""The time a registration will take, said in the panel before it starts: from the X-rays' detector sizes and
the device, by :func:`xvrcore.registration.timing.estimate_seconds`. Never touches widgets.
"""

import os

from slicer.i18n import tr as _

__all__ = ["estimateText", "resolvedDevice", "xraySize"]


def xraySize(xrayNode) -> tuple:
    """``(rows, columns)`` of the X-ray's image."""
    columns, rows, _slices = xrayNode.GetImageData().GetDimensions()
    return rows, columns


def _cudaAvailable() -> bool:
    """Whether the process would find CUDA (asked once the packages are installed; before, there is none)."""
    from XVRCoreLib import slicersupport

    return slicersupport.dependencies_available() and slicersupport.cuda_available() is True


def resolvedDevice(device: str) -> str:
    """``"cuda"`` or ``"cpu"``: where the process runs for the panel's device choice (automatic: CUDA if any)."""
    device = str(device)
    if device == "auto":
        return "cuda" if _cudaAvailable() else "cpu"
    return "cuda" if device.startswith("cuda") else "cpu"


def estimateText(xrayNodes, device: str = "auto", threads=None) -> str:
    """E.g. "Expected: about 6 s per X-ray (up to 9 s) on the CPU"; for several X-rays, the largest one's
    figures and the total; "" without an X-ray with an image. The worker uses every core (``threads`` None)."""
    from xvrcore.registration.timing import estimate_seconds

    sized = [xraySize(node) for node in xrayNodes if node is not None and node.GetImageData() is not None]
    if not sized:
        return ""
    where = resolvedDevice(device)
    threads = int(threads or os.cpu_count() or 1)
    estimates = [estimate_seconds(rows, columns, where, threads) for rows, columns in sized]
    largest = max(estimates, key=lambda e: e.p90_s)
    text = _("Expected: {estimate} on the {device}").format(
        estimate=largest.text(), device=_("GPU") if where == "cuda" else _("CPU"))
    if len(estimates) > 1:
        total = sum(e.median_s for e in estimates)
        text += "; " + _("{n} X-rays: about {total} s in all").format(n=len(estimates), total=round(total))
    return text
