"""The volume's modality: given, read from a DICOM series, seen from a CT's air, or assumed with a warning."""

import numpy as np
import pytest
import SimpleITK as sitk
from xvrcore.volume import VolumeError, load_volume, volume_from_array
from xvrcore.volume.modality import dicom_modality, resolve_modality


def _dicom_series(folder, modality: str, values: np.ndarray):
    """A small DICOM series (one file per slice) with the given Modality attribute."""
    folder.mkdir()
    uid = "1.2.826.0.1.3680043.2.1125.1.77"
    for k, plane in enumerate(values):
        image = sitk.GetImageFromArray(plane[None].astype(np.int16))
        image.SetSpacing((1.0, 1.0, 2.0))
        image.SetOrigin((0.0, 0.0, 2.0 * k))
        for tag, value in (("0008|0060", modality), ("0020|000e", uid), ("0020|000d", uid + ".1"),
                           ("0020|0013", str(k + 1)), ("0020|0032", f"0\\0\\{2.0 * k}"),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0008|0018", f"{uid}.{k + 2}")):
            image.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"slice_{k:02d}.dcm"))
        writer.Execute(image)
    return folder


def test_a_given_modality_is_used_as_given(head_ct_path):
    ct = load_volume(head_ct_path)
    assert resolve_modality("mra", head_ct_path, ct).to_dict() == {"modality": "mra", "modality_from": "given"}


def test_a_dicom_series_says_its_modality(shared_data, tmp_path):
    head = shared_data / "open" / "ct" / "head_skull_dbdicom" / "dicom_axial_2p5mm"
    assert dicom_modality(head) == "CT"
    values = np.random.default_rng(0).integers(0, 400, (4, 8, 8))
    mr = _dicom_series(tmp_path / "mr", "MR", values)
    volume = load_volume(mr)
    choice = resolve_modality("auto", mr, volume)
    assert (choice.modality, choice.source, choice.warning) == ("mra", "DICOM Modality MR", None)
    assert resolve_modality("auto", mr / "slice_00.dcm", volume).modality == "mra"  # one file of the series too
    pet = _dicom_series(tmp_path / "pet", "PT", values)
    with pytest.raises(VolumeError, match=r"pet: DICOM Modality PT is neither CT nor MR"):
        resolve_modality("auto", pet, load_volume(pet))


def test_a_nifti_ct_is_recognised_by_its_air(shared_data):
    path = shared_data / "open" / "ct" / "torso_totalseg" / "torso_ct_3mm.nii.gz"
    choice = resolve_modality("auto", path, load_volume(path))
    assert (choice.modality, choice.warning) == ("ct", None)
    assert "air" in choice.source


def test_a_file_without_modality_or_air_is_taken_as_ct_with_a_warning():
    affine = np.eye(4)
    mra_like = volume_from_array(np.random.default_rng(1).uniform(0, 500, (6, 6, 6)).astype(np.float32), affine)
    choice = resolve_modality("auto", "tof.nii.gz", mra_like)
    assert choice.modality == "ct" and choice.source.startswith("assumed")
    assert "tof.nii.gz" in choice.warning and "--modality mra" in choice.warning and "no negative values" in choice.warning
    cropped_ct = volume_from_array(np.random.default_rng(2).uniform(-100, 80, (6, 6, 6)).astype(np.float32), affine)
    assert "no air" in resolve_modality("auto", "body.nrrd", cropped_ct).warning
    with pytest.raises(VolumeError, match="unknown modality 'pet'"):
        resolve_modality("pet", "body.nrrd", cropped_ct)
