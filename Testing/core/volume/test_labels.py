"""Label maps: loading against a reference grid, structure masks and masked attenuation."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from xvrcore.volume import (
    LabelGridWarning,
    Volume,
    VolumeError,
    load_labelmap,
    load_volume,
    volume_from_array,
)
from xvrcore.volume.attenuation import to_attenuation
from xvrcore.volume.labels import label_values, masked_attenuation, structure_bounding_box, structure_mask

LIVER = 5
SPLEEN = 1


@pytest.fixture(scope="module")
def torso_dir(shared_data) -> Path:
    return shared_data / "open" / "ct" / "torso_totalseg"


@pytest.fixture(scope="module")
def labels_path(torso_dir) -> Path:
    return torso_dir / "torso_ct_3mm_crop30_labels.nii.gz"


@pytest.fixture(scope="module")
def crop_ct(torso_dir) -> Volume:
    return load_volume(torso_dir / "torso_ct_3mm_crop30.nii.gz")


@pytest.fixture(scope="module")
def full_ct(torso_dir) -> Volume:
    return load_volume(torso_dir / "torso_ct_3mm.nii.gz")


@pytest.fixture(scope="module")
def labels(labels_path, crop_ct) -> Volume:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same grid: no LabelGridWarning (or anything else)
        return load_labelmap(labels_path, reference=crop_ct)


def _centroid_ras(labelmap: Volume, label: int) -> np.ndarray:
    k, j, i = np.nonzero(labelmap.data == label)
    return labelmap.ijk_to_ras(np.stack([i, j, k], axis=1).mean(axis=0))


def test_labels_load_on_the_ct_grid_without_warning(labels, crop_ct):
    assert labels.kind == "labels"
    assert labels.shape_ijk == (122, 101, 30)
    assert np.issubdtype(labels.data.dtype, np.integer)
    assert labels.same_grid(crop_ct, atol=0)
    values = label_values(labels)
    assert len(values) == 41 and values[0] == SPLEEN and LIVER in values and 0 not in values
    assert values == sorted(values)


def test_labels_resampled_onto_the_full_ct(labels_path, labels, full_ct):
    with pytest.warns(LabelGridWarning) as record:
        resampled = load_labelmap(labels_path, reference=full_ct)
    message = str(record[0].message)
    assert labels_path.name in message and "torso_ct_3mm.nii.gz" in message
    assert "122\u00d7101\u00d730 vs 122\u00d7101\u00d7112" in message
    assert resampled.same_grid(full_ct, atol=0) and resampled.kind == "labels"
    # Same origin and spacing, more slices: the 30 labelled slices map onto themselves.
    np.testing.assert_array_equal(resampled.data[:30], labels.data)
    assert not resampled.data[30:].any()
    np.testing.assert_allclose(_centroid_ras(resampled, LIVER), _centroid_ras(labels, LIVER), atol=1e-6)


def _oblique_reference(around: Volume, spacing: float, degrees: float) -> Volume:
    """A rotated, finer grid covering ``around`` (voxel values are irrelevant, just not constant)."""
    t = np.radians(degrees)
    rotation = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    extent = np.ptp(around.corners(), axis=0)
    shape_ijk = np.ceil(extent * 1.2 / spacing).astype(int)
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([spacing] * 3)
    affine[:3, 3] = around.center - affine[:3, :3] @ ((shape_ijk - 1) / 2.0)
    data = np.arange(np.prod(shape_ijk), dtype=np.float32).reshape(shape_ijk[::-1])
    return volume_from_array(data, affine, kind="ct", source="oblique-reference")


def test_labels_resampled_onto_an_oblique_grid_keep_their_position(labels_path, labels):
    reference = _oblique_reference(labels, spacing=2.5, degrees=10.0)
    with pytest.warns(LabelGridWarning, match="oblique-reference.*spacing.*direction differs"):
        moved = load_labelmap(labels_path, reference=reference)
    assert moved.same_grid(reference, atol=0)
    for label in (LIVER, SPLEEN):
        shift = np.linalg.norm(_centroid_ras(moved, label) - _centroid_ras(labels, label))
        # Well within one voxel (3 mm); a half-voxel origin error would show as >= 1.25 mm.
        assert shift < 0.5, f"label {label} centroid moved {shift:.2f} mm"
        volume_before = np.count_nonzero(labels.data == label) * np.prod(labels.spacing)
        volume_after = np.count_nonzero(moved.data == label) * np.prod(moved.spacing)
        assert volume_after == pytest.approx(volume_before, rel=0.1)


def test_labels_far_from_the_reference_are_refused(labels_path, labels):
    far = _oblique_reference(labels, spacing=3.0, degrees=0.0)
    far.affine[:3, 3] += 5000.0
    with pytest.warns(LabelGridWarning), pytest.raises(VolumeError, match="does not overlap") as err:
        load_labelmap(labels_path, reference=far)
    assert labels_path.name in str(err.value)


def _write(path: Path, data: np.ndarray) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(data), str(path))
    return path


def test_non_integer_labels_are_refused(tmp_path):
    data = np.zeros((4, 5, 6), dtype=np.float32)
    data[1, 2, 3], data[2, 2, 2] = 2.0, 3.5
    path = _write(tmp_path / "soft_labels.nii.gz", data)
    with pytest.raises(VolumeError, match=r"whole numbers, found 1 non-integer .*e\.g\. 3\.5") as err:
        load_labelmap(path)
    assert "soft_labels.nii.gz" in str(err.value)


def test_empty_label_map_is_refused(tmp_path):
    path = _write(tmp_path / "nothing.nrrd", np.zeros((4, 5, 6), dtype=np.uint8))
    with pytest.raises(VolumeError, match="no structures") as err:
        load_labelmap(path)
    assert "nothing.nrrd" in str(err.value)


def test_structure_mask(labels):
    liver = structure_mask(labels, [LIVER])
    assert liver.dtype == bool and liver.shape == labels.data.shape
    assert liver.sum() == np.count_nonzero(labels.data == LIVER) > 1000
    both = structure_mask(labels, [LIVER, SPLEEN])
    assert both.sum() == liver.sum() + np.count_nonzero(labels.data == SPLEEN)
    np.testing.assert_array_equal(structure_mask(labels, LIVER), liver)


def test_absent_label_is_refused(labels, labels_path):
    with pytest.raises(VolumeError, match=r"label\(s\) \[12, 250\] not found") as err:
        structure_mask(labels, [LIVER, 12, 250])
    assert labels_path.name in str(err.value)
    with pytest.raises(VolumeError, match="no labels requested"):
        structure_mask(labels, [])


def test_structure_bounding_box(labels):
    lo, hi = structure_bounding_box(labels, LIVER)
    k, j, i = np.nonzero(labels.data == LIVER)
    assert lo == (i.min(), j.min(), k.min())
    assert hi == (i.max() + 1, j.max() + 1, k.max() + 1)
    box = labels.crop(lo, hi)
    assert np.count_nonzero(box.data == LIVER) == np.count_nonzero(labels.data == LIVER)


def test_masked_attenuation(labels, crop_ct):
    mu = to_attenuation(crop_ct)
    liver_only = masked_attenuation(mu, labels, [LIVER])
    assert liver_only.kind == "attenuation" and liver_only.same_grid(crop_ct, atol=0)
    inside = labels.data == LIVER
    np.testing.assert_array_equal(liver_only.data[inside], mu.data[inside])
    assert not liver_only.data[~inside].any()
    # Liver is soft tissue around 40-70 HU: close to water.
    assert liver_only.data[inside].mean() == pytest.approx(mu.data[inside].mean())
    assert 0.95 < liver_only.data[inside].mean() / 0.0206 < 1.15


def test_masked_attenuation_needs_matching_grids_and_attenuation(labels, crop_ct, full_ct):
    with pytest.raises(VolumeError, match="grid differs") as err:
        masked_attenuation(to_attenuation(full_ct), labels, [LIVER])
    assert "torso_ct_3mm_crop30_labels.nii.gz" in str(err.value) and "torso_ct_3mm.nii.gz" in str(err.value)
    with pytest.raises(VolumeError, match="to_attenuation"):
        masked_attenuation(crop_ct, labels, [LIVER])


def test_label_values_needs_integer_labels(crop_ct):
    with pytest.raises(VolumeError, match="integer label map"):
        label_values(crop_ct)
