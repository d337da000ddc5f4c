"""The summed-area box means and the fixed-X-ray objective give what the direct definitions give."""

import pytest
import torch
import torch.nn.functional as F
from xvrcore.metrics import RegistrationObjective, patches, registration_similarity
from xvrcore.metrics.patches import box_mean


def _image(seed: int, shape=(1, 1, 37, 29), dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    smooth = F.avg_pool2d(torch.rand(shape, generator=g, dtype=torch.float64), 5, stride=1, padding=2)
    return (smooth + 0.1 * torch.rand(shape, generator=g, dtype=torch.float64)).to(dtype)


@pytest.mark.parametrize("k", [1, 5, 9, 11])
def test_box_mean_is_the_average_over_every_window(k):
    x = _image(0, (2, 3, 40, 33))
    assert torch.allclose(box_mean(x, k), F.avg_pool2d(x, k, stride=1), atol=1e-12)


def test_box_mean_keeps_float32_precision_on_a_wide_row_with_an_offset():
    # prefix sums of 1024 values near 1000 reach 10⁶: in float32 a window's sum would keep ~2 digits of its spread
    x = 1000 + _image(1, (1, 1, 16, 1024))
    got = box_mean(x.float(), 11).double()
    assert (got - F.avg_pool2d(x, 11, stride=1)).abs().max() < 1e-4


def _reference_patch_ncc(a, b, w, k):
    """The definition, with direct window sums (avg_pool2d) instead of summed-area tables."""
    def box(x):
        return F.avg_pool2d(x, k, stride=1)
    sw = box(w)
    safe = sw.clamp_min(1e-6)
    ma, mb = box(a * w) / safe, box(b * w) / safe
    va, vb = (box(a * a * w) / safe - ma * ma).clamp_min(0), (box(b * b * w) / safe - mb * mb).clamp_min(0)
    local = (box(a * b * w) / safe - ma * mb) / ((va + patches.EPS) * (vb + patches.EPS)).sqrt()
    weight = torch.where(sw >= 0.5, sw, torch.zeros_like(sw))
    return (local * weight).sum((-1, -2)) / weight.sum((-1, -2))


def _standard(x, w):
    mean = (x * w).sum((-1, -2), keepdim=True) / w.sum()
    return (x - mean) / (((x - mean) ** 2 * w).sum((-1, -2), keepdim=True) / w.sum()).sqrt()


def _reference_objective(drr, xray, mask, weight):
    """The paper's objective written out: ½ (½ NCC + ½ 9×9 patch NCC) + ½ mean of 11×11 patch NCCs of Sobel
    gradients, the gradients' mask eroded by one pixel."""
    w = mask[None, None]
    a, b = _standard(drr, w), _standard(xray[None, None], w)
    mncc = 0.5 * (a * b * w).sum((-1, -2))[:, 0] / w.sum() + 0.5 * _reference_patch_ncc(a, b, w, 9)[:, 0]
    eroded = -F.max_pool2d(-w, 3, stride=1, padding=1)
    sobel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], dtype=drr.dtype)
    grad = 0
    for kernel in (sobel, sobel.T):
        ga = F.conv2d(F.pad(drr, (1, 1, 1, 1), mode="replicate"), kernel[None, None])
        gb = F.conv2d(F.pad(xray[None, None], (1, 1, 1, 1), mode="replicate"), kernel[None, None])
        grad = grad + 0.5 * _reference_patch_ncc(_standard(ga, eroded), _standard(gb, eroded), eroded, 11)[:, 0]
    return weight * mncc + (1 - weight) * grad


def test_objective_matches_the_definition_for_a_batch_of_drrs_and_a_collimated_xray():
    xray = _image(2)[0, 0]
    mask = torch.ones_like(xray)
    mask[:, :6] = 0  # a collimator blade
    drrs = torch.cat([_image(3), _image(4), xray[None, None] * 2 + 1])
    objective = RegistrationObjective(xray, mask, weight=0.3)
    expected = _reference_objective(drrs, xray, mask, 0.3)
    assert torch.allclose(objective(drrs), expected, atol=1e-10)
    # an affine copy of the X-ray matches it (below 1 only by the flat windows' EPS); the others do not
    scores = objective(drrs)
    assert 0.999 < scores[2] <= 1.0 and scores[:2].max() < 0.9
    assert torch.allclose(registration_similarity(drrs, xray, mask, 0.3), expected, atol=1e-10)


def test_objective_gradient_matches_finite_differences():
    xray = _image(5)[0, 0]
    drr = _image(6).requires_grad_()
    objective = RegistrationObjective(xray, None)
    assert torch.autograd.gradcheck(lambda d: objective(d), (drr,), eps=1e-6, atol=1e-6)
