"""The network's input, made by the same functions at training and at inference (xvr paper, Methods M.3, M.5).

An image reaches the network in three steps, whatever its origin:

1. **Canonical camera** — an X-ray with other intrinsics is resampled to the model's
   (:func:`resample_to_intrinsics`); training DRRs are rendered with them already.
2. **Exposure mask** — only the exposed pixels count: the X-ray's mask from the reader
   (:attr:`xvrcore.xray.XrayImage.mask`, carried through the resampling), or at training a random
   circular/rectangular collimation (:func:`xvrcore.learning.augment.exposure_masks`). Pixels outside
   are 0 after scaling, at training and at inference alike.
3. **Scaling** — per-image min–max over the exposed pixels to [0, 1]
   (:func:`xvrcore.learning.network.minmax`), then ``(x − mean) / std`` (:class:`InputSpec`).

Log conversion and polarity (MONOCHROME1, raw counts or log data) are the reader's
(:mod:`xvrcore.xray.polarity`): its ``pixels`` are line integrals, dense = high, like a DRR. At
training the detector augmentations act on line integrals before step 2, the photometric ones on
the scaled image between steps 3a and 3b (:func:`training_input`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry.camera import Intrinsics
from .augment import AugmentSettings, augment, augment_detector, exposure_masks
from .network import InputSpec, minmax, prepare_input

__all__ = ["network_input", "resample_to_intrinsics", "training_input", "xray_input"]


def network_input(images: torch.Tensor, mask: torch.Tensor | None, spec: InputSpec,
                  photometric: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Network input from line-integral images ``(B, 1, H, W)`` and their exposure mask (or None: all exposed).

    ``photometric`` (training only) maps the [0, 1]-scaled images to augmented ones; the pixels
    outside the mask are set to 0 again afterwards, as the scaling left them.
    """
    scaled = minmax(images, mask)
    if photometric is not None:
        scaled = photometric(scaled)
        if mask is not None:
            scaled = torch.where(mask.to(torch.bool).expand_as(scaled), scaled, torch.zeros_like(scaled))
    return prepare_input(scaled, spec)


def training_input(images: torch.Tensor, generator: torch.Generator, config: AugmentSettings, spec: InputSpec,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """Augmented network input of training DRRs ``(B, 1, H, W)`` (line integrals at the canonical camera).

    Detector effects on the line integrals, then a random collimation mask (combined with ``mask``
    if given), then :func:`network_input` with the photometric augmentations.
    """
    b, _, h, w = images.shape
    corrupted = augment_detector(images, generator, config)
    drawn = exposure_masks(generator, b, h, w, config).to(images.device)
    exposed = drawn if mask is None else drawn & mask.to(device=images.device, dtype=torch.bool).expand_as(drawn)
    corrupted = torch.where(exposed, corrupted, torch.zeros_like(corrupted))  # as the resampling leaves them
    return network_input(corrupted, exposed, spec, lambda s: augment(s, generator, config))


def _prefilter(image: torch.Tensor, mask: torch.Tensor, k: Intrinsics, factor: int):
    """Average ``factor × factor`` blocks (the X-ray is much finer than the canonical grid)."""
    if factor <= 1:
        return image, mask, k
    h, w = (image.shape[-2] // factor) * factor, (image.shape[-1] // factor) * factor
    k = k.cropped(0, 0, w, h).resized(w // factor, h // factor)
    image = F.avg_pool2d(image[..., :h, :w], factor)
    mask = F.avg_pool2d(mask[..., :h, :w], factor)
    return image, mask, k


def resample_to_intrinsics(
    image, mask, source: Intrinsics, target: Intrinsics
) -> tuple[torch.Tensor, torch.Tensor]:
    """The X-ray as the camera with ``target`` intrinsics (same pose) would have seen it.

    ``image``: ``(H, W)``; ``mask``: ``(H, W)`` exposed pixels (or None). Returns the resampled
    image and a float mask (1 where the canonical pixel lies inside the exposed X-ray field),
    both ``(target.height, target.width)``. The geometry is explained in :mod:`.inference`.
    """
    img = torch.as_tensor(np.asarray(image, dtype=np.float32) if not torch.is_tensor(image) else image).float()
    if img.shape != (source.height, source.width):
        raise ValueError(f"image is {tuple(img.shape)} but its intrinsics describe {source.height}×{source.width}")
    if min(img.shape) < 2:
        raise ValueError(f"image of {tuple(img.shape)} pixels is too small to resample")
    m = torch.ones_like(img) if mask is None else torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask).float()
    img, m = img[None, None], m[None, None].to(img.device)
    # Only the in-field pixels count in averages; ratio of sums keeps collimator edges clean.
    factor = int(min(abs(source.fx / target.fx), source.fy / target.fy, source.width / 2, source.height / 2))
    summed, m, k = _prefilter(img * m, m, source, factor)  # keeps >= 2 pixels per side for grid_sample
    img = summed / m.clamp_min(1e-6)
    # Canonical pixel → X-ray pixel: u_x = fx_x (u_c − cx_c) / fx_c + cx_x (signs included).
    v_c, u_c = torch.meshgrid(
        torch.arange(target.height, dtype=torch.float64), torch.arange(target.width, dtype=torch.float64), indexing="ij"
    )
    u_x = k.fx * (u_c - target.cx) / target.fx + k.cx
    v_x = k.fy * (v_c - target.cy) / target.fy + k.cy
    grid = torch.stack([2 * u_x / max(k.width - 1, 1) - 1, 2 * v_x / max(k.height - 1, 1) - 1], -1)[None].to(img)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, 0]
    cover = F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, 0]
    inside = (cover > 0.999).float()
    return out * inside, inside


def xray_input(pixels, mask, intrinsics: Intrinsics, canonical: Intrinsics, spec: InputSpec) -> torch.Tensor:
    """Network input ``(1, 1, H, W)`` of an X-ray's line integrals ``(H, W)`` with its exposure mask (or None)."""
    image, inside = resample_to_intrinsics(pixels, mask, intrinsics, canonical)
    if inside.mean() < 0.05:
        raise ValueError("the X-ray covers almost none of the model's field of view; check its intrinsics")
    return network_input(image[None, None], inside[None, None] > 0, spec)
