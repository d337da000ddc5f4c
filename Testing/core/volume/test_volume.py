"""Volume loading, geometry (voxel index -> RAS) and the errors for bad input."""

from __future__ import annotations

import gzip
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from xvrcore.volume import Volume, VolumeError, load_volume, volume_from_array

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _rotation(axis, degrees: float) -> np.ndarray:
    """Rodrigues rotation matrix (test helper for oblique grids)."""
    a = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    t = np.radians(degrees)
    cross = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * cross + (1 - np.cos(t)) * cross @ cross


def _sitk_ras(image: sitk.Image, index) -> np.ndarray:
    """SimpleITK's own physical (LPS) position of a continuous index, converted to RAS."""
    lps = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in index])
    return LPS_TO_RAS @ np.array(lps)


def _geometry_only(path: Path) -> sitk.Image:
    """A 1-voxel image carrying a file's geometry, without reading its voxels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    image = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    image.SetOrigin(reader.GetOrigin())
    image.SetSpacing(reader.GetSpacing())
    image.SetDirection(reader.GetDirection())
    return image


def _oblique_image(seed: int = 0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.normal(size=(7, 6, 5)).astype(np.float32))  # I, J, K = 5, 6, 7
    image.SetSpacing((0.7, 1.3, 2.9))
    image.SetOrigin((-12.5, 40.25, 101.75))
    image.SetDirection(tuple(_rotation((1.0, 2.0, 3.0), 30.0).ravel()))
    return image


@pytest.fixture(scope="module")
def pelvis(pelvis_ct_path) -> Volume:
    return load_volume(pelvis_ct_path)


@pytest.fixture(scope="module")
def head_dicom_dir(shared_data) -> Path:
    return shared_data / "open" / "ct" / "head_skull_dbdicom" / "dicom_axial_2p5mm"


@pytest.fixture(scope="module")
def head_dicom(head_dicom_dir) -> Volume:
    return load_volume(head_dicom_dir)


# --- real data --------------------------------------------------------------------------------
def test_pelvis_ct_loads_on_its_ras_grid(pelvis, pelvis_ct_path):
    assert pelvis.shape_ijk == (512, 512, 150)
    assert pelvis.data.shape == (150, 512, 512)
    assert pelvis.data.dtype == np.float32
    assert pelvis.kind == "ct"
    np.testing.assert_allclose(pelvis.spacing, [1.0, 1.0, 1.0])
    # LPS origin (0, 0, 900) with identity direction -> RAS axes i -> -R, j -> -A.
    expected = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, 1.0, 900.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(pelvis.affine, expected, atol=1e-9)
    geometry = _geometry_only(pelvis_ct_path)
    for index in [(0, 0, 0), (100, 200, 50), (511, 3, 149), (10.5, 20.25, 0.75)]:
        np.testing.assert_allclose(pelvis.ijk_to_ras(index), _sitk_ras(geometry, index), atol=1e-9)
    np.testing.assert_allclose(pelvis.ijk_to_ras([100, 200, 50]), [-100.0, -200.0, 950.0])
    assert pelvis.data.min() == -1024.0 and pelvis.data.max() == 1531.0


def test_pelvis_voxel_values_match_simpleitk(pelvis, pelvis_ct_path):
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(pelvis_ct_path)))
    np.testing.assert_array_equal(pelvis.data, reference)
    assert pelvis.data[50, 200, 100] == reference[50, 200, 100]


def test_head_ct_nifti_and_dicom_series_agree(head_ct_path, head_dicom):
    nifti = load_volume(head_ct_path)
    assert nifti.shape_ijk == head_dicom.shape_ijk == (512, 512, 67)
    np.testing.assert_allclose(nifti.affine, head_dicom.affine, atol=1e-3)
    assert nifti.same_grid(head_dicom, atol=1e-3)
    np.testing.assert_allclose(head_dicom.spacing, [0.488281, 0.488281, 2.5], atol=1e-6)
    # GDCM applies RescaleIntercept -1024 / slope 1, so both hold HU (-3024 outside the circle).
    np.testing.assert_array_equal(nifti.data, head_dicom.data)
    assert head_dicom.data.min() == -3024.0


def test_single_dicom_file_loads_its_whole_series(head_dicom_dir, head_dicom):
    one_slice = load_volume(head_dicom_dir / "slice_010.dcm")
    assert one_slice.same_grid(head_dicom, atol=0)
    np.testing.assert_array_equal(one_slice.data, head_dicom.data)


def _link_all(files, folder: Path) -> None:
    folder.mkdir()
    for f in files:
        (folder / f.name).symlink_to(f)


def test_dicom_folder_picks_the_largest_series(tmp_path, head_dicom_dir, head_dicom, shared_data):
    localizers = sorted((shared_data / "open" / "ct" / "head_skull_dbdicom" / "localizers").glob("*.dcm"))
    _link_all(sorted(head_dicom_dir.glob("*.dcm")) + localizers, tmp_path / "mixed")
    chosen = load_volume(tmp_path / "mixed")
    assert chosen.same_grid(head_dicom, atol=0)
    localizer_uid = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(localizers[0].parent))[0]
    with pytest.raises(VolumeError, match="different orientations") as err:
        load_volume(tmp_path / "mixed", series_uid=localizer_uid)
    assert "mixed" in str(err.value)


def test_dicom_unknown_series_lists_the_series(head_dicom_dir):
    with pytest.raises(VolumeError) as err:
        load_volume(head_dicom_dir, series_uid="1.2.3.4")
    message = str(err.value)
    assert "dicom_axial_2p5mm" in message and "1.2.3.4" in message and "(67 files)" in message


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path, head_dicom_dir):
    files = [f for f in sorted(head_dicom_dir.glob("*.dcm")) if f.name != "slice_030.dcm"]
    _link_all(files, tmp_path / "gap")
    with pytest.raises(VolumeError, match="not equally spaced") as err:
        load_volume(tmp_path / "gap")
    assert "gap" in str(err.value)


def test_folder_without_dicom_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(VolumeError, match="no DICOM image series") as err:
        load_volume(tmp_path)
    assert str(tmp_path) in str(err.value)


# --- round trips with oblique, anisotropic grids --------------------------------------------
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_oblique_anisotropic_round_trip(tmp_path, suffix):
    image = _oblique_image()
    path = tmp_path / f"oblique{suffix}"
    sitk.WriteImage(image, str(path))
    volume = load_volume(path, kind="generic")

    assert volume.shape_ijk == (5, 6, 7)
    np.testing.assert_allclose(volume.spacing, [0.7, 1.3, 2.9], atol=1e-6)
    expected = np.eye(4)
    expected[:3, :3] = LPS_TO_RAS @ np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    expected[:3, 3] = LPS_TO_RAS @ np.array(image.GetOrigin())
    np.testing.assert_allclose(volume.affine, expected, atol=1e-6)
    # Exactly SimpleITK's own index-to-physical mapping of the file as read.
    as_read = sitk.ReadImage(str(path))
    for index in [(0, 0, 0), (3, 4, 5), (4, 5, 6), (1.5, 2.25, 0.5)]:
        np.testing.assert_allclose(volume.ijk_to_ras(index), _sitk_ras(as_read, index), rtol=0, atol=1e-9)
        np.testing.assert_allclose(volume.ijk_to_ras(index), _sitk_ras(image, index), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(volume.data, sitk.GetArrayViewFromImage(image))
    assert volume.data[5, 4, 3] == image.GetPixel(3, 4, 5)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha", ".nii"])
def test_save_writes_geometry_back_to_lps(tmp_path, suffix):
    original = load_volume(_write(tmp_path / "src.nrrd", _oblique_image(1)), kind="generic")
    path = original.save(tmp_path / f"copy{suffix}")
    again = load_volume(path, kind="generic")
    np.testing.assert_allclose(again.affine, original.affine, atol=1e-6)
    np.testing.assert_array_equal(again.data, original.data)
    written = sitk.ReadImage(str(path))
    np.testing.assert_allclose(written.GetOrigin(), LPS_TO_RAS @ original.origin, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["src.nrrd", f"copy{suffix}"])  # no temp left


def test_save_refuses_two_file_formats(tmp_path):
    volume = load_volume(_write(tmp_path / "src.mha", _oblique_image()), kind="generic")
    with pytest.raises(VolumeError, match="cannot write"):
        volume.save(tmp_path / "out.mhd")


def test_to_sitk_matches_affine(pelvis):
    small = pelvis.crop((100, 150, 10), (140, 170, 15))
    image = small.to_sitk()
    for index in [(0, 0, 0), (39, 19, 4)]:
        np.testing.assert_allclose(_sitk_ras(image, index), small.ijk_to_ras(index), atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), small.data)


# --- geometry helpers -----------------------------------------------------------------------
def _synthetic(shape_kji=(8, 10, 12)) -> Volume:
    affine = np.eye(4)
    affine[:3, :3] = _rotation((0.3, -1.0, 0.5), 25.0) @ np.diag([0.5, 0.8, 2.0])
    affine[:3, 3] = (10.0, -20.0, 30.0)
    data = np.zeros(shape_kji, dtype=np.float32)
    data[5:8, 2:5, 3:7] = 1.0  # k 5..7, j 2..4, i 3..6
    data[0, 0, 0] = -5.0
    return volume_from_array(data, affine, kind="generic", source="synthetic")


def test_geometry_properties():
    v = _synthetic()
    assert v.shape_ijk == (12, 10, 8)
    np.testing.assert_allclose(v.spacing, [0.5, 0.8, 2.0])
    np.testing.assert_allclose(v.direction.T @ v.direction, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(v.center, v.ijk_to_ras([5.5, 4.5, 3.5]))
    corners = v.corners()
    assert corners.shape == (8, 3)
    np.testing.assert_allclose(corners.mean(axis=0), v.center, atol=1e-9)
    np.testing.assert_allclose(v.ras_to_ijk(corners[0]), [-0.5, -0.5, -0.5], atol=1e-9)
    np.testing.assert_allclose(v.ras_to_ijk(corners[-1]), [11.5, 9.5, 7.5], atol=1e-9)
    points = np.random.default_rng(2).uniform(-1, 12, size=(4, 5, 3))
    np.testing.assert_allclose(v.ras_to_ijk(v.ijk_to_ras(points)), points, atol=1e-9)


def test_crop_keeps_ras_positions():
    v = _synthetic()
    cropped = v.crop((2, 3, 1), (9, 8, 6))
    assert cropped.shape_ijk == (7, 5, 5)
    for index in [(0, 0, 0), (6, 4, 4), (3, 1, 2)]:
        original = np.add(index, (2, 3, 1))
        np.testing.assert_allclose(cropped.ijk_to_ras(index), v.ijk_to_ras(original), atol=1e-12)
        assert cropped.data[index[::-1]] == v.data[tuple(original[::-1])]
    np.testing.assert_allclose(cropped.spacing, v.spacing)
    with pytest.raises(VolumeError, match="synthetic"):
        v.crop((0, 0, 0), (13, 5, 5))
    with pytest.raises(VolumeError, match="empty"):
        v.crop((4, 0, 0), (4, 5, 5))


def test_content_bounds():
    v = _synthetic()
    assert v.content_bounds(0.5) == ((3, 2, 5), (7, 5, 8))
    assert v.content_bounds(-10.0) == ((0, 0, 0), (12, 10, 8))
    assert v.content_bounds(1.0) is None


def test_content_bounds_of_the_pelvis_body(pelvis):
    lo, hi = pelvis.content_bounds(-500.0)  # body, arms and table
    assert all(0 <= a < b <= n for a, b, n in zip(lo, hi, pelvis.shape_ijk, strict=True))
    assert hi[0] - lo[0] > 300 and hi[2] - lo[2] == 150


def test_with_data_and_same_grid():
    v = _synthetic()
    twin = v.with_data(np.ones_like(v.data), kind="attenuation")
    assert twin.kind == "attenuation" and twin.same_grid(v)
    assert not v.crop((0, 0, 0), (12, 10, 7)).same_grid(v)
    shifted = Volume(v.data, v.affine + np.pad(np.full((3, 1), 1e-3), ((0, 1), (3, 0))), "s", "generic")
    assert not v.same_grid(shifted) and v.same_grid(shifted, atol=1e-2)
    with pytest.raises(VolumeError, match="shape"):
        v.with_data(np.ones((3, 3, 3)))


def test_float_label_file_becomes_integer(tmp_path):
    data = np.zeros((4, 5, 6), dtype=np.float32)
    data[1:3, 2:4, 2:5] = 7.0
    volume = load_volume(_write(tmp_path / "labels.nii.gz", sitk.GetImageFromArray(data)), kind="labels")
    assert np.issubdtype(volume.data.dtype, np.integer)
    assert set(np.unique(volume.data)) == {0, 7}


# --- errors ---------------------------------------------------------------------------------
def _write(path: Path, image: sitk.Image) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def _image(array: np.ndarray, vector: bool = False) -> sitk.Image:
    return sitk.GetImageFromArray(array, isVector=vector)


def _ramp(shape=(4, 5, 6)) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def _nifti_with_pixdim(path: Path, axis: int, value: float) -> Path:
    """An uncompressed NIfTI-1 whose pixdim[axis] (1 = i) is patched to ``value``."""
    _write(path, _image(_ramp()))
    raw = bytearray(path.read_bytes())
    assert struct.unpack_from("<i", raw, 0)[0] == 348
    struct.pack_into("<f", raw, 76 + 4 * axis, value)
    path.write_bytes(bytes(raw))
    return path


def _text_header_edit(path: Path, pattern: bytes, replacement: bytes) -> Path:
    raw = path.read_bytes()
    patched, count = re.subn(pattern, replacement, raw, count=1)
    assert count == 1
    path.write_bytes(patched)
    return path


def _mha_with_spacing(path: Path, spacing: bytes) -> Path:
    _write(path, _image(_ramp()))
    return _text_header_edit(path, rb"ElementSpacing = [^\n]*", b"ElementSpacing = " + spacing)


def _nrrd_with_directions(path: Path, directions: bytes) -> Path:
    _write(path, _image(_ramp()))
    return _text_header_edit(path, rb"space directions: [^\n]*", b"space directions: " + directions)


def _four_d(path: Path) -> Path:
    return _write(path, sitk.JoinSeries([_image(_ramp() + t) for t in range(3)]))


def _truncated(path: Path) -> Path:
    _write(path, _image(_ramp((20, 30, 40))))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 2 // 3])
    return path


def _with_values(*values: float):
    def make(path: Path) -> Path:
        data = _ramp()
        data.flat[[3, 17, 40][: len(values)]] = values
        return _write(path, _image(data))

    return make


def _rgb(path: Path) -> Path:
    return _write(path, _image(np.zeros((4, 5, 6, 3), np.uint8), vector=True))


def _bytes(content: bytes):
    def make(path: Path) -> Path:
        path.write_bytes(content)
        return path

    return make


BAD_FILES = {
    "2d.nii.gz": (lambda p: _write(p, _image(_ramp((5, 6)))), "found a 2-D image of size 6\u00d75"),
    "4d.nii.gz": (_four_d, "found a 4-D image of size 6\u00d75\u00d74\u00d73"),
    "one_slice.nrrd": (lambda p: _write(p, _image(_ramp((1, 5, 6)))), "at least 2 voxels .* 6\u00d75\u00d71"),
    "rgb.nrrd": (_rgb, "3 components"),
    "rgb.nii.gz": (_rgb, "3 components"),
    "constant.nii.gz": (lambda p: _write(p, _image(np.full((4, 5, 6), 7.0, np.float32))), "every voxel .* 7"),
    "nan.nii.gz": (_with_values(np.nan, np.nan, np.inf), "2 NaN and 1 infinite"),
    "nan.nrrd": (_with_values(np.nan), "contains 1 NaN voxel"),
    "nifti2.nii": (_bytes(struct.pack("<i", 540) + bytes(600)), "NIfTI-2"),
    "inf.mha": (_with_values(-np.inf), "contains 1 infinite"),
    "zero_pixdim.nii": (lambda p: _nifti_with_pixdim(p, 2, 0.0), r"positive, got \(1, 0, 1\) mm .*pixdim"),
    "neg_pixdim.nii": (lambda p: _nifti_with_pixdim(p, 3, -2.0), r"positive, got \(1, 1, -2\) mm .*pixdim"),
    "zero_spacing.mha": (lambda p: _mha_with_spacing(p, b"1 0 1"), "spacing must be positive"),
    "neg_spacing.mha": (lambda p: _mha_with_spacing(p, b"1 -1.5 1"), "spacing must be positive"),
    "zero_spacing.nrrd": (lambda p: _nrrd_with_directions(p, b"(1,0,0) (0,0,0) (0,0,1)"), "must be positive"),
    "parallel.nrrd": (lambda p: _nrrd_with_directions(p, b"(1,0,0) (2,0,0) (0,0,1)"), "singular"),
    "skewed.nrrd": (lambda p: _nrrd_with_directions(p, b"(1,0,0) (1,1,0) (0,0,1)"), "not orthonormal"),
    "garbage.nii.gz": (_bytes(b"\x00" + os.urandom(2000)), r"not a gzip-compressed NIfTI file \(no gzip signature"),
    "text.nii.gz": (_bytes(b"a note, not an image\n"), r"not a gzip-compressed NIfTI file \(it is a text file"),
    "short_header.nii.gz": (_bytes(gzip.compress(struct.pack("<i", 348) + bytes(100))),
                            "truncated or not a NIfTI file: it holds 104 of the 348 bytes"),
    "short_header.nii": (_bytes(struct.pack("<i", 348) + bytes(100)), "holds 104 of the 348 bytes"),
    "garbage.nrrd": (_bytes(b"\x00\x01garbage" * 100), "cannot read"),
    "empty.mha": (_bytes(b""), "cannot read"),
    "truncated.nii.gz": (_truncated, "truncated"),
    "truncated.nii": (_truncated, "truncated"),
    "truncated.nrrd": (_truncated, "cannot read"),
    "picture.png": (_bytes(b"\x89PNG\r\n"), "unsupported file type .png"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_gives_volume_error_naming_the_file(tmp_path, name):
    make, expected = BAD_FILES[name]
    path = make(tmp_path / name)
    with pytest.raises(VolumeError, match=expected) as err:
        load_volume(path)
    assert name in str(err.value)
    assert "Traceback" not in str(err.value) and ".cxx" not in str(err.value) and "0x" not in str(err.value)


def test_simpleitk_alone_accepts_zero_pixdim_and_truncation(tmp_path):
    """Documents why volume.py checks NIfTI headers itself (SimpleITK 2.x / ITK 5.4 behaviour)."""
    zero = sitk.ReadImage(str(_nifti_with_pixdim(tmp_path / "zero.nii", 2, 0.0)))
    assert zero.GetSpacing()[1] == 1.0  # 0 silently replaced by 1 mm
    negative = sitk.ReadImage(str(_nifti_with_pixdim(tmp_path / "neg.nii", 2, -2.0)))
    assert negative.GetSpacing()[1] == 2.0 and negative.GetDirection()[4] == -1.0  # silently flipped
    truncated = sitk.GetArrayFromImage(sitk.ReadImage(str(_truncated(tmp_path / "cut.nii.gz"))))
    assert (truncated.reshape(-1)[-100:] == 0).all()  # missing voxels silently zero-filled
    with_nan = sitk.GetArrayFromImage(sitk.ReadImage(str(_with_values(np.nan, np.inf)(tmp_path / "nan.nii"))))
    assert with_nan.flat[3] == 0 and with_nan.flat[17] == 0  # NaN and Inf silently read as 0


def test_missing_file(tmp_path):
    with pytest.raises(VolumeError, match="not found") as err:
        load_volume(tmp_path / "nowhere.nii.gz")
    assert "nowhere.nii.gz" in str(err.value)


def test_unknown_kind(tmp_path):
    with pytest.raises(VolumeError, match="unknown volume kind 'xray'"):
        load_volume(tmp_path / "x.nii", kind="xray")


@pytest.mark.parametrize(
    ("data", "affine", "expected"),
    [
        (np.zeros((4, 5)), np.eye(4), r"2-D array of shape \(4, 5\)"),
        (_ramp(), np.diag([1.0, 0.0, 1.0, 1.0]), r"spacing must be positive, got \(1, 0, 1\)"),
        (_ramp(), np.array([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), "not orthonormal"),
        (_ramp(), np.array([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), "singular"),
        (np.where(_ramp() > 50, np.nan, _ramp()), np.eye(4), "contains 69 NaN voxel"),
        (np.zeros((4, 5, 6)), np.eye(4), "every voxel"),
        (_ramp(), np.eye(3), "4x4"),
    ],
)
def test_volume_from_array_validates(data, affine, expected):
    with pytest.raises(VolumeError, match=expected) as err:
        volume_from_array(data, affine, source="my-array")
    assert "my-array" in str(err.value)


def test_volume_from_array_converts_intensities_to_float32():
    v = volume_from_array(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4), kind="ct")
    assert v.data.dtype == np.float32 and v.shape_ijk == (4, 3, 2)


def test_four_d_file_with_one_time_point_is_a_volume(tmp_path):
    path = _write(tmp_path / "one_frame.nrrd", sitk.JoinSeries([_image(_ramp())]))
    assert sitk.ReadImage(str(path)).GetDimension() == 4
    volume = load_volume(path, kind="generic")
    assert volume.shape_ijk == (6, 5, 4)
    np.testing.assert_array_equal(volume.data, _ramp())


@pytest.mark.parametrize(
    ("relative", "modality"),
    [
        ("xa_phantom_kragujevac/IM1.dcm", "XA"),  # multi-frame angiography run
        ("xa_phantom_kragujevac", "XA"),
        ("radiographs/cr_hip_wg04_RG2.dcm", "CR"),
    ],
)
def test_projection_xray_is_not_a_volume(shared_data, relative, modality):
    path = shared_data / "open" / "xray" / relative
    with pytest.raises(VolumeError, match=f"projection X-ray image \\(modality {modality}\\)") as err:
        load_volume(path)
    assert path.name in str(err.value)


def test_save_into_a_missing_folder(tmp_path):
    volume = volume_from_array(_ramp(), np.eye(4))
    with pytest.raises(VolumeError, match="does not exist") as err:
        volume.save(tmp_path / "nowhere" / "out.nii.gz")
    assert "out.nii.gz" in str(err.value)


def _write_dicom_series(folder: Path, tilt_mm: float = 0.0) -> np.ndarray:
    """Six oblique CT slices written by SimpleITK; each slice shifts ``tilt_mm`` along its rows.

    Returns the LPS direction matrix. Voxel (i, j, k) holds 100 k + 9 j + i.
    """
    folder.mkdir()
    direction = _rotation((1.0, 2.0, 3.0), 20.0)
    uid = "1.2.826.0.1.3680043.2.1125.4242." + str(len(folder.name))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(6):
        image = sitk.GetImageFromArray((np.arange(72).reshape(1, 8, 9) + 100 * k).astype(np.int16))
        image.SetSpacing((0.5, 0.6, 2.0))
        image.SetDirection(tuple(direction.ravel()))
        corner = direction @ np.array([k * tilt_mm, 0.0, 2.0 * k]) + np.array([10.0, -20.0, 30.0])
        image.SetOrigin(tuple(corner))
        for tag, value in [("0008|0060", "CT"), ("0020|000e", uid), ("0020|0013", str(k + 1))]:
            image.SetMetaData(tag, value)
        image.SetMetaData("0008|0018", f"{uid}.{k + 1}")
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(image)
    return direction


def test_oblique_dicom_series_geometry(tmp_path):
    direction = _write_dicom_series(tmp_path / "oblique")
    volume = load_volume(tmp_path / "oblique")
    assert volume.shape_ijk == (9, 8, 6)
    np.testing.assert_allclose(volume.spacing, [0.5, 0.6, 2.0], atol=1e-6)
    np.testing.assert_allclose(volume.direction, LPS_TO_RAS @ direction, atol=1e-6)
    np.testing.assert_allclose(volume.origin, [-10.0, 20.0, 30.0], atol=1e-4)
    assert volume.data[3, 2, 1] == 100 * 3 + 9 * 2 + 1


def test_gantry_tilted_dicom_series_is_refused(tmp_path):
    _write_dicom_series(tmp_path / "tilted", tilt_mm=0.7)
    with pytest.raises(VolumeError, match="gantry tilt") as err:
        load_volume(tmp_path / "tilted")
    assert "tilted" in str(err.value)
