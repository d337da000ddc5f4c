"""Augmentations for training DRRs (xvr paper, Methods M.3 "Data augmentation", Fig. S1D), and the detector's.

Synthetic X-rays are made to look like the many ways real ones differ: contrast equalisation,
gamma, blur, noise, sharpening, erased patches (tools, implants) and zeroed borders (collimation),
optionally inversion. **No augmentation moves a pixel**: every one is a pointwise map, a
symmetric filter (which keeps a feature's centroid where it was) or a blanking of whole pixels, so
the ground-truth pose of the image stays valid. Geometry is covered by pose sampling instead.

Beyond the paper's set, what real detectors and C-arms do: :func:`augment_detector` acts on line
integrals (a smooth gain field, a scatter-like low-frequency background, detector blur and photon
noise, all in the intensity domain ``exp(−L)``, then the log conversion again; a coarser sampling,
as the resampling of other pixel spacings to the canonical camera gives) and
:func:`exposure_masks` draws circular or rectangular collimation masks, off centre as well (as an
off-centre principal point leaves the field after resampling), applied as the reader's mask is at
inference (:mod:`xvrcore.learning.preprocess`).

Images of :func:`augment` are ``(B, 1, H, W)`` scaled to [0, 1] (see :func:`xvrcore.learning.network.minmax`). Each
augmentation is applied to each image with probability ``p``; all random numbers come from the
given generator and are drawn on the CPU in a fixed amount whatever is applied, so a batch's
augmentation is reproducible from its key on any device.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

__all__ = ["AUGMENTATIONS", "DETECTOR_AUGMENTATIONS", "AugmentSettings", "augment", "augment_detector",
           "exposure_masks"]

AUGMENTATIONS = ("equalize", "gamma", "blur", "noise", "sharpen", "invert", "erase", "collimate")
DETECTOR_AUGMENTATIONS = ("gain", "scatter", "detector_blur", "photons", "coarsen", "mask")


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
    # Detector and C-arm (each with probability p; 0-width ranges switch one off):
    gain: tuple[float, float] = (0.0, 0.25)  # peak-to-peak of a smooth multiplicative gain field
    scatter: tuple[float, float] = (0.0, 0.6)  # low-frequency background, fraction of the mean intensity
    detector_blur: tuple[float, float] = (0.3, 1.5)  # Gaussian sigma of the detector (intensity domain)
    photons: tuple[float, float] = (300.0, 30000.0)  # unattenuated photons per pixel (log-uniform)
    coarsen: tuple[float, float] = (1.0, 2.5)  # coarser sampling factor (other pixel spacing, resampled)
    mask_circle: tuple[float, float] = (0.7, 1.2)  # circular field radius / half the shorter side
    mask_blades: tuple[float, float] = (0.0, 0.25)  # rectangular blade width / side, per blade
    mask_offset: float = 0.12  # field centre offset / side (off-centre principal point)

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


def _smooth_field(gen: torch.Generator, b: int, h: int, w: int, cells: int = 4) -> torch.Tensor:
    """``(B, 1, H, W)`` float64 low-frequency random fields in about [−1, 1] (bicubic on a coarse grid)."""
    coarse = 2 * torch.rand(b, 1, cells, cells, generator=gen, dtype=torch.float64) - 1
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True).clamp(-1, 1)


def _coarsen(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Area-average to ``1/factor`` of the size and back up (bilinear, centres aligned: no shift)."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(2, round(h / factor)), max(2, round(w / factor))), mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def augment_detector(line_integrals: torch.Tensor, generator: torch.Generator,
                     config: AugmentSettings = AugmentSettings()) -> torch.Tensor:
    """Line integrals ``(B, 1, H, W)`` as a real detector and log conversion would give them (new tensor)."""
    x = line_integrals
    b, _, h, w = x.shape
    gen, p = generator, config.p

    def coin() -> torch.Tensor:
        return torch.rand(b, generator=gen) < p

    def dev(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=x.device, dtype=x.dtype).reshape(-1, 1, 1, 1) if t.dim() == 1 else t.to(x.device, x.dtype)

    # Intensity relative to the least attenuated pixel (= 1): the reader's line integrals have any offset.
    floor = x.amin((-1, -2), keepdim=True)
    intensity = torch.exp(-(x - floor))
    apply, amp, field = coin(), _uniform(gen, b, config.gain), _smooth_field(gen, b, h, w)
    intensity = _select(apply, intensity * (1 + dev(amp) / 2 * dev(field)), intensity)
    apply, frac, field = coin(), _uniform(gen, b, config.scatter), _smooth_field(gen, b, h, w, cells=3)
    mean = intensity.mean((-1, -2), keepdim=True)
    intensity = _select(apply, intensity + dev(frac) * mean * (1 + 0.5 * dev(field)), intensity)
    apply, sigma = coin(), _uniform(gen, b, config.detector_blur)
    intensity = _select(apply, _blur(intensity, sigma.to(x.device)), intensity)
    lo, hi = (math.log(v) for v in config.photons)
    apply, photons = coin(), torch.exp(_uniform(gen, b, (lo, hi)))
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float32).to(x.device, x.dtype)
    noisy = (intensity + (intensity.clamp_min(0) / dev(photons)).sqrt() * noise).clamp_min(0.5 / dev(photons))
    intensity = _select(apply, noisy, intensity)
    out = torch.where(intensity == torch.exp(-(x - floor)), x, floor - torch.log(intensity.clamp_min(1e-30)))
    apply, factor = coin(), _uniform(gen, b, config.coarsen)
    for i in torch.nonzero(apply & (factor > 1.01)).flatten().tolist():
        out[i : i + 1] = _coarsen(out[i : i + 1], float(factor[i]))
    return out


def exposure_masks(generator: torch.Generator, b: int, h: int, w: int,
                   config: AugmentSettings = AugmentSettings()) -> torch.Tensor:
    """``(B, 1, H, W)`` bool exposure masks: a circular or rectangular field (each half the time), or all exposed."""
    gen = generator
    apply = torch.rand(b, generator=gen) < config.p
    circular = torch.rand(b, generator=gen) < 0.5
    radius = _uniform(gen, b, config.mask_circle) * min(h, w) / 2
    shift = _uniform(gen, 2 * b, (-config.mask_offset, config.mask_offset)).reshape(b, 2) * torch.tensor([w, h])
    blades = _uniform(gen, 4 * b, config.mask_blades).reshape(b, 4) * torch.tensor([h, h, w, w])
    rows = torch.arange(h, dtype=torch.float64)[None, :, None]
    cols = torch.arange(w, dtype=torch.float64)[None, None, :]
    cx, cy = ((w - 1) / 2 + shift[:, 0])[:, None, None], ((h - 1) / 2 + shift[:, 1])[:, None, None]
    circle = (cols - cx) ** 2 + (rows - cy) ** 2 <= radius[:, None, None] ** 2
    top, bottom = blades[:, 0, None, None] + shift[:, 1, None, None], h - blades[:, 1, None, None] + shift[:, 1, None, None]
    left, right = blades[:, 2, None, None] + shift[:, 0, None, None], w - blades[:, 3, None, None] + shift[:, 0, None, None]
    rect = (rows + 0.5 >= top) & (rows + 0.5 <= bottom) & (cols + 0.5 >= left) & (cols + 0.5 <= right)
    mask = torch.where(circular[:, None, None], circle, rect) | ~apply[:, None, None]
    return mask[:, None]


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
