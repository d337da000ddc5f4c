"""The paper's C-arm parameters (α, β, γ, x, y, z) and DiffDRR poses, against their stated meaning."""


import pytest
import torch
from core_helpers import ISO, D, beam, carm_view
from xvrcore.geometry.carm import carm_parameters, carm_pose, from_diffdrr, to_diffdrr
from xvrcore.geometry.rotations import euler_to_matrix, make_rigid


def test_ap_zero_angles_source_anterior_beam_posterior_head_up():
    c2w = carm_view([0.0, 0.0, 0.0, 0.0, 850.0, 0.0])
    assert torch.allclose(c2w[:3, 3], ISO + torch.tensor([0.0, 850.0, 0.0], dtype=D))
    assert torch.allclose(beam(c2w), torch.tensor([0.0, -1.0, 0.0], dtype=D), atol=1e-12)
    # +y of the camera (increasing rows) points to the feet: row 0 is superior.
    assert torch.allclose(c2w[:3, 1], torch.tensor([0.0, 0.0, -1.0], dtype=D), atol=1e-12)
    # Detector-side (mirrored) AP image: columns run along -x of the camera = patient right (+x RAS).
    assert torch.allclose(-c2w[:3, 0], torch.tensor([1.0, 0.0, 0.0], dtype=D), atol=1e-12)
    assert abs(float(torch.det(c2w[:3, :3])) - 1) < 1e-12


def test_pa_positive_alpha_puts_the_source_at_patient_right_and_beta_tilts_the_detector_cranially():
    lateral = carm_view([90.0, 0.0, 0.0, 0.0, -800.0, 0.0], "PA")
    assert torch.allclose(lateral[:3, 3] - ISO, torch.tensor([800.0, 0.0, 0.0], dtype=D), atol=1e-9)
    assert torch.allclose(beam(lateral), torch.tensor([-1.0, 0.0, 0.0], dtype=D), atol=1e-12)
    cranial = carm_view([0.0, 20.0, 0.0, 0.0, -800.0, 0.0], "PA")
    # The detector (along the beam from the isocentre) moves toward the head (+z).
    assert float(beam(cranial)[2]) > 0.3
    assert float((cranial[:3, 3] - ISO)[2]) < 0  # and the source toward the feet
    assert abs(float(torch.det(lateral[:3, :3])) - 1) < 1e-12


def test_gamma_rotates_about_the_beam_and_y_is_the_source_isocentre_distance():
    base = carm_view([15.0, -10.0, 0.0, 0.0, 700.0, 0.0])
    spun = carm_view([15.0, -10.0, 30.0, 0.0, 700.0, 0.0])
    assert torch.allclose(beam(base), beam(spun), atol=1e-12)
    assert float((base[:3, 3] - ISO).norm()) == pytest.approx(700.0)
    # The principal ray passes through the isocentre when x = z = 0.
    to_iso = ISO - base[:3, 3]
    assert torch.allclose(to_iso / to_iso.norm(), beam(base), atol=1e-12)


@pytest.mark.parametrize("orientation", ["AP", "PA"])
def test_carm_parameters_round_trip(orientation):
    g = torch.Generator().manual_seed(5)
    params = torch.rand(50, 6, generator=g, dtype=D) * 2 - 1
    params *= torch.tensor([170.0, 80.0, 170.0, 150.0, 200.0, 150.0], dtype=D)
    params[:, 4] += 800.0 if orientation == "AP" else -800.0
    c2w = carm_pose(params, orientation, ISO)
    assert torch.allclose(torch.det(c2w[:, :3, :3]), torch.ones(50, dtype=D), atol=1e-12)
    assert torch.allclose(carm_parameters(c2w, orientation, ISO), params, atol=1e-8)


@pytest.mark.parametrize("orientation", ["AP", "PA"])
@pytest.mark.parametrize("reverse", [False, True])
def test_diffdrr_mapping_round_trip(orientation, reverse):
    p = make_rigid(euler_to_matrix(torch.tensor([0.2, -0.3, 0.1], dtype=D), "ZXY"), torch.tensor([5.0, 600.0, -7.0], dtype=D))
    ours, mirrored = from_diffdrr(p, orientation, reverse, ISO)
    assert abs(float(torch.det(ours[:3, :3])) - 1) < 1e-12
    back, rev = to_diffdrr(ours, mirrored, orientation, ISO)
    assert rev == reverse
    assert torch.allclose(back, p, atol=1e-12)
    # The DiffDRR defaults (AP, no reverse) give the detector-side view, like DICOM.
    assert from_diffdrr(p, "AP", False)[1] is True
    assert from_diffdrr(p, "PA", True)[1] is True
