"""Image similarities for registration and training (xvr paper, Methods M.6).

Every similarity works on ``(B, C, H, W)`` tensors (or ``(H, W)``), is differentiable and
scale-invariant, accepts an optional mask (1 = use the pixel, e.g. to exclude collimation) and
returns one value per batch item in [-1, 1]. Patch statistics over all overlapping windows are
computed with summed-area tables (:mod:`xvrcore.metrics.patches`), so time and memory stay O(pixels)
whatever the patch size. :class:`RegistrationObjective` is :func:`registration_similarity` with the
X-ray's half computed once, for the many DRRs a registration compares with one X-ray.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .patches import FixedPatches, patch_scores

__all__ = [
    "RegistrationObjective",
    "gradient_ncc",
    "image_gradients",
    "multiscale_ncc",
    "ncc",
    "patch_ncc",
    "registration_similarity",
]


def _as_bchw(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 2:
        return x[None, None]
    if x.dim() == 3:
        return x[:, None]
    return x


def _prepare(a, b, mask):
    a, b = _as_bchw(a), _as_bchw(b)
    a, b = torch.broadcast_tensors(a, b)
    w = torch.ones_like(a[:, :1]) if mask is None else _as_bchw(mask.to(a.dtype)).expand(a.shape[0], 1, *a.shape[-2:])
    return _standardise(a, w), _standardise(b, w), w


def _standardise(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over the masked pixels of each image (makes eps scale-free)."""
    total = w.sum((-1, -2), keepdim=True).clamp_min(1e-12)
    mean = (x * w).sum((-1, -2), keepdim=True) / total
    var = (((x - mean) ** 2) * w).sum((-1, -2), keepdim=True) / total
    return (x - mean) / (var + 1e-12).sqrt()


def ncc(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Global normalised cross-correlation, ``(B,)`` (averaged over channels)."""
    a, b, w = _prepare(a, b, mask)
    total = w.sum((-1, -2)).clamp_min(1e-12)
    return ((a * b * w).sum((-1, -2)) / total).mean(1)  # both are standardised: this is the NCC


def patch_ncc(a: torch.Tensor, b: torch.Tensor, patch_size: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean NCC over all overlapping ``patch_size × patch_size`` windows, ``(B,)``.

    With a mask, each window's statistics use only its masked pixels and windows count in
    proportion to their masked fraction (windows less than half covered are ignored).
    """
    a, b, w = _prepare(a, b, mask)
    return patch_scores(a, FixedPatches.of(b, w, patch_size))


def multiscale_ncc(a, b, patch_sizes=(None, 9), weights=(0.5, 0.5), mask=None) -> torch.Tensor:
    """Weighted sum of global (``None``) and patchwise NCC — the paper's mNCC."""
    total = 0
    for size, weight in zip(patch_sizes, weights, strict=True):
        total = total + weight * (ncc(a, b, mask) if size is None else patch_ncc(a, b, size, mask))
    return total


_SOBEL_X = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def image_gradients(x: torch.Tensor, sigma: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel derivatives along columns and rows (same size; borders replicated)."""
    x = _as_bchw(x)
    if sigma > 0:
        x = _gaussian_blur(x, sigma)
    c = x.shape[1]
    kx = _SOBEL_X.to(x.dtype).to(x.device).view(1, 1, 3, 3).expand(c, 1, 3, 3)
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, kx, groups=c)
    gy = F.conv2d(padded, kx.transpose(-1, -2), groups=c)
    return gx, gy


def _eroded(mask: torch.Tensor | None) -> torch.Tensor | None:
    """The mask less one pixel at its border, so the edge of a collimator does not count as anatomy."""
    return None if mask is None else -F.max_pool2d(-_as_bchw(mask.float()), 3, stride=1, padding=1)


def gradient_ncc(a, b, patch_size: int | None = 11, sigma: float = 0.0, mask=None) -> torch.Tensor:
    """NCC of Sobel gradient images (mean of the column and row derivatives), ``(B,)``.

    With a mask, pixels next to the mask border are dropped too.
    """
    mask = _eroded(mask)
    gxa, gya = image_gradients(a, sigma)
    gxb, gyb = image_gradients(b, sigma)
    score = ncc if patch_size is None else (lambda x, y, m: patch_ncc(x, y, patch_size, m))
    return 0.5 * (score(gxa, gxb, mask) + score(gya, gyb, mask))


def registration_similarity(a, b, mask=None, weight: float = 0.5) -> torch.Tensor:
    """The paper's refinement objective: ``weight · mNCC + (1 − weight) · gradNCC``.

    mNCC = ½ global NCC + ½ NCC over 9×9 patches; gradNCC over 11×11 patches without blur.
    """
    return RegistrationObjective(b, mask, weight)(a)


def _weights(image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(image[:, :1]) if mask is None else _as_bchw(mask.to(image.dtype))


class RegistrationObjective:
    """:func:`registration_similarity` against one fixed X-ray ``(H, W)`` (or ``(1, 1, H, W)``) and mask:
    the X-ray's standardised image, gradients and patch statistics are computed here once, and each
    call pays only for the DRRs' half. ``objective(drr)`` with ``drr`` ``(B, 1, H, W)`` gives ``(B,)``.
    """

    def __init__(self, xray: torch.Tensor, mask: torch.Tensor | None = None, weight: float = 0.5) -> None:
        xray = _as_bchw(xray)
        self.weight = weight
        self.w = _weights(xray, mask)
        self.total = self.w.sum((-1, -2)).clamp_min(1e-12)
        self.xray = _standardise(xray, self.w)
        self.patches = FixedPatches.of(self.xray, self.w, 9)
        eroded = _eroded(mask)
        self.w_edges = _weights(xray, eroded)
        self.gradients = [FixedPatches.of(_standardise(g, self.w_edges), self.w_edges, 11)
                          for g in image_gradients(xray)]

    def __call__(self, drr: torch.Tensor) -> torch.Tensor:
        drr = _as_bchw(drr)
        standard = _standardise(drr, self.w)
        global_ncc = ((standard * self.xray * self.w).sum((-1, -2)) / self.total).mean(1)
        mncc = 0.5 * global_ncc + 0.5 * patch_scores(standard, self.patches)
        grad = sum(patch_scores(_standardise(g, self.w_edges), fixed)
                   for g, fixed in zip(image_gradients(drr), self.gradients, strict=True))
        return self.weight * mncc + (1 - self.weight) * 0.5 * grad
