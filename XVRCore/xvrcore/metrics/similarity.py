"""Image similarities for registration and training (xvr paper, Methods M.6).

Every similarity works on ``(B, C, H, W)`` tensors (or ``(H, W)``), is differentiable and
scale-invariant, accepts an optional mask (1 = use the pixel, e.g. to exclude collimation) and
returns one value per batch item in [-1, 1]. Patch statistics over all overlapping windows are
computed with box filters, so memory stays O(pixels) whatever the patch size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "gradient_ncc",
    "image_gradients",
    "multiscale_ncc",
    "ncc",
    "patch_ncc",
    "registration_similarity",
]

_EPS = 1e-4  # relative to unit image variance


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
    k = patch_size

    def box(x):
        return F.avg_pool2d(x, k, stride=1)

    sw = box(w)
    safe = sw.clamp_min(1e-6)
    ma, mb = box(a * w) / safe, box(b * w) / safe
    va = (box(a * a * w) / safe - ma * ma).clamp_min(0)
    vb = (box(b * b * w) / safe - mb * mb).clamp_min(0)
    cov = box(a * b * w) / safe - ma * mb
    local = cov / ((va + _EPS) * (vb + _EPS)).sqrt()
    weight = torch.where(sw >= 0.5, sw, torch.zeros_like(sw))
    return ((local * weight).sum((-1, -2)) / weight.sum((-1, -2)).clamp_min(1e-12)).mean(1)


def multiscale_ncc(a, b, patch_sizes=(None, 9), weights=(0.5, 0.5), mask=None) -> torch.Tensor:
    """Weighted sum of global (``None``) and patchwise NCC — the paper's mNCC."""
    total = 0
    for size, weight in zip(patch_sizes, weights, strict=True):
        total = total + weight * (ncc(a, b, mask) if size is None else patch_ncc(a, b, size, mask))
    return total


_SOBEL_X = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
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


def gradient_ncc(a, b, patch_size: int | None = 11, sigma: float = 0.0, mask=None) -> torch.Tensor:
    """NCC of Sobel gradient images (mean of the column and row derivatives), ``(B,)``.

    With a mask, pixels next to the mask border are dropped too, so the edge of a collimator
    does not count as anatomy.
    """
    if mask is not None:
        mask = -F.max_pool2d(-_as_bchw(mask.float()), 3, stride=1, padding=1)  # erode by one pixel
    gxa, gya = image_gradients(a, sigma)
    gxb, gyb = image_gradients(b, sigma)
    score = ncc if patch_size is None else (lambda x, y, m: patch_ncc(x, y, patch_size, m))
    return 0.5 * (score(gxa, gxb, mask) + score(gya, gyb, mask))


def registration_similarity(a, b, mask=None, weight: float = 0.5) -> torch.Tensor:
    """The paper's refinement objective: ``weight · mNCC + (1 − weight) · gradNCC``.

    mNCC = ½ global NCC + ½ NCC over 9×9 patches; gradNCC over 11×11 patches without blur.
    """
    return weight * multiscale_ncc(a, b, mask=mask) + (1 - weight) * gradient_ncc(a, b, 11, 0.0, mask)
