"""Pose sampling presets (paper Table S2) and their meaning in the project's conventions."""

import pytest
import torch
from xvrcore.geometry.carm import carm_parameters
from xvrcore.learning.sampling import (
    PRESETS,
    PoseRanges,
    get_preset,
    keyed_generator,
    recover_parameters,
    sample_parameters,
    sample_poses,
)

CENTER = torch.tensor([12.0, -40.0, 880.0], dtype=torch.float64)


def test_presets_are_table_s2():
    pelvis, neuro, skull = PRESETS["pelvis"].ranges, PRESETS["neurovasculature"].ranges, PRESETS["skull"].ranges
    assert (pelvis.alpha, pelvis.beta, pelvis.gamma) == ((-45, 45), (-45, 45), (-15, 15))
    assert (pelvis.x, pelvis.y, pelvis.z, pelvis.orientation) == ((-150, 150), (-1000, -450), (-150, 150), "PA")
    assert (neuro.alpha, neuro.beta, neuro.gamma) == ((-45, 90), (-5, 5), (-5, 5))
    assert (neuro.x, neuro.y, neuro.z, neuro.orientation) == ((-25, 25), (700, 800), (-25, 25), "AP")
    assert (skull.alpha, skull.beta, skull.gamma) == ((-125, 125), (-45, 45), (-15, 15))
    assert (skull.x, skull.y, skull.z, skull.orientation) == ((-200, 200), (-1000, -500), (-200, 200), "PA")
    # DeepFluoro's detector: 128 px of 2.1764375 mm at 1020 mm.
    assert PRESETS["pelvis"].sdd == 1020 and PRESETS["pelvis"].pixel_spacing(128) == pytest.approx(2.1764375)
    assert get_preset("Neuro") is PRESETS["neurovasculature"]
    with pytest.raises(ValueError, match="unknown pose preset"):
        get_preset("knee")


@pytest.mark.parametrize(
    "ranges",
    [
        PRESETS["pelvis"].ranges,
        PRESETS["neurovasculature"].ranges,
        PRESETS["skull"].ranges,
        # The reference implementation's AP pelvis: α across ±180°, which matrices report as (-180, 180].
        PoseRanges((135, 225), (-45, 45), (-15, 15), (-150, 150), (450, 1000), (-150, 150), "AP"),
    ],
    ids=["pelvis", "neurovasculature", "skull", "pelvis-AP"],
)
def test_sampled_parameters_are_in_range_and_recovered_from_the_poses(ranges):
    poses, params = sample_poses(ranges, 256, keyed_generator(5, 0), CENTER)
    assert poses.shape == (256, 4, 4) and params.shape == (256, 6)
    lo, hi = ranges.bounds()
    assert bool(((params >= lo) & (params <= hi)).all())
    # Uniform: every parameter spreads over most of its range.
    span = (params.amax(0) - params.amin(0)) / (hi - lo).clamp_min(1e-9)
    assert bool((span > 0.9).all())
    recovered = recover_parameters(poses, ranges, CENTER)
    assert torch.allclose(recovered, params, atol=1e-8)
    assert bool(ranges.contains(carm_parameters(poses, ranges.orientation, CENTER)).all())
    rot = poses[:, :3, :3]
    assert torch.allclose(rot @ rot.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(256, 3, 3), atol=1e-12)
    assert torch.allclose(torch.det(rot), torch.ones(256, dtype=torch.float64))


def _fixed(alpha=0.0, beta=0.0, y=-800.0, orientation="PA"):
    return PoseRanges((alpha, alpha), (beta, beta), (0, 0), (0, 0), (y, y), (0, 0), orientation)


def test_pa_puts_the_source_posterior_and_the_beam_anterior():
    pose, _ = sample_poses(_fixed(y=-800.0), 1, None, CENTER)
    source, beam, rows = pose[0, :3, 3], pose[0, :3, 2], pose[0, :3, 1]
    assert torch.allclose(source - CENTER, torch.tensor([0.0, -800.0, 0.0], dtype=torch.float64), atol=1e-9)  # RAS: -y = posterior
    assert torch.allclose(beam, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), atol=1e-12)
    assert rows[2] < -0.99  # image rows run from head to feet


def test_ap_puts_the_source_anterior_and_the_beam_posterior():
    pose, _ = sample_poses(_fixed(y=700.0, orientation="AP"), 1, None, CENTER)
    source, beam = pose[0, :3, 3], pose[0, :3, 2]
    assert torch.allclose(source - CENTER, torch.tensor([0.0, 700.0, 0.0], dtype=torch.float64), atol=1e-9)
    assert torch.allclose(beam, torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64), atol=1e-12)


def test_alpha_and_beta_are_lao_rao_and_cranial_caudal():
    # PA, α = +90°: a left-lateral view, source at the patient's right (RAS +x), detector at the left.
    lateral, _ = sample_poses(_fixed(alpha=90.0), 1, None, CENTER)
    offset = lateral[0, :3, 3] - CENTER
    assert offset[0] == pytest.approx(800.0, abs=1e-6) and abs(offset[1]) < 1e-6
    cranial, _ = sample_poses(_fixed(beta=30.0), 1, None, CENTER)
    detector_dir = cranial[0, :3, 2]
    assert detector_dir[2] > 0.49  # β > 0 tilts the beam (source → detector) toward the head


def test_keyed_generators_are_reproducible_and_independent():
    a = sample_parameters(PRESETS["pelvis"].ranges, 8, keyed_generator(3, 10, 0))
    b = sample_parameters(PRESETS["pelvis"].ranges, 8, keyed_generator(3, 10, 0))
    c = sample_parameters(PRESETS["pelvis"].ranges, 8, keyed_generator(3, 11, 0))
    d = sample_parameters(PRESETS["pelvis"].ranges, 8, keyed_generator(3, 10, 1))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c) and not torch.allclose(a, d)


def test_bad_ranges_are_rejected_and_reversed_bounds_accepted():
    with pytest.raises(ValueError, match="orientation"):
        PoseRanges((0, 1), (0, 1), (0, 1), (0, 1), (0, 1), (0, 1), "LR")
    with pytest.raises(ValueError, match="beta"):
        PoseRanges((0, 1), (-95, 10), (0, 1), (0, 1), (0, 1), (0, 1))
    r = PoseRanges((0, 1), (0, 1), (0, 1), (0, 1), (-450, -1000), (0, 1))  # Table S2 writes it this way
    assert r.y == (-1000.0, -450.0)
    assert PoseRanges.from_dict(r.to_dict()) == r
