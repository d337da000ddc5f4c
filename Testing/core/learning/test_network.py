"""The pose-regression network: timm-compatible layout, rotation decodings, pose decoding."""

import pytest
import torch
from xvrcore.geometry.carm import carm_pose
from xvrcore.geometry.rotations import euler_to_matrix, quaternion_to_matrix
from xvrcore.learning.network import (
    PARAMETERIZATIONS,
    InputSpec,
    PoseModel,
    PoseRegressor,
    PoseSpec,
    decode_pose,
    decode_rotation,
    encode_rotation,
    from_world,
    minmax,
    prepare_input,
    to_world,
)


def _expected_timm_resnet18_keys() -> list[str]:
    """State-dict keys of ``timm.create_model("resnet18", num_classes=0, in_chans=1, norm_layer="groupnorm")``."""
    keys = ["conv1.weight", "bn1.weight", "bn1.bias"]
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}."
            keys += [p + "conv1.weight", p + "bn1.weight", p + "bn1.bias", p + "conv2.weight", p + "bn2.weight", p + "bn2.bias"]
            if block == 0 and layer > 1:
                keys += [p + "downsample.0.weight", p + "downsample.1.weight", p + "downsample.1.bias"]
    return ["backbone." + k for k in keys]


def test_state_dict_has_the_reference_layout():
    model = PoseRegressor("resnet18", "quaternion_adjugate")
    sd = model.state_dict()
    assert sorted(sd) == sorted(_expected_timm_resnet18_keys() + [
        "xyz_regression.weight", "xyz_regression.bias", "rot_regression.weight", "rot_regression.bias"])
    assert sd["backbone.conv1.weight"].shape == (64, 1, 7, 7)
    assert sd["backbone.layer4.1.bn2.weight"].shape == (512,)
    assert sd["rot_regression.weight"].shape == (10, 512) and sd["xyz_regression.weight"].shape == (3, 512)
    # ResNet-18 without its classifier, one input channel: 11,689,512 − 513,000 − 2·64·7·7.
    assert sum(v.numel() for k, v in sd.items() if k.startswith("backbone.")) == 11_170_240
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 32 for m in norms)
    deep = PoseRegressor("resnet34", "rotation_6d")
    assert "backbone.layer3.5.conv2.weight" in deep.state_dict()


def test_groupnorm_predictions_do_not_depend_on_the_batch():
    model = PoseRegressor("resnet18", "rotation_6d", width=8).eval()
    x = torch.randn(3, 1, 32, 32)
    rot, xyz = model(x)
    rot1, xyz1 = model(x[1:2])
    assert rot.shape == (3, 6) and xyz.shape == (3, 3)
    assert torch.allclose(rot[1:2], rot1, atol=1e-5) and torch.allclose(xyz[1:2], xyz1, atol=1e-5)


@pytest.mark.parametrize("name", sorted(PARAMETERIZATIONS))
def test_rotation_parameterizations_round_trip(name):
    rot = euler_to_matrix(torch.randn(64, 3, dtype=torch.float64) * 2)
    vec = encode_rotation(rot, name)
    assert vec.shape == (64, PARAMETERIZATIONS[name])
    assert torch.allclose(decode_rotation(vec, name), rot, atol=1e-9)


def test_quaternion_adjugate_decoding_is_scale_and_sign_free():
    q = torch.nn.functional.normalize(torch.randn(16, 4, dtype=torch.float64), dim=-1)
    expected = quaternion_to_matrix(q)
    i, j = torch.triu_indices(4, 4)
    adj = (q[:, :, None] * q[:, None, :])[:, i, j]  # upper triangle of q qᵀ, row-major (the reference's layout)
    for scale in (1.0, 7.5, -0.2):
        assert torch.allclose(decode_rotation(scale * adj, "quaternion_adjugate"), expected, atol=1e-9)


def test_rotation_6d_uses_pytorch3d_rows():
    rot = euler_to_matrix(torch.tensor([[0.3, -0.4, 1.1]], dtype=torch.float64))
    assert torch.allclose(decode_rotation(rot[:, :2, :].reshape(1, 6), "rotation_6d"), rot, atol=1e-12)


@pytest.mark.parametrize("orientation", ["AP", "PA"])
def test_euler_heads_decode_to_the_papers_carm_pose(orientation):
    params = torch.tensor([[30.0, -12.0, 5.0, 20.0, -750.0, -35.0], [-40.0, 25.0, -9.0, -60.0, -500.0, 80.0]], dtype=torch.float64)
    spec = PoseSpec("euler_angles", "ZXY", orientation, (0.0, 0.0, 0.0), 1.0)
    pose = decode_pose(torch.deg2rad(params[:, :3]), params[:, 3:], spec)
    assert torch.allclose(pose, carm_pose(params, orientation), atol=1e-9)
    # The translation head is normalised: offset + scale · output.
    spec2 = PoseSpec("euler_angles", "ZXY", orientation, (10.0, -700.0, 0.0), 250.0)
    pose2 = decode_pose(torch.deg2rad(params[:, :3]), (params[:, 3:] - torch.tensor([10.0, -700.0, 0.0], dtype=torch.float64)) / 250.0, spec2)
    assert torch.allclose(pose2, pose, atol=1e-9)


def test_untrained_model_starts_at_the_middle_pose():
    spec = PoseSpec("quaternion_adjugate", "ZXY", "PA", (0.0, -725.0, 0.0), 275.0)
    model = PoseModel(PoseRegressor("resnet18", spec.parameterization, width=8), spec)
    mid = torch.tensor([20.0, -10.0, 0.0], dtype=torch.float64)
    model.start_at(euler_to_matrix(torch.deg2rad(mid)).float())
    with torch.no_grad():
        pose = model(torch.randn(2, 1, 32, 32)).double()
    expected = carm_pose(torch.tensor([20.0, -10.0, 0.0, 0.0, -725.0, 0.0], dtype=torch.float64), "PA")
    # The heads start small, not zero (so the encoder gets gradients at once): near the middle.
    angle = torch.arccos(((pose[:, :3, :3].transpose(-1, -2) @ expected[:3, :3]).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2)
    assert float(torch.rad2deg(angle).max()) < 3.0
    assert float((pose[:, :3, 3] - expected[:3, 3]).norm(dim=-1).max()) < 0.03 * 725


def test_world_frame_and_correction_round_trip():
    centred = carm_pose(torch.tensor([10.0, 5.0, -3.0, 4.0, -800.0, 9.0], dtype=torch.float64), "PA")
    center = torch.tensor([100.0, -50.0, 900.0], dtype=torch.float64)
    corr = carm_pose(torch.tensor([3.0, -2.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64), "PA") @ torch.linalg.inv(
        carm_pose(torch.zeros(6, dtype=torch.float64), "PA"))  # a proper rotation
    world = to_world(centred, center, corr)
    assert torch.allclose(world[:3, 3], center + corr[:3, :3] @ centred[:3, 3])
    assert torch.allclose(from_world(world, center, corr), centred, atol=1e-9)


def test_input_normalisation_uses_only_the_exposed_pixels():
    img = torch.zeros(1, 1, 8, 8)
    img[..., 2:6, 2:6] = torch.linspace(3.0, 5.0, 16).reshape(4, 4)
    img[..., 0, 0] = 100.0  # outside the mask: must not set the scale
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., 2:6, 2:6] = True
    scaled = minmax(img, mask)
    assert float(scaled[mask].min()) == pytest.approx(0.0) and float(scaled[mask].max()) == pytest.approx(1.0, abs=1e-5)
    assert float(scaled[~mask].abs().max()) == 0.0
    x = prepare_input(scaled, InputSpec())
    assert float(x[~mask].mean()) == pytest.approx(-1.5)  # (0 − 0.15) / 0.1
