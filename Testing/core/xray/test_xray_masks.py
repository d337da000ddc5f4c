"""Exposure masks: rectangular, circular and polygonal shutters and collimators, a round field of view, a blanked surround."""

from __future__ import annotations

import numpy as np
from xray_dicoms import SC_SOP, SHUTTER, H, W, exposed_box, log_values, phantom, write_dicom, xa
from xvrcore.xray import GeometryOverrides, read_xray


def test_rectangular_shutter_mask_is_exact(tmp_path):
    img = read_xray(xa(tmp_path / "r.dcm", log_values(phantom(), False)))
    assert np.array_equal(img.mask, exposed_box())


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
    expected = exposed_box() & ((r - 60) ** 2 + (c - 72) ** 2 <= 58**2) & (r >= 30)
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
