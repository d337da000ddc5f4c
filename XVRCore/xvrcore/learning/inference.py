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
directly with the X-ray's own intrinsics by :func:`xvrcore.registration.register`. The input is
made by :mod:`.preprocess`, the same functions as the training images'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..geometry.camera import Intrinsics
from ..volume.fingerprint import volume_fingerprint
from .model_files import CheckpointError, LoadedModel, check_volume, load_model
from .network import to_world
from .preprocess import resample_to_intrinsics, xray_input

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
    # The same preprocessing as the training images (:mod:`.preprocess`).
    x = xray_input(xray_pixels, xray_mask, xray_intrinsics, loaded.intrinsics, loaded.input_spec).to(device)
    net = loaded.model.to(device).eval()
    with torch.no_grad():
        centred = net(x).double().cpu()
    return to_world(centred, frame.center, loaded.correction)[0]
