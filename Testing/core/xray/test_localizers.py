"""CT localizers (scouts) read with their line-scan geometry: the head study's real AP and lateral scouts.

The known answers are the DICOM header's own: the image plane (ImagePositionPatient, ImageOrientationPatient,
PixelSpacing) must project onto its pixels, the source sits DistanceSourceToPatient from the rotation axis.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pydicom
import pytest
import torch
from xvrcore.conventions import LPS_TO_RAS
from xvrcore.geometry.linescan import project_linescan
from xvrcore.geometry.rotations import invert_rigid
from xvrcore.xray import XrayDicomError
from xvrcore.xray.localizer import read_localizer

D = torch.float64


@pytest.fixture(scope="module")
def scout_paths(shared_data):
    folder = shared_data / "open" / "ct" / "head_skull_dbdicom" / "localizers"
    return {name: folder / f"localizer_{name}.dcm" for name in ("AP", "LAT")}


@pytest.fixture(scope="module")
def scouts(scout_paths):
    return {name: read_localizer(path) for name, path in scout_paths.items()}


def test_the_header_geometry_of_the_real_scouts(scouts):
    for name, beam, source_xy in (("AP", "posterior → anterior", (0.0, -541.0)), ("LAT", "left → right", (-541.0, 0.0))):
        scout = scouts[name]
        c = scout.camera
        assert (c.width, c.height, c.mirrored) == (835, 367, True)
        assert (c.row_spacing, c.col_spacing, c.plane_distance, c.sdd) == pytest.approx((0.545455, 0.634731, 541.0, 949.147))
        assert c.cu == pytest.approx(265.0 / 0.634731) and c.cv == 183.0  # the rotation axis; the middle row
        assert scout.beam == beam
        # the middle row's source: 541 mm from the axis, at that row's table position (150 − 183 · 0.545455 mm)
        expected = torch.tensor([*source_xy, 150.0 - 183 * 0.545455], dtype=D)
        torch.testing.assert_close(scout.camera_to_world[:3, 3], expected, atol=1e-6, rtol=0)
        assert float(torch.linalg.det(scout.camera_to_world[:3, :3])) == pytest.approx(1.0)
        assert scout.pixels.shape == (367, 835) and scout.mask.all()


def test_the_image_plane_projects_onto_its_pixels(scout_paths, scouts):
    """Each pixel's DICOM position (in the plane through the axis) lies on that pixel's ray."""
    for name, path in scout_paths.items():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        r, c = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
        first = np.array(ds.ImagePositionPatient, float)
        row_spacing, col_spacing = map(float, ds.PixelSpacing)
        pixels = np.array([[0.0, 0.0], [834.0, 366.0], [400.0, 100.0], [120.0, 300.0]])
        lps = first + pixels[:, :1] * col_spacing * r + pixels[:, 1:] * row_spacing * c
        ras = torch.tensor(lps * np.array(LPS_TO_RAS), dtype=D)
        uv, depth = project_linescan(ras, invert_rigid(scouts[name].camera_to_world), scouts[name].camera)
        torch.testing.assert_close(uv[0], torch.tensor(pixels, dtype=D), atol=1e-6, rtol=0)
        torch.testing.assert_close(depth[0], torch.full((4,), 541.0, dtype=D), atol=1e-6, rtol=0)


def test_polarity_dense_is_high_by_the_scout_convention(scout_paths, scouts):
    """Bone is bright in a CT scout. The generic evidence (ridges over the whole image) disagrees on these
    scouts; it is kept in the evidence and warned about, and forcing dense=low inverts the image."""
    for name, scout in scouts.items():
        assert scout.dense_high_in_file
        assert "CT localizer convention" in scout.polarity
        assert any("thin tubular" in line for line in scout.polarity_evidence)
        assert any("generic polarity evidence" in w for w in scout.warnings)
        raw = scout.raw
        assert np.corrcoef(scout.pixels.ravel(), raw.ravel())[0, 1] > 0.999  # dense = high: kept
        assert np.percentile(scout.pixels, 0.5) == pytest.approx(0.0, abs=1.0)  # ≈ 0 at the least attenuated
        forced = read_localizer(scout_paths[name], dense="low")
        assert "forced by the caller" in forced.polarity
        assert np.corrcoef(forced.pixels.ravel(), raw.ravel())[0, 1] < -0.999


def _edited(original, path, **changes):
    """A copy of the DICOM file ``original`` with attributes changed (None: removed)."""
    ds = pydicom.dcmread(original)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_localizers_without_usable_geometry_are_refused(scout_paths, tmp_path):
    tilt = math.radians(10)
    cases = {
        "no_sod.dcm": ({"DistanceSourceToPatient": None}, "DistanceSourceToPatient (0018,1111) is missing"),
        "no_orientation.dcm": ({"ImageOrientationPatient": None}, "ImageOrientationPatient (0020,0037) is missing"),
        "oblique.dcm": ({"ImageOrientationPatient": [1, 0, 0, 0, math.sin(tilt), -math.cos(tilt)]}, "not a CT line scan"),
        "zero_spacing.dcm": ({"PixelSpacing": [0, 0.6]}, "PixelSpacing (0028,0030) must be positive"),
    }
    for file_name, (changes, message) in cases.items():
        path = _edited(scout_paths["AP"], tmp_path / file_name, **changes)
        with pytest.raises(XrayDicomError, match=rf"^{re.escape(file_name)}: .*{re.escape(message)}"):
            read_localizer(path)
