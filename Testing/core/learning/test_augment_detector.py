"""Detector and C-arm augmentations: known answers on small synthetic line-integral images."""

import math

import pytest
import torch
from xvrcore.learning.augment import AugmentSettings, augment_detector, exposure_masks

OFF = {"gain": (0.0, 0.0), "scatter": (0.0, 0.0), "detector_blur": (0.0, 0.0), "photons": (1e12, 1e12),
       "coarsen": (1.0, 1.0)}


def _only(**on) -> AugmentSettings:
    return AugmentSettings(p=1.0, **{**OFF, **on})


def _spot(n: int = 4, size: int = 64) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                                indexing="ij")
    spot = torch.exp(-((cols - 30.3) ** 2 + (rows - 33.7) ** 2) / (2 * 4.0**2))
    return (0.5 + 2.0 * spot).expand(n, 1, size, size).clone()


def test_nothing_switched_on_changes_nothing():
    img = _spot()
    out = augment_detector(img, torch.Generator().manual_seed(0), _only())
    assert torch.allclose(out, img, atol=1e-5)


def test_detector_blur_preserves_the_mean_intensity_and_lowers_the_peak():
    img = _spot()
    out = augment_detector(img, torch.Generator().manual_seed(1), _only(detector_blur=(1.0, 2.0)))
    assert torch.allclose(torch.exp(-out).mean((-1, -2)), torch.exp(-img).mean((-1, -2)), rtol=1e-5)
    assert float(out.amax((-1, -2)).max()) < float(img.max()) - 0.05  # the dense spot is spread


def test_photon_noise_has_the_poisson_variance_of_the_intensity():
    flat = torch.ones(4, 1, 64, 64)  # the same line integral everywhere: every pixel sees the open beam
    n = 1000.0
    out = augment_detector(flat, torch.Generator().manual_seed(2), _only(photons=(n, n)))
    relative = torch.exp(-(out.double() - 1))  # intensity relative to the open beam (n photons)
    assert float(relative.var()) == pytest.approx(1 / n, rel=0.1)
    assert float(relative.mean()) == pytest.approx(1.0, abs=0.005)


def test_scatter_adds_a_positive_background_and_compresses_the_contrast():
    img = _spot()
    out = augment_detector(img, torch.Generator().manual_seed(3), _only(scatter=(0.3, 0.6)))
    assert torch.all(torch.exp(-out) > torch.exp(-img))  # more intensity everywhere
    span = lambda x: x.amax((-1, -2)) - x.amin((-1, -2))
    assert torch.all(span(out) < span(img))


def test_gain_field_stays_within_its_peak_to_peak_amplitude():
    img = _spot()
    out = augment_detector(img, torch.Generator().manual_seed(4), _only(gain=(0.2, 0.2)))
    ratio = torch.exp(-out) / torch.exp(-img)
    assert float(ratio.min()) >= 0.9 - 1e-5 and float(ratio.max()) <= 1.1 + 1e-5
    assert float(ratio.max() - ratio.min()) > 0.05  # and it varies across the image


def test_coarser_sampling_keeps_a_constant_image_and_smooths_a_feature():
    const = torch.full((2, 1, 64, 64), 1.7)
    out = augment_detector(const, torch.Generator().manual_seed(5), _only(coarsen=(2.0, 2.5)))
    assert torch.allclose(out, const, atol=1e-5)
    img = _spot()
    out = augment_detector(img, torch.Generator().manual_seed(5), _only(coarsen=(2.0, 2.5)))
    assert float(out.max()) < float(img.max())


def test_default_augmentation_is_deterministic_under_a_seed_and_keeps_shape_and_dtype():
    img = _spot(8)
    a = augment_detector(img, torch.Generator().manual_seed(6))
    b = augment_detector(img, torch.Generator().manual_seed(6))
    c = augment_detector(img, torch.Generator().manual_seed(7))
    assert a.shape == img.shape and a.dtype == img.dtype and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    m1, m2 = exposure_masks(torch.Generator().manual_seed(6), 8, 32, 40), exposure_masks(torch.Generator().manual_seed(6), 8, 32, 40)
    assert m1.shape == (8, 1, 32, 40) and m1.dtype == torch.bool and torch.equal(m1, m2)


def test_exposure_masks_are_discs_or_rectangles():
    cfg = AugmentSettings(p=1.0, mask_circle=(0.5, 0.7), mask_offset=0.05, mask_blades=(0.05, 0.2))
    masks = exposure_masks(torch.Generator().manual_seed(8), 16, 64, 64, cfg)[:, 0]
    kinds = set()
    for m in masks:
        rows, cols = m.nonzero(as_tuple=True)
        r0, r1, c0, c1 = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
        box = (r1 - r0 + 1) * (c1 - c0 + 1)
        if int(m.sum()) == box:
            kinds.add("rectangle")  # the exposed set fills its bounding box
        else:
            radius = (c1 - c0 + 1) / 2
            assert int(m.sum()) == pytest.approx(math.pi * radius**2, rel=0.08)
            kinds.add("disc")
    assert kinds == {"rectangle", "disc"}
    assert torch.all(exposure_masks(torch.Generator().manual_seed(8), 4, 16, 16, AugmentSettings(p=0.0)))
