"""Which network this computer can train, said in the panel: with a CUDA GPU the Standard profile (the paper's
recipe); without one the Quick (CPU) profile, with what to expect of it in words and figures.

The figures are the benchmark "No header at all" of ``benchmarks/README.md`` (a pelvis CT, 30 held-out
synthetic X-rays, 2 CPU cores): the Quick network alone starts the registration a median distance (mTRE)
from the truth, and the registration's refinement brings a share of the X-rays below 1 mm.
"""

from slicer.i18n import tr as _

__all__ = ["QUICK_PROFILE_BENCHMARK", "adviceText", "suggestedSetup"]

#: minutes of Quick (CPU) training → (median start distance of the network alone in mm, % below 1 mm after
#: the refinement); benchmarks/README.md, "No header at all".
QUICK_PROFILE_BENCHMARK = {5: (66, 83), 20: (37, 87)}


def suggestedSetup(cuda) -> dict:
    """The device and profile values to offer: ``{"device": "cuda"|"cpu", "profile": "standard"|"quick"}``
    (None: no advice before torch is installed)."""
    if cuda is None:
        return None
    return {"device": "cuda", "profile": "standard"} if cuda else {"device": "cpu", "profile": "quick"}


def _gpuName() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - the name is a nicety; any driver trouble shows when training starts
        return ""


def adviceText(cuda) -> str:
    """What the panel says about the device, and for a CPU what the Quick network can be expected to do."""
    if cuda is None:
        return _("PyTorch is installed when training first starts; the network is then chosen for this computer "
                 "(Quick without a GPU).")
    if cuda:
        name = _gpuName()
        found = _("GPU found ({name}).").format(name=name) if name else _("GPU (CUDA) found.")
        return found + " " + _("Suggested: the Standard network (the paper's recipe: 128 px, ResNet-18, image "
                               "and pose loss), trained on the GPU.")
    (short, (shortStart, shortBelow)), (long, (longStart, longBelow)) = sorted(QUICK_PROFILE_BENCHMARK.items())
    return (_("No GPU (CUDA) found: training runs on the CPU. Suggested: the Quick (CPU) network.") + " "
            + _("What to expect (pelvis CT, 2 CPU cores, benchmarks/README.md): after {short} minutes the network "
                "alone starts the registration a median of {shortStart} mm from the truth, and the refinement "
                "brings {shortBelow} % of the X-rays below 1 mm; after {long} minutes {longStart} mm and "
                "{longBelow} %. The network gives the start only: check every registration by eye.").format(
                short=short, shortStart=shortStart, shortBelow=shortBelow, long=long, longStart=longStart,
                longBelow=longBelow))
