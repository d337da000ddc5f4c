"""HU / MRA intensity to linear attenuation (1/mm), numpy and torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from xvrcore.volume import Volume, VolumeError, load_volume, volume_from_array
from xvrcore.volume.attenuation import (
    BONE_THRESHOLD_HU,
    MU_CONTRAST_PER_MM,
    MU_WATER_PER_MM,
    hu_to_attenuation,
    mra_to_attenuation,
    mra_window,
    to_attenuation,
)

MU_W = MU_WATER_PER_MM
T = BONE_THRESHOLD_HU


@pytest.fixture(scope="module")
def pelvis(pelvis_ct_path) -> Volume:
    return load_volume(pelvis_ct_path)


# --- CT -------------------------------------------------------------------------------------
def test_constants_are_physical():
    assert MU_W == pytest.approx(0.0206, abs=3e-4)  # water at 60 keV
    assert 100.0 < T < 600.0
    assert MU_CONTRAST_PER_MM > MU_W


@pytest.mark.parametrize(
    ("multiplier", "expected_over_water"),
    [
        (1.0, [0.0, 0.0, 0.0, 0.5, 1.0, 1.0 + T / 1000, 2.0]),
        (3.0, [0.0, 0.0, 0.0, 0.5, 1.0, 1.0 + T / 1000, 1.0 + T / 1000 + 3.0 * (1000 - T) / 1000]),
    ],
)
def test_hu_to_attenuation_exact_values(multiplier, expected_over_water):
    hu = np.array([-3024.0, -1500.0, -1000.0, -500.0, 0.0, T, 1000.0])
    mu = hu_to_attenuation(hu, bone_multiplier=multiplier)
    assert isinstance(mu, np.ndarray) and mu.dtype == np.float32
    np.testing.assert_allclose(mu, MU_W * np.array(expected_over_water), rtol=1e-6, atol=1e-9)


def test_hu_to_attenuation_with_explicit_threshold():
    hu = np.array([-1000.0, 0.0, 350.0, 1000.0])
    tripled = hu_to_attenuation(hu, 3.0, bone_threshold_hu=350.0, mu_water=0.02)
    np.testing.assert_allclose(tripled, [0.0, 0.02, 0.027, 0.066], rtol=1e-6)
    plain = hu_to_attenuation(hu, 1.0, bone_threshold_hu=350.0, mu_water=0.02)
    np.testing.assert_allclose(plain, [0.0, 0.02, 0.027, 0.04], rtol=1e-6)


@pytest.mark.parametrize("multiplier", [0.0, 0.5, 1.0, 3.0])
def test_hu_to_attenuation_is_monotone_non_negative_and_continuous(multiplier):
    hu = np.linspace(-3100.0, 3100.0, 62001)
    mu = hu_to_attenuation(hu, bone_multiplier=multiplier).astype(np.float64)
    assert mu.min() >= 0.0
    assert np.all(np.diff(mu) >= 0.0)
    below, at, above = hu_to_attenuation(np.array([T - 1e-2, T, T + 1e-2]), multiplier)
    assert abs(above - below) < MU_W * 1e-4 * max(multiplier, 1.0)
    assert at == pytest.approx(MU_W * (1 + T / 1000), rel=1e-6)


def test_bone_multiplier_changes_only_bone():
    hu = np.array([-800.0, -50.0, 40.0, T - 1.0, 700.0, 1500.0])
    base, boosted = hu_to_attenuation(hu, 1.0), hu_to_attenuation(hu, 2.5)
    np.testing.assert_array_equal(boosted[:4], base[:4])
    assert np.all(boosted[4:] > base[4:])


def test_hu_to_attenuation_accepts_integer_arrays():
    mu = hu_to_attenuation(np.array([[-1024, 0], [500, 1000]], dtype=np.int16))
    assert mu.dtype == np.float32 and mu.shape == (2, 2)
    assert mu[0, 0] == 0.0 and mu[0, 1] == pytest.approx(MU_W)


def test_negative_bone_multiplier_is_refused():
    with pytest.raises(ValueError, match="bone_multiplier"):
        hu_to_attenuation(np.zeros(3), bone_multiplier=-1.0)


def test_numpy_and_torch_agree():
    hu = np.random.default_rng(0).uniform(-3024, 3000, size=(6, 7, 8)).astype(np.float32)
    for multiplier in (1.0, 2.0):
        expected = hu_to_attenuation(hu, multiplier)
        got = hu_to_attenuation(torch.from_numpy(hu), multiplier)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-9)
    as_int = hu_to_attenuation(torch.tensor([-1000, 0, 1000], dtype=torch.int16))
    assert as_int.dtype == torch.float32
    np.testing.assert_allclose(as_int.numpy(), [0.0, MU_W, 2 * MU_W], rtol=1e-6)


def test_torch_gradients():
    hu = torch.tensor([-2000.0, -500.0, 100.0, 800.0], dtype=torch.float64, requires_grad=True)
    original = hu.detach().clone()
    multiplier = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    mu = hu_to_attenuation(hu, bone_multiplier=multiplier)
    mu.sum().backward()
    torch.testing.assert_close(hu.grad, torch.tensor([0.0, 1.0, 1.0, 3.0], dtype=torch.float64) * MU_W / 1000)
    assert multiplier.grad.item() == pytest.approx(MU_W * (800.0 - T) / 1000)
    torch.testing.assert_close(hu.detach(), original)  # input untouched


def test_batched_bone_multiplier_broadcasts():
    hu = torch.tensor([0.0, 1000.0])
    mu = hu_to_attenuation(hu, bone_multiplier=torch.tensor([[1.0], [3.0]]))
    assert mu.shape == (2, 2)
    torch.testing.assert_close(mu[:, 1] / MU_W, torch.tensor([2.0, 1.0 + T / 1000 + 3 * (1 - T / 1000)]))


# --- MRA ------------------------------------------------------------------------------------
def test_mra_ramp_values():
    intensity = np.array([0.0, 50.0, 100.0, 150.0, 200.0, 400.0])
    mu = mra_to_attenuation(intensity, low=100.0, high=200.0)
    assert mu.dtype == np.float32
    np.testing.assert_allclose(mu, MU_CONTRAST_PER_MM * np.array([0, 0, 0, 0.5, 1, 1]), rtol=1e-6)
    as_torch = mra_to_attenuation(torch.tensor(intensity), low=100.0, high=200.0)
    np.testing.assert_allclose(as_torch.numpy(), mu, rtol=1e-6)


def _synthetic_mra() -> tuple[np.ndarray, np.ndarray]:
    """Background noise 0..100, 1 % vessel voxels at 1000, a large zero margin outside the FOV."""
    rng = np.random.default_rng(3)
    data = np.zeros((20, 50, 50), dtype=np.float32)
    inside = rng.uniform(1.0, 100.0, size=(20, 40, 40)).astype(np.float32)
    vessels = rng.random((20, 40, 40)) < 0.01
    inside[vessels] = 1000.0
    data[:, 5:45, 5:45] = inside
    mask = np.zeros(data.shape, dtype=bool)
    mask[:, 5:45, 5:45] = vessels
    return data, mask


def test_mra_default_window_keeps_only_the_brightest_voxels():
    data, vessels = _synthetic_mra()
    low, high = mra_window(data)
    assert 90.0 < low < 100.0 and high == pytest.approx(1000.0)  # zeros outside the FOV are ignored
    mu = mra_to_attenuation(data)
    np.testing.assert_allclose(mu[vessels], MU_CONTRAST_PER_MM, rtol=1e-6)
    assert mu[~vessels].max() < 0.01 * MU_CONTRAST_PER_MM
    assert (mu[~vessels] == 0).mean() > 0.97
    low_t, high_t = mra_window(torch.from_numpy(data))
    assert low_t == pytest.approx(low, rel=1e-3) and high_t == pytest.approx(high)


def test_mra_mask_mode():
    data, vessels = _synthetic_mra()
    mu = mra_to_attenuation(data, vessel_mask=vessels)
    assert mu.dtype == np.float32
    assert np.all(mu[vessels] == np.float32(MU_CONTRAST_PER_MM)) and np.all(mu[~vessels] == 0)
    mu_t = mra_to_attenuation(torch.from_numpy(data), vessel_mask=torch.from_numpy(vessels))
    np.testing.assert_array_equal(mu_t.numpy(), mu)
    with pytest.raises(ValueError, match="shape"):
        mra_to_attenuation(data, vessel_mask=vessels[:-1])


def test_mra_torch_ramp_is_differentiable():
    intensity = torch.tensor([50.0, 150.0, 300.0], requires_grad=True)
    mra_to_attenuation(intensity, low=100.0, high=200.0).sum().backward()
    torch.testing.assert_close(intensity.grad, torch.tensor([0.0, MU_CONTRAST_PER_MM / 100.0, 0.0]))


def test_mra_bad_window():
    with pytest.raises(ValueError, match="high > low"):
        mra_to_attenuation(np.arange(10.0), low=5.0, high=5.0)
    with pytest.raises(ValueError, match="no non-zero"):
        mra_window(np.zeros(10))


# --- volumes --------------------------------------------------------------------------------
def test_to_attenuation_on_the_pelvis_ct(pelvis):
    mu = to_attenuation(pelvis)
    assert mu.kind == "attenuation" and mu.data.dtype == np.float32
    assert mu.same_grid(pelvis, atol=0)
    assert mu.data.min() >= 0.0
    air = pelvis.data <= -1000.0
    assert air.mean() > 0.3 and mu.data[air].max() == 0.0  # -1024 HU outside the body
    water_like = np.abs(pelvis.data) < 20.0
    np.testing.assert_allclose(mu.data[water_like].mean(), MU_W, rtol=0.02)
    bone = pelvis.data > 700.0
    assert bone.sum() > 10_000 and mu.data[bone].min() > 1.7 * MU_W
    boosted = to_attenuation(pelvis, bone_multiplier=2.0)
    assert np.all(boosted.data[bone] > mu.data[bone])
    np.testing.assert_array_equal(boosted.data[water_like], mu.data[water_like])


def test_to_attenuation_modes_and_errors():
    data, vessels = _synthetic_mra()
    mra = volume_from_array(data, np.diag([0.5, 0.5, 1.0, 1.0]), kind="mra", source="mra.nii.gz")
    mask_volume = mra.with_data(vessels.astype(np.uint8), kind="labels")
    by_mask = to_attenuation(mra, mode="mra", vessel_mask=mask_volume)
    np.testing.assert_array_equal(by_mask.data, mra_to_attenuation(data, vessel_mask=vessels))
    by_ramp = to_attenuation(mra, mode="mra")
    np.testing.assert_array_equal(by_ramp.data, mra_to_attenuation(data))
    same = to_attenuation(by_ramp, mode="attenuation")
    np.testing.assert_array_equal(same.data, by_ramp.data)

    with pytest.raises(VolumeError, match="unknown attenuation mode 'pet'") as err:
        to_attenuation(mra, mode="pet")
    assert "mra.nii.gz" in str(err.value)
    with pytest.raises(VolumeError, match="label map"):
        to_attenuation(mask_volume)
    with pytest.raises(VolumeError, match="only used in 'mra' mode"):
        to_attenuation(mra, mode="ct", vessel_mask=vessels)
    with pytest.raises(VolumeError, match=r"vessel mask has shape \(20, 50, 49\)") as err:
        to_attenuation(mra, mode="mra", vessel_mask=vessels[:, :, 1:])
    assert "mra.nii.gz" in str(err.value)
    with pytest.raises(VolumeError, match="not on the grid"):
        to_attenuation(mra, mode="mra", vessel_mask=mask_volume.crop((0, 0, 0), (50, 50, 10)))
    with pytest.raises(VolumeError, match="negative"):
        to_attenuation(mra.with_data(data - 5.0), mode="attenuation")


def test_the_attenuation_by_modality_records_its_model(tmp_path):
    from xvrcore.volume.vessels import load_vessels, modality_attenuation

    data, vessels = _synthetic_mra()
    mra = volume_from_array(data, np.diag([0.5, 0.5, 1.0, 1.0]), kind="mra", source="mra.nii.gz")
    by_ramp, record = modality_attenuation(mra, "mra")
    low, high = mra_window(data)
    np.testing.assert_array_equal(by_ramp.data, mra_to_attenuation(data, low=low, high=high))
    assert record["vessel_only"] and record["mra_window"] == [round(low, 4), round(high, 4)]
    segmentation = mra.with_data(vessels.astype(np.uint8) * 3, kind="labels")  # any non-zero label is vessel
    segmentation.source = str(segmentation.save(tmp_path / "vessels.nrrd"))
    loaded = load_vessels(tmp_path / "vessels.nrrd", mra)
    for modality in ("mra", "ct"):  # a CTA's vessel segmentation renders its vessels alike
        by_mask, record = modality_attenuation(mra, modality, loaded)
        np.testing.assert_allclose(by_mask.data, np.where(vessels, MU_CONTRAST_PER_MM, 0.0))
        assert record["vessel_only"] and record["vessels_file"] == "vessels.nrrd"
    hu = mra.with_data(data - 1000.0, kind="ct")
    by_hu, record = modality_attenuation(hu, "ct", bone_multiplier=2.0)
    np.testing.assert_array_equal(by_hu.data, to_attenuation(hu, "ct", 2.0).data)
    assert not record["vessel_only"] and record["bone_multiplier"] == 2.0
    mra.with_data(np.zeros(data.shape, np.uint8), kind="labels").save(tmp_path / "empty.nrrd")
    with pytest.raises(VolumeError, match=r"empty.nrrd: every voxel has the value 0"):
        load_vessels(tmp_path / "empty.nrrd", mra)
