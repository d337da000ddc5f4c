"""read_xray as a whole: refused files, no patient identifiers, and the real files (GE phantom runs, bad radiographs)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from xray_dicoms import log_values, phantom, write_dicom, xa
from xvrcore.geometry.positioner import pose_from_xray
from xvrcore.xray import GeometryOverrides, XrayDicomError, pixels, read_xray


def test_not_an_xray(tmp_path):
    with pytest.raises(XrayDicomError, match="ct.dcm: Modality CT is not a projection X-ray"):
        read_xray(
            write_dicom(tmp_path / "ct.dcm", np.zeros((8, 8)), modality="CT", sop="1.2.840.10008.5.1.4.1.1.2")
        )
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(XrayDicomError, match="junk.dcm"):
        read_xray(tmp_path / "junk.dcm")
    with pytest.raises(XrayDicomError, match="missing.dcm: no such file"):
        read_xray(tmp_path / "missing.dcm")


def test_no_patient_identifiers_anywhere(tmp_path):
    secret = {
        "PatientName": "Doe^Jane",
        "PatientID": "SECRET-123",
        "PatientBirthDate": "19700101",
        "InstitutionName": "St Elsewhere",
    }
    img = read_xray(
        xa(
            tmp_path / "p.dcm",
            log_values(phantom(), False),
            **secret,
            ImagerPixelSpacing=None,
            PixelSpacing=["0.3", "0.3"],
        )
    )
    text = " ".join(
        [
            repr(img),
            img.polarity,
            img.frame_info,
            *img.warnings,
            *img.polarity_evidence,
            *img.geometry_sources.values(),
        ]
    )
    for value in secret.values():
        assert value.split("^")[0] not in text
    with pytest.raises(XrayDicomError) as err:
        read_xray(
            xa(tmp_path / "q.dcm", log_values(phantom(), False), **secret, DistanceSourceToDetector=None)
        )
    assert not any(v.split("^")[0] in str(err.value) for v in secret.values())


PHANTOM = {  # README table: frames, SID, primary, secondary
    "IM1": (14, 860, 31.3, 0.1),
    "IM2": (12, 865, -27.3, -0.1),
    "IM3": (12, 891, -0.8, -23.2),
    "IM4": (10, 907, 0.1, 28.7),
    "IM5": (16, 931, -26.5, -32.7),
    "IM6": (9, 939, 24.0, -18.8),
    "IM7": (9, 976, -29.3, 25.5),
    "IM8": (8, 976, 30.7, 23.6),
}


@pytest.fixture(scope="module")
def xray_dir(shared_data) -> Path:
    return shared_data / "open" / "xray"


@pytest.fixture(scope="module")
def phantom_runs(xray_dir):
    return {name: read_xray(xray_dir / "xa_phantom_kragujevac" / f"{name}.dcm") for name in PHANTOM}


@pytest.mark.parametrize("name", list(PHANTOM))
def test_ge_phantom_geometry(phantom_runs, name):
    img = phantom_runs[name]
    frames, sid, primary, secondary = PHANTOM[name]
    d = img.detector
    assert (img.modality, img.number_of_frames, d.rows, d.cols) == ("XA", frames, 512, 512)
    assert d.sdd == sid and img.sod == 720.0
    assert (img.primary_angle, img.secondary_angle) == pytest.approx((primary, secondary))
    assert (d.row_spacing, d.col_spacing) == (0.390625, 0.390625)
    assert d.mirrored and img.intrinsics.fx == pytest.approx(-sid / 0.390625)
    assert img.patient_position == "HFS"
    assert img.magnification == pytest.approx(sid / 720.0)
    if name in ("IM1", "IM2", "IM3", "IM4"):  # no ImagerPixelSpacing: FOV 200 mm / 512
        assert img.geometry_sources["pixel_spacing"].startswith("FieldOfViewDimensions")
        assert any("FieldOfViewDimensions 200\\200" in w for w in img.warnings)
    else:
        assert img.geometry_sources["pixel_spacing"].startswith("ImagerPixelSpacing")
        assert [w for w in img.warnings if "decoded by SimpleITK" not in w] == []  # with or without a decoder
    # shutter edges (columns 8/9..508/509, rows 5/6..506, 1-based) -> mask
    assert (
        not img.mask[:4].any()
        and not img.mask[:, :6].any()
        and not img.mask[507:].any()
        and not img.mask[:, 510:].any()
    )
    assert img.mask[10:500, 12:505].all()
    # polarity: contrast-filled tubes are dark in the file and come out dense = high
    assert not img.dense_high_in_file and "inverted" in img.polarity
    assert any("tubular structures are dark" in e for e in img.polarity_evidence)
    m = img.mask
    tubes = m & (img.raw < np.percentile(img.raw[m], 3))
    assert img.pixels[tubes].mean() > np.percentile(img.pixels[m], 95)
    # nominal pose: LAO puts the source on the patient's right, RAO on the left; CRA puts it caudal
    iso = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    src = pose_from_xray(img, iso)[:3, 3]
    assert src.norm() == pytest.approx(720.0)
    if abs(primary) > 5:
        assert (src[0] > 0) == (primary > 0)
    if abs(secondary) > 5:
        assert (src[2] < 0) == (secondary > 0)


def test_ge_phantom_reads_without_a_pydicom_decoder(xray_dir, phantom_runs, monkeypatch):
    """JPEG-lossless files still import through SimpleITK when pydicom has no decoder plugin."""

    monkeypatch.setattr(pixels, "_decoder_available", lambda ts: False)
    img = read_xray(xray_dir / "xa_phantom_kragujevac" / "IM5.dcm")
    assert np.array_equal(img.pixels, phantom_runs["IM5"].pixels) and np.array_equal(
        img.mask, phantom_runs["IM5"].mask
    )
    assert any("decoded by SimpleITK" in w and "JPEG Lossless" in w for w in img.warnings)


def test_ge_phantom_frames_and_subtraction(xray_dir):
    path = xray_dir / "xa_phantom_kragujevac" / "IM1.dcm"
    frames = [read_xray(path, frame=k) for k in (0, 5, 6)]
    mean = read_xray(path, frame="mean")
    m = frames[1].mask
    scale = np.percentile(frames[1].pixels[m], 99) - np.percentile(frames[1].pixels[m], 1)
    static = read_xray(path, frame=6, mask_frame=5)  # a static phantom: consecutive frames cancel
    assert np.median(np.abs(static.pixels[m])) < 0.1 * scale
    assert np.abs(static.pixels[m]).mean() < np.abs(frames[0].pixels - frames[1].pixels)[m].mean()
    assert "minus mask frame 5" in static.frame_info and frames[0].frame_info == "frame 0 of 14"
    assert (
        np.abs(mean.pixels - frames[1].pixels)[m].mean()
        < np.abs(frames[0].pixels - frames[1].pixels)[m].mean()
    )


def test_bad_radiographs_give_clear_errors_then_import_with_overrides(xray_dir):
    rg = xray_dir / "radiographs"
    with pytest.raises(XrayDicomError) as err:
        read_xray(rg / "cr_chest_wg04_RG1.dcm")
    assert str(err.value).startswith("cr_chest_wg04_RG1.dcm (CR")
    assert "PixelSpacing (0028,0030) is 0.000\\0.000" in str(
        err.value
    ) and "ImagerPixelSpacing (0018,1164) is absent" in str(err.value)
    assert "--pixel-spacing ROW COL (or the panel's 'Pixel spacing' field)" in str(err.value)
    with pytest.raises(
        XrayDicomError,
        match=r"cr_hip_wg04_RG2\.dcm .*DistanceSourceToDetector \(0018,1110\) is absent.*--sdd",
    ):
        read_xray(rg / "cr_hip_wg04_RG2.dcm")
    with pytest.raises(XrayDicomError) as err:
        read_xray(rg / "xa_sc_wg04_XA1.dcm")
    msg = str(err.value)
    assert msg.startswith("xa_sc_wg04_XA1.dcm (XA, Secondary Capture Image Storage)")
    assert "DistanceSourceToDetector" in msg and "--sdd" in msg and "--pixel-spacing" in msg

    chest = read_xray(rg / "cr_chest_wg04_RG1.dcm", overrides=GeometryOverrides(pixel_spacing=(0.2, 0.2)))
    assert chest.detector.sdd == 1996 and chest.detector.rows == 1955 and chest.detector.cols == 1841
    assert "MONOCHROME1" in chest.polarity and not chest.dense_high_in_file
    assert (chest.primary_angle, chest.secondary_angle) == (0.0, 0.0) and chest.patient_orientation == (
        "L",
        "F",
    )
    assert not any(
        "mirrored" in w or "upside" in w for w in chest.warnings
    )  # PA at 0°/0° is L\F, as the header says
    assert any("Collimator edges" in w for w in chest.warnings)
    h, w = chest.pixels.shape
    mediastinum = chest.pixels[int(0.3 * h) : int(0.5 * h), int(0.47 * w) : int(0.53 * w)].mean()
    lungs = chest.pixels[int(0.3 * h) : int(0.5 * h), int(0.22 * w) : int(0.3 * w)].mean()
    assert mediastinum > 1.5 * lungs  # dense = high

    hip = read_xray(rg / "cr_hip_wg04_RG2.dcm", overrides=GeometryOverrides(sdd=1000))
    assert hip.detector.row_spacing == 0.2 and any(
        "PixelSpacing 0.2000\\0.2000 used" in w for w in hip.warnings
    )
    assert hip.dense_high_in_file and hip.primary_angle is None
    h, w = hip.pixels.shape
    femoral_head = hip.pixels[int(0.38 * h) : int(0.44 * h), int(0.47 * w) : int(0.55 * w)].mean()
    air = hip.pixels[int(0.8 * h) : int(0.88 * h), int(0.55 * w) : int(0.65 * w)].mean()
    assert femoral_head > air + 300

    sc = read_xray(
        rg / "xa_sc_wg04_XA1.dcm",
        overrides=GeometryOverrides(pixel_spacing=0.3, sdd=1000, primary_angle=0, secondary_angle=0),
    )
    assert sc.detector.sdd == 1000 and (sc.primary_angle, sc.secondary_angle) == (0.0, 0.0)
    assert sc.mask.mean() == pytest.approx(
        math.pi / 4, abs=0.02
    )  # the blanked surround of the circular field
    assert not sc.dense_high_in_file and any("tubular structures are dark" in e for e in sc.polarity_evidence)


def test_the_package_exports_each_name_from_its_home_module():
    """Callers import from xvrcore.xray; each name is the object of the module that defines it."""
    from xvrcore import xray
    from xvrcore.xray import overrides, pixels, reader, tags

    for name in xray.__all__:
        assert getattr(xray, name) is not None
    assert xray.read_xray is reader.read_xray and xray.XrayImage is reader.XrayImage
    assert xray.GeometryOverrides is overrides.GeometryOverrides and xray.XrayDicomError is tags.XrayDicomError
    assert pixels.FRAME_REDUCTIONS == ("max", "min", "mean")
    assert "--sdd MM" in overrides.OVERRIDE_HINTS["sdd"]
