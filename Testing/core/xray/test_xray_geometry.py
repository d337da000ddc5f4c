"""Header geometry: spacing, SID, SOD, angles (per frame, ViewPosition), patient position/orientation, principal point; errors and overrides."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from xray_dicoms import DX_SOP, XA_SOP, H, W, log_values, phantom, write_dicom, xa
from xvrcore.geometry.positioner import pose_from_positioner, pose_from_xray
from xvrcore.xray import GeometryOverrides, XrayDicomError, XrayImage, read_xray


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
    big = xa(tmp_path / "big.dcm", values, DistanceSourceToPatient="1200")
    with pytest.raises(XrayDicomError, match=r"big\.dcm .*source-to-patient distance DistanceSourceToPatient "
                       r"\(0018,1111\) 1200 mm exceeds the source-to-detector distance 1000 mm.*--sod"):
        read_xray(big)
    assert read_xray(big, overrides=GeometryOverrides(sod=700)).sod == 700  # the override settles it
    with pytest.raises(XrayDicomError, match=r"DistanceSourceToPatient \(0018,1111\) is -750 mm: a distance cannot"):
        read_xray(xa(tmp_path / "neg.dcm", values, DistanceSourceToPatient="-750"))
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
