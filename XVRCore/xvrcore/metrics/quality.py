"""Quality of a registration: its final similarity and a calibrated chance of being sub-millimetre.

A failed registration ends in a wrong local optimum whose DRR matches the X-ray poorly, so the
final similarity (the refinement objective at its finest stage) separates successes from
failures. :func:`fit` turns pairs of (final similarity, mTRE) from the accuracy harness into a
logistic model of P(mTRE < 1 mm | similarity); :data:`DEFAULT_MODEL` was fitted that way (see its
``source``). The flag ``passed`` says whether that chance reaches the model's threshold, so a
radiologist looks at the failed ones first.

The calibration comes from synthetic X-rays, whose similarity to the DRR is higher than a real
X-ray's at the same accuracy (real images hold anatomy and devices the CT lacks). Recalibrate on
data from your own setting with :func:`fit` (``xvrcore evaluate`` writes the pairs).

Below :data:`CHANCE_SIMILARITY` a result is no registration at all (:func:`at_chance_level`): an
image unrelated to the CT reaches that much by the optimiser's fitting alone, so such a result is a
failure, not a result to check.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["CHANCE_SIMILARITY", "DEFAULT_MODEL", "QualityModel", "assess", "at_chance_level", "fit", "load_model",
           "save_model"]


@dataclass(frozen=True)
class QualityModel:
    intercept: float
    slope: float  # per unit of similarity
    pass_probability: float = 0.5
    source: str = ""

    def probability(self, similarity: float) -> float:
        if not math.isfinite(similarity):
            return 0.0
        z = self.intercept + self.slope * similarity
        return float(1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0))))

    @property
    def similarity_threshold(self) -> float:
        """The similarity at which the chance reaches ``pass_probability``."""
        logit = math.log(self.pass_probability / (1 - self.pass_probability))
        return (logit - self.intercept) / self.slope


# fit() on 48 registrations of 16 synthetic pelvis X-rays (VHF pelvis CT, 256² at 0.75 mm) from
# three start distributions (10–40 mm/10°, 40–80 mm/20° with and without the grid search):
# 29 successes (final similarity 0.71–0.93), 19 failures (−0.01–0.46).
DEFAULT_MODEL = QualityModel(intercept=-16.206, slope=27.748, pass_probability=0.5,
                             source="synthetic pelvis X-rays, 48 registrations (xvrcore 0.1.0)")


# The final similarity an unrelated X-ray reaches on the torso CT (64² X-rays, default schedule from a
# header start): white noise 0.06 (0.07 with the retries), smoothed noise 0.13 (0.14); the
# calibration's failed registrations (wrong optima of real views) end at -0.01-0.46, its successes
# at >= 0.71. 0.2 sits above every unrelated image and far below any success (P(<1 mm) ~ 2e-5).
CHANCE_SIMILARITY = 0.2


def at_chance_level(similarity: float) -> bool:
    """Whether a final similarity is no better than an unrelated image's (NaN counts as chance)."""
    return not (math.isfinite(similarity) and similarity > CHANCE_SIMILARITY)


def assess(similarity: float, model: QualityModel = DEFAULT_MODEL) -> dict:
    """The quality entry written with every result."""
    p = model.probability(similarity)
    return {
        "similarity": float(similarity),
        "p_submillimetre": round(p, 4),
        "passed": bool(p >= model.pass_probability),
        "similarity_threshold": round(model.similarity_threshold, 4),
        "calibration": model.source,
    }


def fit(similarities, errors_mm, threshold_mm: float = 1.0, l2: float = 1e-3, source: str = "") -> QualityModel:
    """Logistic regression of ``error < threshold_mm`` on similarity (Newton's method, light L2)."""
    x = np.asarray(similarities, dtype=np.float64)
    y = (np.asarray(errors_mm, dtype=np.float64) < threshold_mm).astype(np.float64)
    if x.size < 4 or y.min() == y.max():
        raise ValueError("need at least 4 results with both successes and failures to calibrate")
    design = np.stack([np.ones_like(x), x], 1)
    w = np.zeros(2)
    for _ in range(100):
        p = 1 / (1 + np.exp(-np.clip(design @ w, -50, 50)))
        grad = design.T @ (p - y) + l2 * w
        hess = design.T @ (design * (p * (1 - p))[:, None]) + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return QualityModel(float(w[0]), float(w[1]), 0.5, source or f"fitted on {x.size} registrations")


def save_model(path: str | Path, model: QualityModel) -> Path:
    from ..io.atomic import atomic_write_text

    return atomic_write_text(path, json.dumps(asdict(model), indent=1))


def load_model(path: str | Path) -> QualityModel:
    return QualityModel(**json.loads(Path(path).read_text()))
