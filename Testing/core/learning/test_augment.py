"""Intensity augmentations: they change how an image looks, never where anything is."""

import math

import pytest
import torch
from xvrcore.learning.augment import AugmentSettings, augment

SPOT = (41.3, 22.6)  # (column, row) of a bright feature, off every symmetry axis


def _spot_image(n: int = 4, size: int = 64) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    spot = torch.exp(-((cols - SPOT[0]) ** 2 + (rows - SPOT[1]) ** 2) / (2 * 2.5**2))
    img = (0.2 + 0.7 * spot).clamp(0, 1)
    return img.expand(n, 1, size, size).clone()


def _centroid(img: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centroid (column, row) of the part above the median, within 12 px of the spot."""
    b, _, h, w = img.shape
    rows, cols = torch.meshgrid(torch.arange(h, dtype=img.dtype), torch.arange(w, dtype=img.dtype), indexing="ij")
    window = ((cols - SPOT[0]) ** 2 + (rows - SPOT[1]) ** 2) < 12**2
    flat = img.reshape(b, -1)
    excess = (flat - flat.median(1, keepdim=True).values).clamp_min(0).reshape(b, h, w) * window
    total = excess.sum((1, 2))
    return torch.stack([(excess * cols).sum((1, 2)) / total, (excess * rows).sum((1, 2)) / total], -1)


def _only(name: str, **extra) -> AugmentSettings:
    """Config where only ``name`` can change the image (probability 1)."""
    off = {"equalize": False, "gamma": (1.0, 1.0), "blur_sigma": (0.0, 0.0), "noise_std": (0.0, 0.0),
           "sharpen": (0.0, 0.0), "invert": False, "erase_area": (0.0, 0.0), "collimate_max": 0.0}
    on = {"equalize": {"equalize": True}, "gamma": {"gamma": (0.7, 1.8)}, "blur": {"blur_sigma": (0.5, 1.5)},
          "noise": {"noise_std": (0.01, 0.02)}, "sharpen": {"sharpen": (0.3, 1.0)}}[name]
    return AugmentSettings(p=1.0, **{**off, **on, **extra})


@pytest.mark.parametrize("name", ["equalize", "gamma", "blur", "noise", "sharpen"])
def test_photometric_augmentations_keep_the_feature_where_it_is(name):
    img = _spot_image()
    before = img.clone()
    out = augment(img, torch.Generator().manual_seed(1), _only(name))
    assert torch.equal(img, before)  # the input is not modified
    assert not torch.allclose(out, img)  # something happened
    shift = (_centroid(out) - _centroid(img)).norm(dim=-1)
    # Equalisation quantises to 256 levels, which perturbs the profile slightly (not its position).
    limit = {"noise": 0.25, "equalize": 0.1}.get(name, 0.01)
    assert float(shift.max()) < limit, f"{name} moved the feature by {shift.tolist()} px"


@pytest.mark.parametrize("name", ["equalize", "gamma", "blur", "sharpen"])
def test_deterministic_augmentations_commute_with_flips(name):
    """A pointwise map or a symmetric filter commutes with mirroring the image; a warp would not."""
    img = _spot_image()
    for dims in ((-1,), (-2,), (-1, -2)):
        a = augment(img.flip(dims), torch.Generator().manual_seed(5), _only(name)).flip(dims)
        b = augment(img, torch.Generator().manual_seed(5), _only(name))
        assert torch.allclose(a, b, atol=1e-6)


def test_all_augmentations_together_keep_the_feature_where_it_is():
    img = _spot_image(n=16)
    cfg = AugmentSettings(p=1.0, erase_area=(0.0, 0.0), collimate_max=0.0)  # blanking tested below
    out = augment(img, torch.Generator().manual_seed(2), cfg)
    assert float((_centroid(out) - _centroid(img)).norm(dim=-1).max()) < 0.3
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_erasing_blanks_one_rectangle_and_leaves_every_other_pixel():
    img = _spot_image(n=8)
    cfg = AugmentSettings(p=1.0, equalize=False, gamma=(1, 1), blur_sigma=(0, 0), noise_std=(0, 0), sharpen=(0, 0),
                        collimate_max=0.0, erase_area=(0.05, 0.15))
    out = augment(img, torch.Generator().manual_seed(3), cfg)
    for o, i in zip(out[:, 0], img[:, 0], strict=True):
        changed = (o != i).nonzero()
        (r0, c0), (r1, c1) = changed.amin(0).tolist(), changed.amax(0).tolist()
        box = o[r0 : r1 + 1, c0 : c1 + 1]
        assert torch.all(box == box[0, 0])  # one constant fill
        area = (r1 - r0 + 1) * (c1 - c0 + 1) / o.numel()
        assert 0.02 < area < 0.25
        outside = torch.ones_like(o, dtype=torch.bool)
        outside[r0 : r1 + 1, c0 : c1 + 1] = False
        assert torch.equal(o[outside], i[outside])


def test_collimation_zeroes_borders_only():
    img = _spot_image(n=16)
    cfg = AugmentSettings(p=1.0, equalize=False, gamma=(1, 1), blur_sigma=(0, 0), noise_std=(0, 0), sharpen=(0, 0),
                        erase_area=(0.0, 0.0), collimate_max=10.0)
    out = augment(img, torch.Generator().manual_seed(4), cfg)
    widths = []
    for o, i in zip(out[:, 0], img[:, 0], strict=True):
        kept = (o != 0).nonzero()
        (r0, c0), (r1, c1) = kept.amin(0).tolist(), kept.amax(0).tolist()
        assert torch.equal(o[r0 : r1 + 1, c0 : c1 + 1], i[r0 : r1 + 1, c0 : c1 + 1])  # inside untouched
        outside = torch.ones_like(o, dtype=torch.bool)
        outside[r0 : r1 + 1, c0 : c1 + 1] = False
        assert bool((o[outside] == 0).all())
        widths += [r0, c0, 63 - r1, 63 - c1]
    limit = math.ceil(10 * 64 / 128)
    assert max(widths) <= limit and max(widths) > 0


def test_same_generator_same_result_and_p_zero_is_identity():
    img = _spot_image(n=8)
    a = augment(img, torch.Generator().manual_seed(9))
    b = augment(img, torch.Generator().manual_seed(9))
    c = augment(img, torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(augment(img, torch.Generator().manual_seed(9), AugmentSettings(p=0.0)), img)


def test_inversion_is_available_and_off_by_default():
    img = _spot_image(n=2)
    cfg = AugmentSettings(p=1.0, equalize=False, gamma=(1, 1), blur_sigma=(0, 0), noise_std=(0, 0), sharpen=(0, 0),
                        invert=True, erase_area=(0.0, 0.0), collimate_max=0.0)
    assert torch.allclose(augment(img, torch.Generator().manual_seed(0), cfg), 1 - img)
    assert AugmentSettings().invert is False
