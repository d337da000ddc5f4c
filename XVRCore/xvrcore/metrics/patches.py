"""Patch statistics for the patchwise NCCs: box means by summed-area tables, and the fixed image's half.

A box mean over every ``k × k`` window costs two cumulative sums and two differences per pixel,
whatever ``k`` (``avg_pool2d`` with stride 1 costs ``k²``, five times as much at ``k = 11`` forward and
backward on 2 CPU cores, ``benchmarks/README.md``, "Registration in seconds"). The sums run in float64:
in float32 the prefix sums of a 1024-pixel row would lose the low digits of a window's sum.

In a registration the X-ray is the same at every iteration, so its half of each patch NCC (the
windows' masked fraction, mean and variance) is computed once (:class:`FixedPatches`) and each DRR
pays only for its own three box means.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["FixedPatches", "box_mean", "patch_scores"]

EPS = 1e-4  # relative to unit image variance: a flat window scores 0, not noise


def box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over every ``k × k`` window of ``x`` ``(..., H, W)``: ``(..., H − k + 1, W − k + 1)``, as
    ``avg_pool2d(x, k, stride=1)``."""
    y = x.to(torch.float64)
    rows = F.pad(y.cumsum(-1), (1, 0))
    y = rows[..., k:] - rows[..., :-k]
    cols = F.pad(y.cumsum(-2), (0, 0, 1, 0))
    return ((cols[..., k:, :] - cols[..., :-k, :]) / (k * k)).to(x.dtype)


@dataclass(frozen=True)
class FixedPatches:
    """The fixed image's half of a patch NCC over ``k × k`` windows.

    ``image`` and ``weight`` are ``(B|1, C, H, W)`` (the image standardised over the weighted pixels);
    a window counts in proportion to its weighted fraction, and not at all below one half.
    """

    image: torch.Tensor
    weight: torch.Tensor
    k: int
    safe: torch.Tensor  # the windows' weighted fraction, kept off zero
    mean: torch.Tensor
    root_var: torch.Tensor  # sqrt(variance + EPS)
    window_weight: torch.Tensor
    window_total: torch.Tensor

    @classmethod
    def of(cls, image: torch.Tensor, weight: torch.Tensor, k: int) -> FixedPatches:
        fraction = box_mean(weight, k)
        safe = fraction.clamp_min(1e-6)
        mean = box_mean(image * weight, k) / safe
        var = (box_mean(image * image * weight, k) / safe - mean * mean).clamp_min(0)
        window_weight = torch.where(fraction >= 0.5, fraction, torch.zeros_like(fraction))
        return cls(image, weight, k, safe, mean, (var + EPS).sqrt(), window_weight,
                   window_weight.sum((-1, -2)).clamp_min(1e-12))


def patch_scores(moving: torch.Tensor, fixed: FixedPatches) -> torch.Tensor:
    """Mean NCC of ``moving`` ``(B, C, H, W)`` (standardised over ``fixed.weight``) with the fixed image
    over all windows, ``(B,)`` (averaged over channels)."""
    w, k, safe = fixed.weight, fixed.k, fixed.safe
    mean = box_mean(moving * w, k) / safe
    var = (box_mean(moving * moving * w, k) / safe - mean * mean).clamp_min(0)
    cov = box_mean(moving * fixed.image * w, k) / safe - mean * fixed.mean
    local = cov / ((var + EPS).sqrt() * fixed.root_var)
    return ((local * fixed.window_weight).sum((-1, -2)) / fixed.window_total).mean(1)
