"""Intensity augmentations for training DRRs (xvr paper, Methods M.3 "Data augmentation", Fig. S1D).

Synthetic X-rays are made to look like the many ways real ones differ: contrast equalisation,
gamma, blur, noise, sharpening, erased patches (tools, implants) and zeroed borders (collimation),
optionally inversion. **No augmentation moves a pixel**: every one is a pointwise map, a
symmetric filter (which keeps a feature's centroid where it was) or a blanking of whole pixels, so
the ground-truth pose of the image stays valid. Geometry is covered by pose sampling instead.

Images are ``(B, 1, H, W)`` scaled to [0, 1] (see :func:`xvrcore.learning.network.minmax`). Each
augmentation is applied to each image with probability ``p``; all random numbers come from the
given generator and are drawn on the CPU in a fixed amount whatever is applied, so a batch's
augmentation is reproducible from its key on any device.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

__all__ = ["AUGMENTATIONS", "AugmentSettings", "augment"]

AUGMENTATIONS = ("equalize", "gamma", "blur", "noise", "sharpen", "invert", "erase", "collimate")


@dataclass(frozen=True)
class AugmentSettings:
    """Probabilities and strengths. Sizes in pixels are for 128-px images and scale with the image."""

    p: float = 1 / 3  # probability of each augmentation (xvr: 0.333)
    equalize: bool = True
    gamma: tuple[float, float] = (0.7, 1.8)
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    noise_std: tuple[float, float] = (0.0, 0.03)
    sharpen: tuple[float, float] = (0.2, 1.0)
    invert: bool = False  # the paper (arXiv v1) inverted; the current reference does not
    erase_area: tuple[float, float] = (0.02, 0.15)
    collimate_max: float = 10.0  # widest zeroed border per side (xvr: 0-10 px at 128 px)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AugmentSettings:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _uniform(gen: torch.Generator, n: int, bounds: tuple[float, float]) -> torch.Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def _select(apply: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(apply.to(old.device)[:, None, None, None], new, old)


def _equalize(x: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Global histogram equalisation per image (ties stay tied: a histogram, not ranks)."""
    b = x.shape[0]
    idx = (x.clamp(0, 1) * (bins - 1)).round().long().reshape(b, -1)
    hist = torch.zeros(b, bins, dtype=x.dtype, device=x.device).scatter_add_(1, idx, torch.ones_like(idx, dtype=x.dtype))
    cdf = hist.cumsum(1)
    cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, math.inf)).amin(1, keepdim=True)
    lut = ((cdf - cdf_min) / (cdf[:, -1:] - cdf_min).clamp_min(1)).clamp(0, 1)
    return torch.gather(lut, 1, idx).reshape(x.shape)


def _gaussian_kernel(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """``(B, 2r+1)`` normalised symmetric kernels, one per sigma."""
    t = torch.arange(-radius, radius + 1, dtype=sigma.dtype, device=sigma.device)
    k = torch.exp(-0.5 * (t[None] / sigma[:, None].clamp_min(1e-3)) ** 2)
    return k / k.sum(1, keepdim=True)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma (pixels); reflect padding, no shift."""
    b, c, h, w = x.shape
    radius = max(1, min(math.ceil(3 * float(sigma.max())), min(h, w) // 2 - 1))
    k = _gaussian_kernel(sigma.to(x.dtype), radius)  # (B, K)
    y = x.reshape(1, b * c, h, w)
    kk = k.repeat_interleave(c, 0)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), kk[:, None, None, :], groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), kk[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def _erase_boxes(gen: torch.Generator, b: int, h: int, w: int, area: tuple[float, float]):
    """Random rectangles: row/column bounds ``(B, 4)`` (inclusive-exclusive) and fill values ``(B,)``."""
    frac = _uniform(gen, b, area)
    aspect = torch.exp(_uniform(gen, b, (math.log(0.3), math.log(3.3))))
    bh = (frac * h * w * aspect).sqrt().clamp(0, h).round()
    bw = (frac * h * w / aspect).sqrt().clamp(0, w).round()
    top = (torch.rand(b, generator=gen, dtype=torch.float64) * (h - bh + 1)).floor()
    left = (torch.rand(b, generator=gen, dtype=torch.float64) * (w - bw + 1)).floor()
    fill = torch.rand(b, generator=gen, dtype=torch.float64)
    return torch.stack([top, top + bh, left, left + bw], 1).long(), fill


def _box_mask(bounds: torch.Tensor, h: int, w: int, device) -> torch.Tensor:
    """``(B, 1, H, W)`` bool: inside each image's [r0, r1) × [c0, c1) box."""
    rows = torch.arange(h, device=device)[None, :, None]
    cols = torch.arange(w, device=device)[None, None, :]
    b = bounds.to(device)
    in_rows = (rows >= b[:, 0, None, None]) & (rows < b[:, 1, None, None])
    in_cols = (cols >= b[:, 2, None, None]) & (cols < b[:, 3, None, None])
    return (in_rows & in_cols)[:, None]


def augment(images: torch.Tensor, generator: torch.Generator, config: AugmentSettings = AugmentSettings()) -> torch.Tensor:
    """Augmented copy of ``images`` ``(B, 1, H, W)`` in [0, 1]; the input is not modified."""
    x = images
    b, _, h, w = x.shape
    scale = min(h, w) / 128.0  # strengths in pixels are specified for 128-px images
    gen, p = generator, config.p

    def coin() -> torch.Tensor:
        return torch.rand(b, generator=gen) < p

    def dev(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=x.device, dtype=x.dtype)[:, None, None, None]

    apply = coin()
    strength = _uniform(gen, b, (0.5, 1.0))
    if config.equalize:
        x = _select(apply, (1 - dev(strength)) * x + dev(strength) * _equalize(x), x)

    apply, gamma = coin(), _uniform(gen, b, config.gamma)
    x = _select(apply, x.clamp_min(0) ** dev(gamma), x)

    apply, sigma = coin(), _uniform(gen, b, config.blur_sigma) * scale
    x = _select(apply, _blur(x, sigma.to(x.device)), x)

    apply, std = coin(), _uniform(gen, b, config.noise_std)
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float32).to(x.device, x.dtype)
    x = _select(apply, x + dev(std) * noise, x)

    apply, amount = coin(), _uniform(gen, b, config.sharpen)
    smooth = _blur(x, torch.full((b,), 1.0 * scale, dtype=torch.float64, device=x.device))
    x = _select(apply, x + dev(amount) * (x - smooth), x)

    apply = coin()
    if config.invert:
        x = _select(apply, 1 - x, x)

    x = x.clamp(0, 1)
    apply = coin()
    bounds, fill = _erase_boxes(gen, b, h, w, config.erase_area)
    box = _box_mask(bounds, h, w, x.device) & apply.to(x.device)[:, None, None, None]
    x = torch.where(box, dev(fill).expand_as(x), x)

    apply = coin()
    widths = torch.randint(0, round(config.collimate_max * scale) + 1, (b, 4), generator=gen)
    keep = torch.stack([widths[:, 0], h - widths[:, 1], widths[:, 2], w - widths[:, 3]], 1)
    inside = _box_mask(keep, h, w, x.device) | ~apply.to(x.device)[:, None, None, None]
    return torch.where(inside, x, torch.zeros((), dtype=x.dtype, device=x.device))
