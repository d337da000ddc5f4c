"""Which end of an X-ray's values is dense tissue, and their conversion to line integrals.

**Polarity and intensity conversion.** ``XrayImage.pixels`` is a line-integral-like image:
dense = high, ≈ 0 at the least attenuated exposed pixels (0.5th percentile), in natural-log units
for raw images and in the file's own (unknown) log units otherwise. Whether dense tissue has high
or low values *in the file* is decided by weighing evidence, all of it reported in ``polarity`` /
``polarity_evidence`` (:func:`decide_polarity`):

1. ``PixelIntensityRelationshipSign (0028,1041)`` (+1: low values = less beam intensity,
   so dense = low) — weight 3.
2. ``PixelIntensityRelationship (0028,1040)`` = LIN (values ∝ beam intensity: dense = low) — 2.
3. **Unexposed pixels** outside the tagged collimator/shutter (:mod:`xvrcore.xray.masks`): with
   no primary photons they look like the densest possible tissue in raw and in processed images
   alike, so their level (compared with the exposed median, relative to the exposed 1–99 % range,
   |Δ| ≥ 0.2) says which end is dense — 1.5. Blanked pixels (one exact value) are display
   conventions and are not used.
4. **Thin tubular structures** (vessels, catheters, wires, contrast-filled tubes) are dense:
   the sign of the strongest Hessian ridges says whether they are dark or bright. Score =
   (dark − bright)/(dark + bright) over the 2 % strongest line-like responses (curved across,
   flat along, no slope at the centre — so edges do not count) at σ = 1, 2, 3 px of a ≤ 256-px
   block-averaged copy (:func:`block_average`), computed on the *ranks* of the exposed values so
   that raw, log- and display-processed versions of one image score alike. Weight 2 if
   |score| ≥ 0.4, 1 if ≥ 0.25 for angiographic/fluoroscopic (XA, RF, SC/OT) images; for
   radiographs (CR, DX, MG …), whose ribs, joint spaces and bowel gas make both kinds of lines,
   only 0.5 and only if |score| ≥ 0.5.
5. The modality's display convention (XA/RF: dense displayed dark; CR/DX/MG: dense displayed
   bright; MONOCHROME1 inverts the display) — 0.5, a tie-breaker.

The sign of the weighted sum decides (a zero sum falls back to the display convention, or, with
none, keeps the file's values; both warned); conflicting evidence is warned about.

Raw detector values are ∝ exp(−line integral); an image is treated as raw
(``L = ln I0 − ln I``, I0 = 99.5th exposed percentile) when ``PixelIntensityRelationship`` is
LIN, or — with no such tag — when bright = transparent, all exposed values are positive,
BitsStored ≥ 12 and the exposed values span ≥ 20× (p99.5/p0.5); LOG, DISP and everything else is
treated as already log-like (``L = ±(value − reference)``) (:func:`intensity_conversion`).
Both decisions can be forced with ``read_xray(..., dense="high"|"low", intensity="lin"|"log")``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from pydicom.dataset import Dataset

from .pixels import DecodedPixels, FrameMap
from .tags import ANGIO_MODALITIES, RADIOGRAPHIC_MODALITIES, as_floats, code_string, header_value

__all__ = [
    "ImageEvidence",
    "IntensityConversion",
    "PolarityDecision",
    "block_average",
    "decide_polarity",
    "intensity_conversion",
    "polarity_summary",
    "reference_image",
    "ridge_score",
]


@dataclass
class ImageEvidence:
    """What the polarity and intensity decisions weigh: the header, the pixels and where they were exposed."""

    ds: Dataset
    px: DecodedPixels
    modality: str
    mask: np.ndarray  # bool (H, W): exposed
    excluded: np.ndarray | None  # bool (H, W): outside the tagged shutters/collimators (None if nothing is)
    reference: np.ndarray  # float32 (H, W): the frames' mean (:func:`reference_image`)

    @property
    def relationship(self) -> str:
        """``PixelIntensityRelationship`` (LIN, LOG, DISP …), or ``""``."""
        return code_string(header_value(self.ds, "PixelIntensityRelationship"))


class _Vote(NamedTuple):
    weight: float
    sign: int  # +1 dense high, -1 dense low, 0 no vote
    description: str


@dataclass(frozen=True)
class PolarityDecision:
    """Where dense tissue is in the file's values, with the evidence weighed."""

    dense_high: bool  # dense tissue has high values in the file
    evidence: list[str]  # every vote, for ``XrayImage.polarity_evidence``
    reason: str  # the vote that decided, in one line


def reference_image(frames: np.ndarray) -> np.ndarray:
    """Mean of up to 16 evenly spread frames of ``frames`` (F, H, W): what the decisions look at (H, W)."""
    n_frames = frames.shape[0]
    picks = np.unique(np.linspace(0, n_frames - 1, min(n_frames, 16)).round().astype(int))
    return frames[picks].mean(0) if len(picks) > 1 else frames[0]


# ---- thin tubular structures --------------------------------------------------------------------------


def block_average(img: np.ndarray, mask: np.ndarray, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Block means of ``img`` (H, W) (≤ ``size`` pixels a side) and the blocks that are entirely exposed."""
    factor = max(1, math.ceil(max(img.shape) / size))
    if factor == 1:
        return img.astype(np.float64), mask
    rows, cols = (img.shape[0] // factor) * factor, (img.shape[1] // factor) * factor
    shape = (rows // factor, factor, cols // factor, factor)
    small = img[:rows, :cols].astype(np.float64).reshape(shape).mean((1, 3))
    return small, mask[:rows, :cols].reshape(shape).all((1, 3))


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Erosion by a (2r+1)² square; outside the image counts as unexposed."""
    if radius <= 0:
        return mask
    out = np.pad(mask, radius, constant_values=False)
    for axis in (0, 1):
        acc = np.ones_like(out)
        n = out.shape[axis]
        for shift in range(-radius, radius + 1):
            rolled = np.roll(out, shift, axis)
            if shift > 0:  # no wrap-around: rolled-in pixels are outside
                rolled[(slice(None),) * axis + (slice(0, shift),)] = False
            elif shift < 0:
                rolled[(slice(None),) * axis + (slice(n + shift, n),)] = False
            acc &= rolled
        out = acc
    return out[radius:-radius, radius:-radius]


def _gauss(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge replication (NumPy, small kernels)."""
    rad = int(3 * sigma + 1)
    x = np.arange(-rad, rad + 1)
    g = np.exp(-(x**2) / (2 * sigma * sigma))
    g /= g.sum()
    out = img
    for axis in (0, 1):
        padded = np.pad(out, [(rad, rad) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for k, w in enumerate(g):
            acc += w * (padded[k : k + n] if axis == 0 else padded[:, k : k + n])
        out = acc
    return out


def _ridge_score_at(t: np.ndarray, m: np.ndarray, sigma: float) -> float | None:
    """(dark − bright) / (dark + bright) of the 2 % strongest tubular responses at scale ``sigma``."""
    g = _gauss(t, sigma)
    gyy = g[2:, 1:-1] - 2 * g[1:-1, 1:-1] + g[:-2, 1:-1]
    gxx = g[1:-1, 2:] - 2 * g[1:-1, 1:-1] + g[1:-1, :-2]
    gxy = (g[2:, 2:] - g[2:, :-2] - g[:-2, 2:] + g[:-2, :-2]) / 4
    grad = np.hypot((g[2:, 1:-1] - g[:-2, 1:-1]) / 2, (g[1:-1, 2:] - g[1:-1, :-2]) / 2)
    half_trace = (gxx + gyy) / 2
    disc = np.sqrt(((gxx - gyy) / 2) ** 2 + gxy**2)
    l1, l2 = half_trace + disc, half_trace - disc
    first = np.abs(l1) >= np.abs(l2)
    big, weak = np.where(first, l1, l2), np.where(first, l2, l1)
    inner = _erode(m, int(3 * sigma + 2))[1:-1, 1:-1]
    if inner.sum() < 100:
        return None
    strength = np.abs(big) * (1 - np.abs(weak) / (np.abs(big) + 1e-12))
    # a line, not the flank of an edge: curved across, flat along, and no slope at its centre
    tubular = inner & (np.abs(weak) < 0.5 * np.abs(big)) & (grad <= 0.3 * sigma * np.abs(big))
    threshold = np.quantile(strength[inner], 0.98)
    sel = tubular & (strength >= threshold) & (strength > 0)
    dark, bright = strength[sel & (big > 0)].sum(), strength[sel & (big < 0)].sum()
    return (dark - bright) / (dark + bright) if dark + bright > 0 else None


def ridge_score(img: np.ndarray, mask: np.ndarray) -> float | None:
    """(dark − bright) / (dark + bright) of the strongest tubular Hessian responses; None if too little image."""
    small, m = block_average(img, mask)
    if m.sum() < 400:
        return None
    exposed = np.sort(small[m])
    if exposed[-1] <= exposed[0]:
        return None
    # ranks among the exposed values: the score does not depend on the (unknown) monotone intensity
    # mapping, so raw, log-processed and display-processed versions of an image score alike
    t = np.searchsorted(exposed, small).astype(np.float64) / exposed.size
    scores = [s for s in (_ridge_score_at(t, m, sigma) for sigma in (1.0, 2.0, 3.0)) if s is not None]
    return float(np.mean(scores)) if scores else None


# ---- the votes ----------------------------------------------------------------------------------------


def _header_vote(ev: ImageEvidence) -> _Vote | None:
    sign_raw = as_floats(header_value(ev.ds, "PixelIntensityRelationshipSign"))
    if sign_raw and sign_raw[0] in (1.0, -1.0):
        vote = (-1 if sign_raw[0] > 0 else 1) * int(ev.px.value_sign)
        return _Vote(3.0, vote, f"PixelIntensityRelationshipSign {sign_raw[0]:+g}")
    if ev.relationship == "LIN":
        return _Vote(2.0, -int(ev.px.value_sign), "PixelIntensityRelationship LIN (values ∝ beam intensity)")
    return None


def _unexposed_vote(ev: ImageEvidence) -> _Vote | None:
    ref = ev.reference
    exposed = ref[ev.mask]
    lo, hi = np.percentile(exposed, [1, 99]) if exposed.size else (0.0, 0.0)
    if ev.excluded is None or not hi > lo:
        return None
    outside = ref[ev.excluded]
    if outside.size < 0.005 * ref.size or not np.ptp(outside) > 0:
        return None
    delta = (np.median(outside) - np.median(exposed)) / (hi - lo)
    if abs(delta) < 0.2:
        return _Vote(0.0, 0, f"unexposed pixels inconclusive ({delta:+.2f})")
    level = "bright" if delta > 0 else "dark"
    return _Vote(1.5, 1 if delta > 0 else -1, f"unexposed (collimated) pixels are {level} ({delta:+.2f})")


def _ridge_vote(ev: ImageEvidence) -> _Vote | None:
    ridge = ridge_score(ev.reference, ev.mask)
    if ridge is None:
        return None
    if ev.modality in RADIOGRAPHIC_MODALITIES:  # bone/lung texture: only a strong score counts, and little
        weight = 0.5 if abs(ridge) >= 0.5 else 0.0
    else:
        weight = 2.0 if abs(ridge) >= 0.4 else 1.0 if abs(ridge) >= 0.25 else 0.0
    what = f"thin tubular structures are {'dark' if ridge > 0 else 'bright'} ({ridge:+.2f})"
    return _Vote(weight, -1 if ridge > 0 else 1, what)


def _convention_vote(ev: ImageEvidence) -> _Vote | None:
    modality, photometric = ev.modality, ev.px.photometric
    if modality not in ANGIO_MODALITIES and modality not in RADIOGRAPHIC_MODALITIES:
        return None
    bright_dense = modality in RADIOGRAPHIC_MODALITIES
    convention = 1 if bright_dense != (photometric == "MONOCHROME1") else -1
    what = f"{modality} display convention (dense {'bright' if bright_dense else 'dark'}, {photometric})"
    return _Vote(0.5, convention, what)


# ---- the decision -------------------------------------------------------------------------------------


def _weigh(votes: list[_Vote], convention: _Vote | None, warnings: list[str]) -> tuple[bool, str]:
    """The sign of the weighted sum, and the heaviest vote for it (see the module docstring)."""
    total = sum(v.weight * v.sign for v in votes)
    if total == 0 and convention is not None:
        warnings.append("image polarity evidence is balanced; the modality's display convention decides")
        return convention.sign > 0, convention.description
    if total == 0:
        warnings.append("image polarity could not be determined; the values were taken as dense = high")
        return True, "undetermined, kept"
    result = total > 0
    used = [v for v in votes if v.weight > 0]
    against = [v.description for v in used if (v.sign > 0) != result]
    if against:
        warnings.append(
            f"conflicting polarity evidence (decided dense = {'high' if result else 'low'}): "
            + "; ".join(against)
        )
    main = max((v for v in used if (v.sign > 0) == result), key=lambda v: v.weight)
    return result, main.description


def decide_polarity(ev: ImageEvidence, dense: str, warnings: list[str]) -> PolarityDecision:
    """Whether dense tissue has high values in ``ev.reference``; ``dense`` ``"high"``/``"low"`` forces it."""
    convention = _convention_vote(ev)
    found = [_header_vote(ev), _unexposed_vote(ev), _ridge_vote(ev), convention]
    votes = [v for v in found if v is not None]
    evidence = [
        f"{'no vote' if v.weight == 0 else 'dense high' if v.sign > 0 else 'dense low'} [w{v.weight:g}]: "
        f"{v.description}"
        for v in votes
    ]
    if dense in ("high", "low"):
        return PolarityDecision(dense == "high", evidence, f"forced by the caller (dense={dense})")
    dense_high, reason = _weigh(votes, convention, warnings)
    return PolarityDecision(dense_high, evidence, reason)


# ---- conversion to line integrals ---------------------------------------------------------------------


@dataclass(frozen=True)
class IntensityConversion:
    """Raw or log-like values, why, and the map from stored values to line integrals."""

    exponential: bool  # raw detector values: L = ln I0 − ln I; else log-like: L = ±(value − reference)
    why: str
    convert: FrameMap  # stored values (H, W) → line integrals (H, W), float32


def _is_raw(
    ev: ImageEvidence, dense_high: bool, intensity: str, p_lo: float, p_hi: float
) -> tuple[bool, str]:
    """Whether the values are raw (∝ beam intensity), and why (see the module docstring)."""
    relationship = ev.relationship
    if intensity != "auto":
        return intensity == "lin", "forced by the caller"
    if relationship == "LIN":
        return True, "PixelIntensityRelationship LIN"
    if relationship:
        return False, f"PixelIntensityRelationship {relationship}"
    span = p_hi / max(p_lo, 1e-12)
    bits = ev.px.bits_stored
    exponential = (not dense_high) and ev.reference[ev.mask].min() > 0 and span >= 20 and bits >= 12
    if exponential:
        return (
            True,
            f"no PixelIntensityRelationship; bright = transparent, {bits}-bit, exposed range ×{span:.0f}",
        )
    return False, "no PixelIntensityRelationship; values look log-processed"


def _line_integral_map(exponential: bool, dense_high: bool, p_lo: float, p_hi: float) -> FrameMap:
    if exponential:
        i0 = float(p_hi)
        eps = max(i0 * 1e-6, 1e-12)

        def convert(x: np.ndarray) -> np.ndarray:
            clipped = np.maximum(x, eps)
            return (np.float32(math.log(i0)) - np.log(clipped)).astype(np.float32)

        return convert
    reference = np.float32(p_lo if dense_high else p_hi)
    sign = np.float32(1.0 if dense_high else -1.0)

    def convert(x: np.ndarray) -> np.ndarray:
        return ((x - reference) * sign).astype(np.float32)

    return convert


def intensity_conversion(
    ev: ImageEvidence, dense_high: bool, intensity: str, warnings: list[str]
) -> IntensityConversion:
    """Raw or log-like (``intensity`` ``"lin"``/``"log"`` forces it), and the map to line integrals."""
    p_lo, p_hi = np.percentile(ev.reference[ev.mask], [0.5, 99.5])
    exponential, why = _is_raw(ev, dense_high, intensity, p_lo, p_hi)
    if exponential and dense_high:
        warnings.append(
            "raw (exponential) conversion needs bright = transparent values, but dense tissue is bright; "
            "converted linearly"
        )
        exponential = False
    return IntensityConversion(exponential, why, _line_integral_map(exponential, dense_high, p_lo, p_hi))


def polarity_summary(px: DecodedPixels, decision: PolarityDecision, conversion: IntensityConversion) -> str:
    """The one line of ``XrayImage.polarity``: photometric, where dense is and why, how it was converted."""
    dense_high, why = decision.dense_high, conversion.why
    return (
        f"{px.photometric}; dense = {'high' if dense_high else 'low'} in the file ({decision.reason}) → "
        f"{'kept' if dense_high else 'inverted'}; "
        + (f"raw intensities → −log ({why})" if conversion.exponential else f"log-like → linear ({why})")
    )
