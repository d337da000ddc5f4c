"""Pixel decoding (modality LUT, RLE, the SimpleITK fallback, undecodable data) and frames (selection, reductions, DSA)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, RLELossless
from xray_dicoms import exposed_box, log_values, phantom, thin_vessels, xa
from xvrcore.xray import XrayDicomError, pixels, read_xray


def test_rescale_slope_and_intercept(tmp_path):
    line = phantom()
    values = log_values(line, dense_high=False)
    plain = read_xray(xa(tmp_path / "plain.dcm", values))
    stored = (np.round(values) + 100) / 2  # value = 2·stored − 100
    rescaled = read_xray(xa(tmp_path / "resc.dcm", stored, RescaleSlope="2", RescaleIntercept="-100"))
    assert np.allclose(rescaled.raw, np.round(stored) * 2 - 100)
    assert np.allclose(rescaled.pixels, plain.pixels, atol=1.01)  # identical up to the stored rounding
    assert rescaled.dense_high_in_file == plain.dense_high_in_file


@pytest.fixture
def run(tmp_path):
    """4 frames of a log-processed XA run: contrast in the vessels in frames 2 and 3 only."""
    base, vessels = phantom(vessels=False), thin_vessels() * (phantom(vessels=False) > 0)
    frames = np.stack(
        [log_values(base + vessels * k, dense_high=False, seed=i) for i, k in enumerate((0, 0, 1, 0.5))]
    )
    return xa(tmp_path / "run.dcm", frames), base, vessels


def test_frames_selection_and_reductions(run):
    path, _base, vessels = run
    box = exposed_box()
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
    box = exposed_box()
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

    monkeypatch.setattr(pixels, "_decoder_available", lambda ts: False)
    fallback = read_xray(path)
    assert np.allclose(fallback.pixels, direct.pixels) and np.allclose(fallback.raw, direct.raw)
    assert any("SimpleITK" in w for w in fallback.warnings)

    def sitk_fails(p):
        raise RuntimeError("GDCM could not read it")

    monkeypatch.setattr(pixels, "_sitk_pixels", sitk_fails)
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
        XrayDicomError, match=r"j2k\.dcm: the pixel data cannot be decoded \(corrupt or truncated JPEG 2000"
    ):
        read_xray(path)
