"""The declared pixel matrix checked against the bytes before decoding (xvrcore.xray.pixel_layout),
and the words the reader uses for files that are not DICOM, are truncated or cannot be decoded."""

from __future__ import annotations

import io
import struct

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless
from xray_dicoms import H, W, log_values, phantom, xa
from xvrcore.xray import XrayDicomError, pixels, read_xray
from xvrcore.xray import pixel_layout as layout_module
from xvrcore.xray.pixel_layout import _codestream_size, check_pixel_layout


@pytest.fixture
def good(tmp_path):
    """A 120×144 16-bit XA (the reader's phantom)."""
    return xa(tmp_path / "good.dcm", log_values(phantom(), False))


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if anything tries to decode (the checks must come first)."""

    def refuse(*args):
        raise AssertionError("the pixel data were decoded before the declared sizes were checked")

    monkeypatch.setattr(pixels, "_pydicom_pixels", refuse)
    monkeypatch.setattr(pixels, "_sitk_pixels", refuse)


def _changed(good, path, **changes):
    ds = pydicom.dcmread(good)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)
    return path


def test_a_matching_header_passes_and_names_its_matrix(good):
    layout = check_pixel_layout(pydicom.dcmread(good), "good.dcm")
    assert (layout.rows, layout.cols, layout.frames, layout.samples, layout.bits_allocated) == (H, W, 1, 1, 16)
    assert layout.native_bytes == H * W * 2 and layout.float_bytes == H * W * 4


def test_sizes_the_data_do_not_back_are_refused_before_decoding(good, tmp_path, no_decoding):
    doubled = _changed(good, tmp_path / "big.dcm", Rows=2 * H)
    with pytest.raises(XrayDicomError, match=rf"big\.dcm: declares {2 * H}×{W}×1 16-bit pixels "
                                             rf"\({4 * H * W} bytes\) but its pixel data \(7FE0,0010\) hold {2 * H * W}"):
        read_xray(doubled)
    with pytest.raises(XrayDicomError, match=r"NumberOfFrames \(0028,0008\) is 0: not a valid header value"):
        read_xray(_changed(good, tmp_path / "f0.dcm", NumberOfFrames=0))
    with pytest.raises(XrayDicomError, match=r"BitsStored \(0028,0101\) is 20: not a valid header value"):
        read_xray(_changed(good, tmp_path / "b20.dcm", BitsStored=20))
    with pytest.raises(XrayDicomError, match=r"SamplesPerPixel \(0028,0002\) is 2"):
        read_xray(_changed(good, tmp_path / "s2.dcm", SamplesPerPixel=2))


def test_memory_is_bounded_even_when_the_data_back_the_size(good, monkeypatch, no_decoding):
    monkeypatch.setattr(layout_module, "MAX_PIXEL_BYTES", H * W * 4 - 1)  # one byte short of this image
    with pytest.raises(XrayDicomError, match=r"good\.dcm: declares 120×144×1 16-bit pixels, 0\.0 GiB as float32 — "
                                             r"more than this reader's limit"):
        read_xray(good)
    monkeypatch.setattr(layout_module, "MAX_PIXEL_BYTES", H * W * 4)
    assert check_pixel_layout(pydicom.dcmread(good), "good.dcm").float_bytes == H * W * 4


def _jpeg(pixels8: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels8).save(out, "JPEG", quality=90)
    return out.getvalue()


def test_codestream_headers_give_their_size():
    assert _codestream_size(_jpeg(np.zeros((48, 80), np.uint8))) == (48, 80, 1)
    assert _codestream_size(_jpeg(np.zeros((16, 24, 3), np.uint8))) == (16, 24, 3)
    siz = b"\xff\x4f\xff\x51" + struct.pack(">HHIIIIIIIIH", 41, 0, 300, 200, 10, 20, 300, 200, 0, 0, 1)
    assert _codestream_size(siz) == (180, 290, 1)  # (Ysiz − YOsiz, Xsiz − XOsiz, Csiz)
    assert _codestream_size(b"\x00" * 64) is None


def _jpeg_dicom(good, path, fragments, **changes):
    ds = pydicom.dcmread(good)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.PixelData = encapsulate(fragments)
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    return path


def test_compressed_data_are_checked_against_the_header(good, tmp_path):
    eight = np.clip(pydicom.dcmread(good).pixel_array / 8, 0, 255).astype(np.uint8)
    jpeg = _jpeg(eight)
    assert read_xray(_jpeg_dicom(good, tmp_path / "ok.dcm", [jpeg])).pixels.shape == (H, W)
    with pytest.raises(XrayDicomError, match=r"small\.dcm: declares 120×144×1 8-bit pixels but its compressed pixel "
                                             r"data hold a 60×72 image"):
        read_xray(_jpeg_dicom(good, tmp_path / "small.dcm", [_jpeg(eight[::2, ::2])]))
    with pytest.raises(XrayDicomError, match=r"declares 2 frame\(s\) but its compressed pixel data hold 1 fragment"):
        read_xray(_jpeg_dicom(good, tmp_path / "frames.dcm", [jpeg], NumberOfFrames=2))
    broken = _jpeg_dicom(good, tmp_path / "items.dcm", [jpeg])
    data = broken.read_bytes()
    broken.write_bytes(data.replace(b"\xfe\xff\x00\xe0", b"\xfe\xff\x00\xe1", 2))  # the fragment's item tag
    with pytest.raises(XrayDicomError, match=r"items\.dcm: the compressed pixel data are corrupt"):
        read_xray(broken)


def test_rle_segments_must_match_the_samples(good, tmp_path):
    ds = pydicom.dcmread(good)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    assert read_xray(tmp_path / "rle.dcm").pixels.shape == (H, W)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7  # the data keep two segments (16 bits)
    ds.save_as(tmp_path / "rle8.dcm")
    with pytest.raises(XrayDicomError, match=r"1 RLE segment\(s\) per frame, but a frame's RLE header lists 2"):
        read_xray(tmp_path / "rle8.dcm")


def test_a_failing_decoder_means_damaged_data_and_a_missing_one_asks_for_a_decoder(good, tmp_path, monkeypatch):
    eight = np.clip(pydicom.dcmread(good).pixel_array / 8, 0, 255).astype(np.uint8)
    jpeg = _jpeg(eight)
    cut = _jpeg_dicom(good, tmp_path / "cut.dcm", [jpeg[: len(jpeg) // 3]])
    with pytest.raises(XrayDicomError, match=r"cut\.dcm: the pixel data cannot be decoded \(corrupt or truncated "
                                             r"JPEG Baseline") as caught:
        read_xray(cut)
    assert "install" not in str(caught.value).lower()
    monkeypatch.setattr(pixels, "_decoder_available", lambda ts: False)
    monkeypatch.setattr(pixels, "_sitk_pixels", lambda path: (_ for _ in ()).throw(RuntimeError("GDCM failed")))
    with pytest.raises(XrayDicomError, match=r"cut\.dcm: cannot decode the pixel data.*no working decoder.*Install a "
                                             r"decoder"):
        read_xray(cut)


def test_files_that_are_not_dicom_or_are_cut_short(good, tmp_path):
    (tmp_path / "text.dcm").write_text("hello\n")
    with pytest.raises(XrayDicomError, match=r"text\.dcm: not a DICOM file \(it is a text file"):
        read_xray(tmp_path / "text.dcm")
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(XrayDicomError, match=r"empty\.dcm: not a DICOM file \(the file is empty"):
        read_xray(tmp_path / "empty.dcm")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "png.dcm", "PNG")
    with pytest.raises(XrayDicomError, match=r"png\.dcm: not a DICOM file \(it is a PNG image"):
        read_xray(tmp_path / "png.dcm")
    data = good.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:-10])
    with pytest.raises(XrayDicomError, match=rf"cut\.dcm: the file is truncated: it ends {H * W * 2 - 10} byte\(s\) "
                                             rf"into PixelData \(7FE0,0010\), which declares {H * W * 2} bytes"):
        read_xray(tmp_path / "cut.dcm")
    meta_end = 132 + 12 + struct.unpack_from("<I", data, 140)[0]  # after FileMetaInformationGroupLength's group
    (tmp_path / "raw.dcm").write_bytes(data[meta_end:])  # a data set without preamble and file meta still reads
    assert data[meta_end : meta_end + 2] == b"\x08\x00"
    assert read_xray(tmp_path / "raw.dcm").pixels.shape == (H, W)


def test_jpeg_2000_size_mismatch(good, tmp_path):
    ds = pydicom.dcmread(good)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    siz = b"\xff\x4f\xff\x51" + struct.pack(">HHIIIIIIIIH", 41, 0, W, 2 * H, 0, 0, W, 2 * H, 0, 0, 1)
    ds.PixelData = encapsulate([siz + b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "j2k.dcm")
    with pytest.raises(XrayDicomError, match=rf"j2k\.dcm: declares {H}×{W}×1 16-bit pixels but its compressed pixel "
                                             rf"data hold a {2 * H}×{W} image"):
        read_xray(tmp_path / "j2k.dcm")
