"""Polarity and the conversion to line integrals: raw and log-processed, dense high or low, forced modes."""

from __future__ import annotations

import numpy as np
import pytest
from xray_dicoms import (
    CR_SOP,
    DX_SOP,
    SHUTTER,
    corr,
    exposed_box,
    log_values,
    phantom,
    raw_counts,
    slope,
    write_dicom,
    xa,
)
from xvrcore.xray import read_xray
from xvrcore.xray.polarity import block_average


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("kind", ["raw", "log_dense_high", "log_dense_low"])
def test_conversion_and_polarity_detection(tmp_path, kind, photometric):
    line = phantom()
    values = raw_counts(line) if kind == "raw" else log_values(line, dense_high=kind == "log_dense_high")
    path = xa(tmp_path / "x.dcm", values, photometric=photometric, bits_stored=14)
    img = read_xray(path)
    inside = img.mask
    assert np.array_equal(inside, exposed_box())
    assert img.dense_high_in_file == (kind == "log_dense_high")
    assert corr(img.pixels[inside], line[inside]) > 0.99  # dense = high, faithful
    if kind == "raw":
        assert img.intensity == "exponential" and "−log" in img.polarity
        assert slope(line[inside], img.pixels[inside]) == pytest.approx(1.0, abs=0.03)  # natural-log units
    else:
        assert img.intensity == "log" and "linear" in img.polarity
        assert slope(line[inside], img.pixels[inside]) == pytest.approx(300.0, rel=0.02)  # the file's units
    assert np.percentile(img.pixels[inside], 0.5) == pytest.approx(0.0, abs=1e-3 if kind != "raw" else 0.1)
    assert photometric in img.polarity
    # ``raw`` is the display image: MONOCHROME1 inverted so that high = displayed bright
    sign = 1 if photometric == "MONOCHROME2" else -1
    assert corr(img.raw, values) == pytest.approx(sign, abs=1e-6)
    assert img.pixels.dtype == np.float32 and img.raw.dtype == np.float32 and img.mask.dtype == bool


def test_data_evidence_beats_the_display_convention(tmp_path):
    """An XA file whose vessels are bright (unlike the usual angiographic display) is still read dense = high."""
    line = phantom()
    values = log_values(line, dense_high=True, collimated=False)
    img = read_xray(xa(tmp_path / "x.dcm", values, **{k: None for k in SHUTTER}))
    assert img.dense_high_in_file
    assert any("tubular structures are bright" in e for e in img.polarity_evidence)
    assert any("convention" in w for w in img.warnings)  # the contradicted convention is reported
    assert corr(img.pixels, line) > 0.99


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
        assert corr(img.pixels[img.mask], line[img.mask]) > 0.99


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
    assert corr(img.pixels, log_values(line, True)) < -0.999  # inverted as told, even though it is wrong here
    img = read_xray(tmp_path / "lin.dcm", intensity="log")
    assert img.intensity == "log" and corr(img.pixels, -counts) > 0.999
    with pytest.raises(ValueError):
        read_xray(flat, dense="up")


def test_block_average_keeps_only_fully_exposed_blocks():
    img = np.arange(600 * 520, dtype=np.float32).reshape(600, 520)
    mask = np.ones(img.shape, bool)
    mask[0, 0] = False
    small, exposed = block_average(img, mask)
    assert (
        small.shape == exposed.shape == (200, 173)
    )  # factor ceil(600 / 256) = 3; the ragged edge is dropped
    assert small[1, 2] == pytest.approx(img[3:6, 6:9].mean())
    assert not exposed[0, 0] and exposed[1:].all() and exposed[0, 1:].all()
    small, exposed = block_average(img[:200, :200], mask[:200, :200])  # already small: unchanged
    assert small.dtype == np.float64 and np.array_equal(small, img[:200, :200])
    assert np.array_equal(exposed, mask[:200, :200])
