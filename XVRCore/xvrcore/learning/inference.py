"""Initial pose of an X-ray from a trained model (xvr paper, Methods M.5 and Fig. S2).

The network only understands images taken with its canonical camera (training DRRs: a square
detector, principal point in the centre, fixed focal length and pixel size, one mirroring). An
intraoperative X-ray with other intrinsics is first resampled to the canonical ones.

Both cameras share the X-ray's pose — the source position and axes do not change with the
intrinsics — so a canonical pixel ``p_c`` sees the same ray as the X-ray pixel
``p_x = K_x K_c⁻¹ p_c``. With no skew this is a per-axis affine map: the paper's translation of
the principal point, change of focal length and of pixel size (crop/pad + resize) in one step,
exact for a pinhole. A mirrored (detector-side) X-ray and a non-mirrored model (or the reverse)
differ in the sign of ``fx``, so the same map also flips the columns. When the X-ray's pixels are
much finer than the canonical ones it is first area-averaged by an integer factor (with the exact
intrinsics of :meth:`Intrinsics.resized`), so bilinear sampling does not alias.

The prediction is a ``camera_to_world`` of that shared camera, in the CT's RAS frame — usable
directly with the X-ray's own intrinsics by :func:`xvrcore.registration.register`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry.camera import Intrinsics
from ..volume.fingerprint import volume_fingerprint
from .model_files import CheckpointError, LoadedModel, check_volume, load_model
from .network import minmax, prepare_input, to_world

__all__ = ["PatientFrame", "predict_pose", "resample_to_intrinsics"]


@dataclass(frozen=True)
class PatientFrame:
    """Where the CT is: the RAS centre of its voxel box (mm) and, optionally, its fingerprint."""

    center: tuple[float, float, float]
    sha256: str | None = None

    @classmethod
    def from_volume(cls, volume, fingerprint: bool = True) -> PatientFrame:
        center = tuple(float(v) for v in volume.center)
        return cls(center, volume_fingerprint(volume) if fingerprint else None)


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
    both ``(target.height, target.width)``.
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


def _as_model(model, device) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, Path)):
        return load_model(model, device)
    raise TypeError(f"expected a model folder or a LoadedModel, got {type(model).__name__}")


def _frame(loaded: LoadedModel, volume_frame) -> PatientFrame:
    if volume_frame is None:
        volume = loaded.volume
        if volume is None or "center" not in volume:
            raise CheckpointError("this model does not record its CT; give the CT's frame (PatientFrame or the Volume)")
        return PatientFrame(tuple(volume["center"]), volume.get("sha256"))
    if isinstance(volume_frame, PatientFrame):
        return volume_frame
    if hasattr(volume_frame, "center") and hasattr(volume_frame, "affine"):
        return PatientFrame.from_volume(volume_frame)
    return PatientFrame(tuple(float(v) for v in volume_frame))  # a bare centre


def predict_pose(
    model,
    xray_pixels,
    xray_mask,
    xray_intrinsics: Intrinsics,
    volume_frame=None,
    *,
    device: str | torch.device = "cpu",
    allow_other_volume: bool = False,
) -> torch.Tensor:
    """``camera_to_world`` (4×4, float64, CT RAS) of the X-ray, predicted by ``model``.

    Args:
        model: a model folder (``model.json`` + ``model.safetensors``) or a :class:`LoadedModel`.
        xray_pixels: ``(H, W)`` line-integral-like image (dense = high), e.g. ``XrayImage.pixels``.
        xray_mask: ``(H, W)`` exposed pixels (``XrayImage.mask``) or None.
        xray_intrinsics: the X-ray's intrinsics (``XrayImage.intrinsics``; ``fx < 0`` if mirrored).
        volume_frame: the CT — a :class:`PatientFrame`, a :class:`~xvrcore.volume.Volume`, or its
            centre; None uses the centre recorded in a patient-specific model.
        allow_other_volume: use a patient-specific model on a CT it was not trained on.
    """
    loaded = _as_model(model, device)
    frame = _frame(loaded, volume_frame)
    check_volume(loaded.metadata, frame.sha256, allow_other=allow_other_volume)
    image, inside = resample_to_intrinsics(xray_pixels, xray_mask, xray_intrinsics, loaded.intrinsics)
    if inside.mean() < 0.05:
        raise ValueError("the X-ray covers almost none of the model's field of view; check its intrinsics")
    scaled = minmax(image[None, None], inside[None, None] > 0)
    x = prepare_input(scaled, loaded.input_spec).to(device)
    net = loaded.model.to(device).eval()
    with torch.no_grad():
        centred = net(x).double().cpu()
    return to_world(centred, frame.center, loaded.correction)[0]
