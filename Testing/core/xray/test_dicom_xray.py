"""Reading X-ray/DSA DICOMs: geometry tags, errors, masks, polarity/intensity conversion, frames, real files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import xvrcore.xray.reader as dx
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, RLELossless, generate_uid
from xvrcore.geometry.positioner import pose_from_positioner, pose_from_xray
from xvrcore.xray.reader import GeometryOverrides, XrayDicomError, XrayImage, read_xray

XA_SOP = "1.2.840.10008.5.1.4.1.1.12.1"
CR_SOP = "1.2.840.10008.5.1.4.1.1.1"
DX_SOP = "1.2.840.10008.5.1.4.1.1.1.1"
SC_SOP = "1.2.840.10008.5.1.4.1.1.7"

H, W = 120, 144
XA_GEOMETRY = {
    "ImagerPixelSpacing": ["0.3", "0.3"],
    "DistanceSourceToDetector": "1000",
    "DistanceSourceToPatient": "750",
    "PositionerPrimaryAngle": "30",
    "PositionerSecondaryAngle": "-10",
    "PatientPosition": "HFS",
}
SHUTTER = {  # 1-based: rows 9..112, columns 11..134 exposed
    "ShutterShape": "RECTANGULAR",
    "ShutterLeftVerticalEdge": "11",
    "ShutterRightVerticalEdge": "134",
    "ShutterUpperHorizontalEdge": "9",
    "ShutterLowerHorizontalEdge": "112",
}


# ---- synthetic images ---------------------------------------------------------------------------------


def _exposed_box() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[8:112, 10:134] = True
    return m


def _vessels(shift: float = 0.0) -> np.ndarray:
    """Three thin contrast-filled 'vessels' (line integral ≈ 1.2 on the centre line)."""
    r, c = np.mgrid[:H, :W].astype(float)
    out = np.zeros((H, W))
    for k, (row0, amp, freq) in enumerate([(40.0, 8.0, 0.07), (70.0, 10.0, 0.05), (90.0, 6.0, 0.09)]):
        centre = row0 + shift + amp * np.sin(freq * c + k)
        out = np.maximum(out, np.clip(1.6 - np.abs(r - centre), 0, 1))
    vertical = np.clip(1.6 - np.abs(c - (60 + 8 * np.sin(0.08 * r))), 0, 1)
    return 1.2 * np.maximum(out, vertical)


def phantom(vessels: bool = True) -> np.ndarray:
    """Line integrals: an elliptical body (air around it), a bone disc and thin vessels."""
    r, c = np.mgrid[:H, :W].astype(float)
    body = 2.0 * np.sqrt(np.clip(1 - ((r - 60) / 48) ** 2 - ((c - 72) / 56) ** 2, 0, None))
    bone = 0.8 * np.sqrt(np.clip(1 - ((r - 66) ** 2 + (c - 50) ** 2) / 12**2, 0, None))
    line = body + bone
    return line + _vessels() * (body > 0) if vessels else line


def raw_counts(line: np.ndarray, seed: int = 0, i0: float = 12000.0) -> np.ndarray:
    """Raw detector values ∝ exp(−line); ~no signal behind the collimator."""
    rng = np.random.default_rng(seed)
    img = i0 * np.exp(-line)
    img = img + rng.normal(0, 1, img.shape) * np.sqrt(img) * 0.3
    img[~_exposed_box()] = 30.0 + rng.normal(0, 3, (~_exposed_box()).sum())
    return np.clip(img, 1, 16383)


def log_values(line: np.ndarray, dense_high: bool, seed: int = 0, collimated: bool = True) -> np.ndarray:
    """Log-processed values (affine in the line integral); collimated pixels look maximally dense."""
    rng = np.random.default_rng(seed)
    unexposed = line.max() + 1.5
    full = np.where(_exposed_box() | (not collimated), line, unexposed) + rng.normal(0, 0.01, line.shape)
    return 200.0 + 300.0 * full if dense_high else 1800.0 - 300.0 * full


def write_dicom(
    path: Path, frames, *, modality="XA", sop=XA_SOP, photometric="MONOCHROME2", bits_stored=16, **tags
) -> Path:
    """A minimal uncompressed DICOM image; ``tags`` set (or, with value None, omit) attributes."""
    arr = np.asarray(frames)
    multi = arr.ndim == 3
    arr = arr if multi else arr[None]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = arr.shape[1:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    if multi:
        ds.NumberOfFrames = arr.shape[0]
    ds.PixelData = np.round(arr).astype(np.uint16).tobytes()
    for key, value in tags.items():
        if value is not None:
            setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def xa(path, frames, **tags) -> Path:
    return write_dicom(path, frames, **{**XA_GEOMETRY, **SHUTTER, **tags})


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(x.ravel(), y.ravel(), 1)[0])


# ---- conversion and polarity on synthetic images -----------------------------------------------------


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("kind", ["raw", "log_dense_high", "log_dense_low"])
def test_conversion_and_polarity_detection(tmp_path, kind, photometric):
    line = phantom()
    values = raw_counts(line) if kind == "raw" else log_values(line, dense_high=kind == "log_dense_high")
    path = xa(tmp_path / "x.dcm", values, photometric=photometric, bits_stored=14)
    img = read_xray(path)
    inside = img.mask
    assert np.array_equal(inside, _exposed_box())
    assert img.dense_high_in_file == (kind == "log_dense_high")
    assert _corr(img.pixels[inside], line[inside]) > 0.99  # dense = high, faithful
    if kind == "raw":
        assert img.intensity == "exponential" and "−log" in img.polarity
        assert _slope(line[inside], img.pixels[inside]) == pytest.approx(1.0, abs=0.03)  # natural-log units
    else:
        assert img.intensity == "log" and "linear" in img.polarity
        assert _slope(line[inside], img.pixels[inside]) == pytest.approx(300.0, rel=0.02)  # the file's units
    assert np.percentile(img.pixels[inside], 0.5) == pytest.approx(0.0, abs=1e-3 if kind != "raw" else 0.1)
    assert photometric in img.polarity
    # ``raw`` is the display image: MONOCHROME1 inverted so that high = displayed bright
    sign = 1 if photometric == "MONOCHROME2" else -1
    assert _corr(img.raw, values) == pytest.approx(sign, abs=1e-6)
    assert img.pixels.dtype == np.float32 and img.raw.dtype == np.float32 and img.mask.dtype == bool


def test_data_evidence_beats_the_display_convention(tmp_path):
    """An XA file whose vessels are bright (unlike the usual angiographic display) is still read dense = high."""
    line = phantom()
    values = log_values(line, dense_high=True, collimated=False)
    img = read_xray(xa(tmp_path / "x.dcm", values, **{k: None for k in SHUTTER}))
    assert img.dense_high_in_file
    assert any("tubular structures are bright" in e for e in img.polarity_evidence)
    assert any("convention" in w for w in img.warnings)  # the contradicted convention is reported
    assert _corr(img.pixels, line) > 0.99


def test_radiograph_polarity_from_collimated_pixels(tmp_path):
    line = phantom(vessels=False)
    tags = dict(
        ImagerPixelSpacing=["0.2", "0.2"],
        DistanceSourceToDetector="1800",
        **{k.replace("Shutter", "Collimator"): v for k, v in SHUTTER.items()},
    )
    for dense_high in (True, False):
        path = write_dicom(
            tmp_path / f"cr{dense_high}.dcm", log_values(line, dense_high), modality="CR", sop=CR_SOP, **tags
        )
        img = read_xray(path)
        assert img.dense_high_in_file == dense_high
        assert any("unexposed" in e for e in img.polarity_evidence)
        assert _corr(img.pixels[img.mask], line[img.mask]) > 0.99


def test_header_relationship_sign_and_forced_modes(tmp_path):
    line = phantom(vessels=False)
    counts = raw_counts(line)
    common = {
        "ImagerPixelSpacing": ["0.2", "0.2"],
        "DistanceSourceToDetector": "1100",
        "modality": "DX",
        "sop": DX_SOP,
    }
    img = read_xray(
        write_dicom(
            tmp_path / "lin.dcm",
            counts,
            PixelIntensityRelationship="LIN",
            PixelIntensityRelationshipSign=1,
            **common,
        )
    )
    assert not img.dense_high_in_file and img.intensity == "exponential"
    assert "PixelIntensityRelationship LIN" in img.polarity
    assert any("PixelIntensityRelationshipSign +1" in e for e in img.polarity_evidence)
    # no evidence in the image at all: the display convention decides, and says so …
    flat = write_dicom(tmp_path / "flat.dcm", log_values(line, True) * 0 + 500, **common)
    img = read_xray(flat)
    assert img.dense_high_in_file and "DX display convention" in img.polarity
    img = read_xray(write_dicom(tmp_path / "flat1.dcm", line * 0 + 500, photometric="MONOCHROME1", **common))
    assert not img.dense_high_in_file and "DX display convention (dense bright, MONOCHROME1)" in img.polarity
    # … and without a convention (Modality OT) the values are kept, with a warning
    img = read_xray(write_dicom(tmp_path / "flat2.dcm", line * 0 + 500, **{**common, "modality": "OT"}))
    assert img.dense_high_in_file and "undetermined" in img.polarity
    assert any("could not be determined" in w for w in img.warnings)
    # callers can force both decisions
    img = read_xray(
        write_dicom(tmp_path / "f.dcm", log_values(line, True), **common), dense="low", intensity="log"
    )
    assert not img.dense_high_in_file and "forced" in img.polarity
    assert (
        _corr(img.pixels, log_values(line, True)) < -0.999
    )  # inverted as told, even though it is wrong here
    img = read_xray(tmp_path / "lin.dcm", intensity="log")
    assert img.intensity == "log" and _corr(img.pixels, -counts) > 0.999
    with pytest.raises(ValueError):
        read_xray(flat, dense="up")


def test_rescale_slope_and_intercept(tmp_path):
    line = phantom()
    values = log_values(line, dense_high=False)
    plain = read_xray(xa(tmp_path / "plain.dcm", values))
    stored = (np.round(values) + 100) / 2  # value = 2·stored − 100
    rescaled = read_xray(xa(tmp_path / "resc.dcm", stored, RescaleSlope="2", RescaleIntercept="-100"))
    assert np.allclose(rescaled.raw, np.round(stored) * 2 - 100)
    assert np.allclose(rescaled.pixels, plain.pixels, atol=1.01)  # identical up to the stored rounding
    assert rescaled.dense_high_in_file == plain.dense_high_in_file


# ---- frames and DSA ---------------------------------------------------------------------------------------


@pytest.fixture
def run(tmp_path):
    """4 frames of a log-processed XA run: contrast in the vessels in frames 2 and 3 only."""
    base, vessels = phantom(vessels=False), _vessels() * (phantom(vessels=False) > 0)
    frames = np.stack(
        [log_values(base + vessels * k, dense_high=False, seed=i) for i, k in enumerate((0, 0, 1, 0.5))]
    )
    return xa(tmp_path / "run.dcm", frames), base, vessels


def test_frames_selection_and_reductions(run):
    path, _base, vessels = run
    box = _exposed_box()
    v = (vessels > 1.0) & box
    per_frame = [read_xray(path, frame=k) for k in range(4)]
    assert [p.frame_info for p in per_frame[:2]] == ["frame 0 of 4", "frame 1 of 4"]
    assert per_frame[0].number_of_frames == 4
    contrast = [p.pixels[v].mean() - p.pixels[box & ~v].mean() for p in per_frame]
    assert contrast[2] > contrast[3] > contrast[0]
    mx, mn, mean = (read_xray(path, frame=f) for f in ("max", "min", "mean"))
    assert read_xray(path).frame_info == mx.frame_info == "maximum over 4 frames (line-integral domain)"
    assert np.allclose(mx.pixels, np.max([p.pixels for p in per_frame], 0))
    assert np.allclose(mn.pixels, np.min([p.pixels for p in per_frame], 0))
    assert np.allclose(mean.pixels, np.mean([p.pixels for p in per_frame], 0), atol=1e-3)
    assert np.allclose(read_xray(path, frame=-1).pixels, per_frame[3].pixels)


def test_dsa_subtraction_in_the_log_domain(run):
    path, _base, vessels = run
    box = _exposed_box()
    dsa = read_xray(path, frame=2, mask_frame=0)
    assert "minus mask frame 0" in dsa.frame_info
    v = (vessels > 1.0) & box
    assert (
        np.abs(dsa.pixels[box & (vessels == 0)]).mean() < 10.0
    )  # background cancels (noise only; units 300/line)
    assert dsa.pixels[v].mean() == pytest.approx(300.0 * vessels[v].mean(), rel=0.05)  # vessels, dense = high
    peak = read_xray(path, frame="max", mask_frame=0)
    assert np.all(peak.pixels[box] > -10.0)
    with pytest.raises(XrayDicomError, match="run.dcm: frame 7 requested but the file has 4 frame"):
        read_xray(path, frame=7)
    with pytest.raises(XrayDicomError, match="empty image"):
        read_xray(path, frame=1, mask_frame=1)
    with pytest.raises(ValueError, match="frame must be"):
        read_xray(path, frame="median")


def test_dynamic_run_angles_per_frame(tmp_path):
    frames = np.stack([log_values(phantom(), False, seed=k) for k in range(3)])
    path = xa(
        tmp_path / "rot.dcm",
        frames,
        PositionerMotion="DYNAMIC",
        PositionerPrimaryAngleIncrement=["0", "5", "10"],
        PositionerSecondaryAngleIncrement=["0", "-1", "-2"],
    )
    assert (read_xray(path, frame=2).primary_angle, read_xray(path, frame=2).secondary_angle) == (40.0, -12.0)
    reduced = read_xray(path)
    assert reduced.primary_angle == 30.0 and any("DYNAMIC" in w for w in reduced.warnings)


# ---- geometry tags and their errors -------------------------------------------------------------------


def test_full_xa_geometry(tmp_path):
    img = read_xray(xa(tmp_path / "g.dcm", log_values(phantom(), False)))
    assert isinstance(img, XrayImage)
    d = img.detector
    assert (d.sdd, d.rows, d.cols, d.row_spacing, d.col_spacing, d.mirrored) == (1000.0, H, W, 0.3, 0.3, True)
    assert (img.sod, img.primary_angle, img.secondary_angle, img.patient_position) == (
        750.0,
        30.0,
        -10.0,
        "HFS",
    )
    assert img.intrinsics.fx == pytest.approx(-1000 / 0.3) and img.intrinsics.fy == pytest.approx(1000 / 0.3)
    assert img.magnification == pytest.approx(1000 / 750)
    assert img.warnings == []
    assert img.geometry_sources["pixel_spacing"].startswith("ImagerPixelSpacing")
    assert img.modality == "XA" and img.sop_class == XA_SOP and "Angiographic" in img.sop_class_name
    assert torch.allclose(pose_from_xray(img, [0, 0, 0]), pose_from_positioner(30.0, -10.0, 750.0))


@pytest.mark.parametrize(
    "tags,needles",
    [
        (
            {"ImagerPixelSpacing": None},
            [
                "ImagerPixelSpacing (0018,1164) is absent",
                "PixelSpacing (0028,0030) is absent",
                "--pixel-spacing ROW COL",
            ],
        ),
        (
            {"ImagerPixelSpacing": None, "PixelSpacing": ["0.000", "0.000"]},
            ["PixelSpacing (0028,0030) is 0.000\\0.000 (not a valid spacing)", "'Pixel spacing'"],
        ),
        (
            {"ImagerPixelSpacing": ["-0.3", "0.3"]},
            ["ImagerPixelSpacing (0018,1164) is -0.3\\0.3", "--pixel-spacing"],
        ),
        (
            {"ImagerPixelSpacing": ["50", "50"]},
            ["ImagerPixelSpacing (0018,1164) is 50\\50", "--pixel-spacing"],
        ),
        ({"DistanceSourceToDetector": None}, ["DistanceSourceToDetector (0018,1110) is absent", "--sdd MM"]),
        (
            {"DistanceSourceToDetector": "0"},
            ["DistanceSourceToDetector (0018,1110) is 0 (outside", "--sdd MM"],
        ),
    ],
)
def test_missing_or_absurd_geometry_is_a_clear_error(tmp_path, tags, needles):
    path = xa(tmp_path / "bad_geometry.dcm", log_values(phantom(), False), **tags)
    with pytest.raises(XrayDicomError) as err:
        read_xray(path)
    msg = str(err.value)
    assert msg.startswith(
        "bad_geometry.dcm (XA, X-Ray Angiographic Image Storage): cannot build the C-arm geometry"
    )
    for needle in needles:
        assert needle in msg
    fixed = read_xray(
        path, overrides=GeometryOverrides(pixel_spacing=0.3, sdd=1000)
    )  # overrides supply what is missing
    assert fixed.detector.sdd == 1000 and fixed.detector.row_spacing == 0.3


def test_spacing_fallbacks(tmp_path):
    values = log_values(phantom(), False)
    img = read_xray(xa(tmp_path / "ps.dcm", values, ImagerPixelSpacing=None, PixelSpacing=["0.25", "0.25"]))
    assert img.detector.row_spacing == 0.25 and img.geometry_sources["pixel_spacing"].startswith(
        "PixelSpacing"
    )
    assert any(
        "PixelSpacing 0.25\\0.25 used because ImagerPixelSpacing is absent" in w and "isocentre" in w
        for w in img.warnings
    )
    img = read_xray(
        xa(
            tmp_path / "cal.dcm",
            values,
            ImagerPixelSpacing=None,
            PixelSpacing=["0.2", "0.2"],
            PixelSpacingCalibrationType="GEOMETRY",
            EstimatedRadiographicMagnificationFactor="1.5",
        )
    )
    assert img.detector.row_spacing == pytest.approx(0.3) and any(
        "magnification 1.5" in w for w in img.warnings
    )
    img = read_xray(
        xa(tmp_path / "fov.dcm", values, ImagerPixelSpacing=None, FieldOfViewDimensions=["36", "48"])
    )
    assert (img.detector.row_spacing, img.detector.col_spacing) == pytest.approx((36 / H, 48 / W))
    assert any("FieldOfViewDimensions" in w for w in img.warnings) and any(
        "non-square" in w for w in img.warnings
    )
    img = read_xray(xa(tmp_path / "both.dcm", values, PixelSpacing=["0.2", "0.2"]))
    assert img.detector.row_spacing == 0.3 and any(
        "differs from ImagerPixelSpacing" in w for w in img.warnings
    )


def test_non_square_pixels_are_kept(tmp_path):
    img = read_xray(xa(tmp_path / "ns.dcm", log_values(phantom(), False), ImagerPixelSpacing=["0.4", "0.2"]))
    assert (img.detector.row_spacing, img.detector.col_spacing) == (0.4, 0.2)
    assert img.intrinsics.fy == pytest.approx(2500) and img.intrinsics.fx == pytest.approx(-5000)


def test_sod_angles_position_fallbacks_and_overrides(tmp_path):
    values = log_values(phantom(), False)
    img = read_xray(
        xa(
            tmp_path / "a.dcm",
            values,
            DistanceSourceToPatient=None,
            PositionerPrimaryAngle=None,
            PositionerSecondaryAngle=None,
            PatientPosition=None,
        )
    )
    assert img.sod is None and img.primary_angle is None and img.patient_position is None
    assert any("--primary-angle" in w for w in img.warnings) and any("--sod" in w for w in img.warnings)
    img = read_xray(
        xa(
            tmp_path / "m.dcm",
            values,
            DistanceSourceToPatient=None,
            EstimatedRadiographicMagnificationFactor="1.25",
        )
    )
    assert img.sod == pytest.approx(800.0)
    img = read_xray(xa(tmp_path / "big.dcm", values, DistanceSourceToPatient="1200"))
    assert img.sod is None and any("not between 0 and the SID" in w for w in img.warnings)
    img = read_xray(
        xa(tmp_path / "o.dcm", values),
        overrides=GeometryOverrides(
            sdd=1100,
            sod=800,
            primary_angle=-20,
            secondary_angle=15,
            patient_position="ffs",
            principal_offset=(3.0, -1.5),
        ),
    )
    assert (img.detector.sdd, img.sod, img.primary_angle, img.secondary_angle, img.patient_position) == (
        1100,
        800,
        -20,
        15,
        "FFS",
    )
    assert img.detector.principal_offset == (3.0, -1.5)
    assert sum("override" in w for w in img.warnings) >= 3
    with pytest.raises(ValueError, match="smaller than sdd"):
        GeometryOverrides(sdd=700, sod=800)
    with pytest.raises(ValueError, match="pixel spacing"):
        GeometryOverrides(pixel_spacing=(0.0, 0.0))


def test_radiograph_view_position_and_surface_sod(tmp_path):
    img = read_xray(
        write_dicom(
            tmp_path / "chest.dcm",
            log_values(phantom(False), True),
            modality="DX",
            sop=DX_SOP,
            ImagerPixelSpacing=["0.15", "0.15"],
            DistanceSourceToDetector="1800",
            DistanceSourceToPatient="1650",
            ViewPosition="AP",
            PatientOrientation=["R", "F"],
        )
    )
    assert (img.primary_angle, img.secondary_angle) == (
        180.0,
        0.0,
    ) and "ViewPosition" in img.geometry_sources["angles"]
    assert any("patient-side surface" in w for w in img.warnings)
    assert img.patient_orientation == ("R", "F")
    assert not any("mirrored" in w for w in img.warnings)  # R\F is what an AP view gives
    img = read_xray(
        write_dicom(
            tmp_path / "flip.dcm",
            log_values(phantom(False), True),
            modality="DX",
            sop=DX_SOP,
            ImagerPixelSpacing=["0.15", "0.15"],
            DistanceSourceToDetector="1800",
            ViewPosition="PA",
            PatientOrientation=["R", "F"],
        )
    )
    assert any("mirrored left-right" in w for w in img.warnings)


def test_principal_point_from_the_dx_detector_description(tmp_path):
    values = log_values(phantom(), False)
    # active area 0..60 mm × 0..60 mm (centre 30, 30); FOV starts 20 detector pixels (0.2 mm) in, 36×43.2 mm
    tags = {
        "DetectorElementSpacing": ["0.2", "0.2"],
        "DetectorActiveOrigin": ["0", "0"],
        "DetectorActiveDimensions": ["60", "60"],
        "FieldOfViewOrigin": ["20", "20"],
        "FieldOfViewDimensions": ["36", "44"],
        "ImagerPixelSpacing": ["0.3", "0.3"],
    }
    img = read_xray(xa(tmp_path / "pp.dcm", values, **tags))
    # FOV centre = 4 + 18 = 22 mm (rows), 4 + 22 = 26 mm (cols): principal point at +8 mm rows, +4 mm cols
    assert img.detector.principal_offset == pytest.approx((4.0, 8.0))
    img = read_xray(
        xa(tmp_path / "pp90.dcm", values, FieldOfViewRotation="90", FieldOfViewHorizontalFlip="YES", **tags)
    )
    assert img.detector.principal_offset == pytest.approx(
        (8.0, 4.0)
    )  # right -> down, down -> left, then flipped
    img = read_xray(xa(tmp_path / "dao.dcm", values, DetectorActiveOrigin=["1.5", "-2"]))
    assert img.detector.principal_offset == (0.0, 0.0) and any(
        "not a principal point" in w for w in img.warnings
    )


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


# ---- masks --------------------------------------------------------------------------------------------------


def test_rectangular_shutter_mask_is_exact(tmp_path):
    img = read_xray(xa(tmp_path / "r.dcm", log_values(phantom(), False)))
    assert np.array_equal(img.mask, _exposed_box())


def test_circular_and_polygonal_shutters_and_collimator(tmp_path):
    values = log_values(phantom(), False)
    r, c = np.mgrid[:H, :W]
    none = {k: None for k in SHUTTER}
    img = read_xray(
        xa(
            tmp_path / "c.dcm",
            values,
            **{**none, "ShutterShape": "CIRCULAR"},
            CenterOfCircularShutter=["61", "73"],
            RadiusOfCircularShutter="50",
        )
    )
    assert np.array_equal(img.mask, (r - 60) ** 2 + (c - 72) ** 2 <= 50**2)
    # a circle inside a rectangle (both shutter shapes) plus a rectangular collimator that cuts the top
    img = read_xray(
        xa(
            tmp_path / "rc.dcm",
            values,
            **{**SHUTTER, "ShutterShape": ["RECTANGULAR", "CIRCULAR"]},
            CenterOfCircularShutter=["61", "73"],
            RadiusOfCircularShutter="58",
            CollimatorShape="RECTANGULAR",
            CollimatorLeftVerticalEdge="1",
            CollimatorRightVerticalEdge=str(W),
            CollimatorUpperHorizontalEdge="31",
            CollimatorLowerHorizontalEdge=str(H),
        )
    )
    expected = _exposed_box() & ((r - 60) ** 2 + (c - 72) ** 2 <= 58**2) & (r >= 30)
    assert np.array_equal(img.mask, expected)
    img = read_xray(
        xa(
            tmp_path / "p.dcm",
            values,
            **{**none, "ShutterShape": "POLYGONAL"},
            VerticesOfThePolygonalShutter=["11", "11", "11", "131", "111", "71"],
        )
    )
    assert img.mask[20, 70] and img.mask[100, 70] and not img.mask[100, 20] and not img.mask[5, 70]
    # the chest file's kind of nonsense collimator is ignored, with a warning
    img = read_xray(
        xa(
            tmp_path / "n.dcm",
            values,
            **none,
            CollimatorShape="RECTANGULAR",
            CollimatorLeftVerticalEdge="-184",
            CollimatorRightVerticalEdge="184",
            CollimatorUpperHorizontalEdge="907",
            CollimatorLowerHorizontalEdge="1299",
        )
    )
    assert img.mask.all() and any("do not fit" in w for w in img.warnings)


def test_round_field_of_view_and_blanked_circle(tmp_path):
    values = log_values(phantom(), False)
    none = {k: None for k in SHUTTER}
    img = read_xray(xa(tmp_path / "fov.dcm", values, **none, FieldOfViewShape="ROUND"))
    r, c = np.mgrid[:H, :W]
    assert np.array_equal(img.mask, (r - (H - 1) / 2) ** 2 + (c - (W - 1) / 2) ** 2 <= (H / 2) ** 2)
    blanked = np.where((r - 60) ** 2 + (c - 72) ** 2 <= 55**2, values, 0)
    img = read_xray(
        write_dicom(tmp_path / "sc.dcm", blanked, sop=SC_SOP),
        overrides=GeometryOverrides(pixel_spacing=0.3, sdd=1000),
    )
    disk = (r - 60) ** 2 + (c - 72) ** 2 <= 53**2
    assert img.mask[disk].all() and not img.mask[(r - 60) ** 2 + (c - 72) ** 2 > 55**2].any()
    assert any("blanked surround" in w for w in img.warnings)


# ---- decoding -------------------------------------------------------------------------------------------------


def test_rle_multiframe_is_decoded(tmp_path):
    frames = np.stack([log_values(phantom(), False, seed=k) for k in range(2)])
    plain = xa(tmp_path / "plain.dcm", frames)
    ds = pydicom.dcmread(plain)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm", enforce_file_format=True)
    a, b = read_xray(plain, frame=1), read_xray(tmp_path / "rle.dcm", frame=1)
    assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.mask, b.mask)


def test_simpleitk_fallback_when_pydicom_has_no_decoder(tmp_path, monkeypatch):
    values = log_values(phantom(), False)
    stored = (np.round(values) + 100) / 2
    path = xa(tmp_path / "fb.dcm", stored, RescaleSlope="2", RescaleIntercept="-100")
    direct = read_xray(path)

    def no_decoder(ds):
        raise RuntimeError("Unable to decompress: all plugins are missing dependencies")

    monkeypatch.setattr(dx, "_pydicom_pixels", no_decoder)
    fallback = read_xray(path)
    assert np.allclose(fallback.pixels, direct.pixels) and np.allclose(fallback.raw, direct.raw)
    assert any("SimpleITK" in w for w in fallback.warnings)

    def sitk_fails(p):
        raise RuntimeError("GDCM could not read it")

    monkeypatch.setattr(dx, "_sitk_pixels", sitk_fails)
    with pytest.raises(
        XrayDicomError,
        match=r"fb\.dcm: cannot decode the pixel data, transfer syntax Explicit VR Little Endian.*python-gdcm",
    ):
        read_xray(path)


def test_undecodable_compressed_data_names_the_transfer_syntax(tmp_path):
    path = xa(tmp_path / "j2k.dcm", log_values(phantom(), False))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64])
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(
        XrayDicomError, match=r"j2k\.dcm: cannot decode the pixel data, transfer syntax JPEG 2000"
    ):
        read_xray(path)


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


# ---- the real files --------------------------------------------------------------------------------------------

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

    def no_decoder(ds):
        raise RuntimeError(
            "Unable to decompress 'JPEG Lossless' pixel data because all plugins are missing dependencies"
        )

    monkeypatch.setattr(dx, "_pydicom_pixels", no_decoder)
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
