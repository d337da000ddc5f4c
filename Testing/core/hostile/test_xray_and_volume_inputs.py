"""Hostile X-ray DICOMs and volumes given to ``xvrcore register`` (issue 15: classes 1 and 8, and the
damaged inputs already handled): every case exits 2 with one line naming the file and the problem,
and leaves the results that a run finished before it byte-identical.

Every bad file is made here from ``good_xa``, the shared radiographs or the torso CT (pydicom,
SimpleITK, Pillow, plain bytes). One batch registration (the good X-ray beside a bad one) makes the
finished results that every other case must leave untouched.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import resource
import shutil
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import Outcome, assert_clear_error, digest, run_cli, run_process
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, RLELossless

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RADIOGRAPHS = ("open", "xray", "radiographs")
# a private transfer syntax no decoder knows, as long as JPEG Baseline's UID (the file meta keeps its length)
PRIVATE_SYNTAX = b"1.3.6.1.4.1.99999.4.50"
MEMORY_LIMIT = 4 * 1024**3  # address space for the reader's own process: far below the pixels declared


# ---- the bad files -------------------------------------------------------------------------------------


def dicom_like(good: Path, path: Path, pixel_data: bytes | None = None, **changes) -> Path:
    """``good`` with header values changed (None deletes one) and optionally other pixel data."""
    ds = pydicom.dcmread(good)
    for keyword, value in changes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    if pixel_data is not None:
        ds.PixelData = pixel_data
    ds.save_as(path)
    return path


def eight_bit(good: Path) -> np.ndarray:
    """The good X-ray's pixels scaled to 8 bits (what baseline JPEG holds)."""
    values = pydicom.dcmread(good).pixel_array.astype(np.float64)
    return np.round(255 * values / values.max()).astype(np.uint8)


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=95)
    return out.getvalue()


def with_jpeg_size(jpeg: bytes, rows: int, cols: int) -> bytes:
    """A JPEG stream whose frame header (SOF0) claims another size; its scan is left as it is."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + struct.pack(">HH", rows, cols) + jpeg[sof + 9 :]


def encapsulated(good: Path, path: Path, fragments: list[bytes], has_bot: bool = False, **changes) -> Path:
    """``good`` as 8-bit JPEG Baseline pixel data made of ``fragments``."""
    ds = pydicom.dcmread(good)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.PixelData = encapsulate(fragments, has_bot=has_bot)
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    return path


def with_private_syntax(path: Path) -> Path:
    """The JPEG file under a private transfer syntax (pydicom writes only those it knows)."""
    data = path.read_bytes()
    assert len(PRIVATE_SYNTAX) == len(JPEGBaseline8Bit) and data.count(JPEGBaseline8Bit.encode()) == 1
    path.write_bytes(data.replace(JPEGBaseline8Bit.encode(), PRIVATE_SYNTAX))
    return path


def rle_of(good: Path, path: Path, **changes) -> Path:
    ds = pydicom.dcmread(good)
    ds.compress(RLELossless)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(path)
    return path


def image_file(path: Path, data: np.ndarray, spacing=(3.0, 3.0, 3.0)) -> Path:
    image = sitk.GetImageFromArray(data)
    image.SetSpacing(spacing[: image.GetDimension()])
    sitk.WriteImage(image, str(path))
    return path


def with_nifti_spacing(ct: Path, path: Path, spacing: tuple[float, float, float]) -> Path:
    """The CT with its NIfTI pixdim[1:4] rewritten (SimpleITK refuses to write such spacings)."""
    header = bytearray(gzip.decompress(ct.read_bytes()))
    struct.pack_into("<3f", header, 80, *spacing)
    path.write_bytes(gzip.compress(bytes(header), compresslevel=1))
    return path


# ---- the finished results every case must leave alone ------------------------------------------------


@dataclass
class Finished:
    outcome: Outcome
    folder: Path
    digest: dict[str, str]
    bad: Path


def _main_captured(*args: str | Path) -> Outcome:
    """``xvrcore`` in this process for a module fixture (``run_cli`` needs the per-test ``capsys``)."""
    from xvrcore.app.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return Outcome(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def finished(tmp_path_factory, good_xa: Path, torso_ct: Path) -> Finished:
    """A batch of the good X-ray and one whose header declares more pixels than it holds, registered once."""
    inputs = tmp_path_factory.mktemp("batch")
    shutil.copy(good_xa, inputs / "good_xa.dcm")
    bad = dicom_like(good_xa, inputs / "padded_xa.dcm", Rows=128, Columns=128)  # over 64×64 data
    folder = tmp_path_factory.mktemp("results")
    outcome = _main_captured("register", inputs, "--volume", torso_ct, "--output", folder, "--no-retry", "--quiet")
    return Finished(outcome, folder, digest(folder), bad)


def register(xray: Path, volume: Path, folder: Path, capsys) -> Outcome:
    return run_cli("register", xray, "--volume", volume, "--output", folder, "--quiet", capsys=capsys)


def assert_refused(outcome: Outcome, bad: Path, finished: Finished, *words: str) -> str:
    """Exit 2, one clear line naming ``bad`` with ``words``, and the finished results untouched."""
    line = assert_clear_error(outcome, 2, bad, *words)
    assert digest(finished.folder) == finished.digest
    return line


def test_a_batch_registers_the_good_file_and_reports_the_hostile_one(finished: Finished):
    outcome = finished.outcome
    assert "registered 1" in outcome.out and "failed 1 of 2" in outcome.out, outcome.out
    line = assert_clear_error(outcome, 2, finished.bad, "declares 128×128×1 16-bit pixels (32768 bytes)", "8192")
    assert "good_xa" not in line
    assert {"good_xa.json", "good_xa.tfm"} <= set(finished.digest)
    assert not [name for name in finished.digest if name.startswith("padded_xa")]  # nothing of the bad one


# ---- class 1: declared sizes that the pixel data do not back ---------------------------------------------


def _native_cases(good: Path, folder: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    data = pydicom.dcmread(good).PixelData  # 64×64 16-bit: 8192 bytes
    pixels = np.frombuffer(data, "<u2").reshape(64, 64)
    doubled = np.repeat(np.repeat(pixels, 2, 0), 2, 1).tobytes()  # 128×128 data
    return {
        "256x256_over_128x128": (
            dicom_like(good, folder / "rows_256.dcm", doubled, Rows=256, Columns=256),
            ("declares 256×256×1 16-bit pixels (131072 bytes)", "hold 32768 bytes"),
        ),
        "10_frames_over_1": (
            dicom_like(good, folder / "frames_10.dcm", NumberOfFrames=10),
            ("declares 64×64×10 16-bit pixels (81920 bytes)", "hold 8192 bytes"),
        ),
        "32_bits_over_16": (
            dicom_like(good, folder / "bits_32.dcm", BitsAllocated=32, BitsStored=32, HighBit=31),
            ("declares 64×64×1 32-bit pixels (16384 bytes)", "hold 8192 bytes"),
        ),
        "3_samples_over_grey": (
            dicom_like(good, folder / "samples_3.dcm", SamplesPerPixel=3, PlanarConfiguration=0,
                       PhotometricInterpretation="RGB"),
            ("3 samples (24576 bytes)", "hold 8192 bytes"),
        ),
        "more_data_than_declared": (
            dicom_like(good, folder / "rows_32.dcm", Rows=32),
            ("declares 32×64×1 16-bit pixels (4096 bytes)", "hold 8192 bytes"),
        ),
    }


def _compressed_cases(good: Path, folder: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    jpeg = jpeg_bytes(eight_bit(good))
    return {
        "jpeg_of_another_size": (
            encapsulated(good, folder / "jpeg_128.dcm", [jpeg], Rows=128, Columns=128),
            ("declares 128×128×1 8-bit pixels", "hold a 64×64 image"),
        ),
        "more_frames_than_fragments": (
            encapsulated(good, folder / "jpeg_frames.dcm", [jpeg], NumberOfFrames=3),
            ("declares 3 frame(s)", "1 fragment(s)"),
        ),
        "offset_table_of_other_frames": (
            encapsulated(good, folder / "jpeg_bot.dcm", [jpeg, jpeg], has_bot=True),
            ("declares 1 frame(s)", "Basic Offset Table", "lists 2"),
        ),
        "rle_segments_of_other_samples": (
            rle_of(good, folder / "rle_rgb.dcm", SamplesPerPixel=3, PlanarConfiguration=1,
                   PhotometricInterpretation="RGB"),
            ("6 RLE segment(s) per frame", "lists 2"),
        ),
    }


SIZE_CASES = ["256x256_over_128x128", "10_frames_over_1", "32_bits_over_16", "3_samples_over_grey",
              "more_data_than_declared", "jpeg_of_another_size", "more_frames_than_fragments",
              "offset_table_of_other_frames", "rle_segments_of_other_samples"]


@pytest.mark.parametrize("case", SIZE_CASES)
def test_declared_sizes_that_the_pixel_data_do_not_back(case, good_xa, torso_ct, finished, tmp_path, capsys):
    cases = {**_native_cases(good_xa, tmp_path), **_compressed_cases(good_xa, tmp_path)}
    bad, words = cases[case]
    line = assert_refused(register(bad, torso_ct, finished.folder, capsys), bad, finished, *words)
    assert "decoder" not in line.lower()  # checked before decoding, never a fallback


def test_huge_declared_images_are_refused_under_an_address_space_limit(good_xa, torso_ct, finished, tmp_path):
    """65535×65535 over 16 KB (the reader once allocated ~22 GB for it), and a JPEG whose own header
    claims 65535×65535: both refused before decoding, in a process that could not allocate them."""
    native = dicom_like(good_xa, tmp_path / "huge_native.dcm", bytes(16384), Rows=65535, Columns=65535)
    claimed = with_jpeg_size(jpeg_bytes(eight_bit(good_xa)), 65535, 65535)
    jpeg = encapsulated(good_xa, tmp_path / "huge_jpeg.dcm", [claimed], Rows=65535, Columns=65535)

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    outcome = run_process("register", native, jpeg, "--volume", torso_ct, "--output", finished.folder, "--quiet",
                          "--device", "cpu", preexec_fn=limit_memory)
    assert "MemoryError" not in outcome.err and "bad_alloc" not in outcome.err
    assert_refused(outcome, native, finished, "declares 65535×65535×1 16-bit pixels (8589672450 bytes)",
                   "hold 16384 bytes")
    assert_refused(outcome, jpeg, finished, "declares 65535×65535×1 8-bit pixels", "16.0 GiB as float32",
                   "limit of 4.0 GiB")


# ---- class 8: words that point the right way -----------------------------------------------------------


def _word_cases(good: Path, folder: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    jpeg = jpeg_bytes(eight_bit(good))
    scan = jpeg.index(b"\xff\xda")
    noise = np.random.default_rng(0).integers(0, 255, 400, dtype=np.uint8).tobytes().replace(b"\xff", b"\x00")
    png = folder / "picture.dcm"
    Image.fromarray(eight_bit(good)).save(png, "PNG")
    text = folder / "notes.dcm"
    text.write_text("Patient arrived at 10:00.\nX-ray to follow.\n")
    random = folder / "random_400.dcm"
    random.write_bytes(np.random.default_rng(1).integers(1, 255, 400, dtype=np.uint8).tobytes())
    return {
        "sid_shorter_than_sod": (
            dicom_like(good, folder / "sod_1200.dcm", DistanceSourceToPatient="1200"),
            ("the source-to-patient distance", "1200 mm exceeds the source-to-detector distance 1000 mm", "--sod"),
        ),
        "text_file": (text, ("not a DICOM file", "it is a text file")),
        "png_file": (png, ("not a DICOM file", "it is a PNG image")),
        "400_random_bytes": (random, ("not a DICOM file", "400 bytes")),
        "corrupt_jpeg_stream": (
            encapsulated(good, folder / "jpeg_corrupt.dcm", [jpeg[: scan + 20] + noise]),
            ("the pixel data cannot be decoded", "corrupt", "JPEG Baseline"),
        ),
        "bits_allocated_0": (
            dicom_like(good, folder / "bits_0.dcm", BitsAllocated=0),
            ("BitsAllocated (0028,0100) is 0", "not a valid header value"),
        ),
        "no_decoder_for_the_syntax": (
            with_private_syntax(encapsulated(good, folder / "private_syntax.dcm", [jpeg])),
            ("no working decoder", "install a decoder"),
        ),
        "a_dicom_that_is_not_an_image": (
            dicom_like(good, folder / "no_image.dcm", Rows=None, Columns=None, PixelData=None, Modality="SR",
                       SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11"),  # Basic Text SR
            ("has no pixel data (7FE0,0010)", "not an image"),
        ),
    }


WORD_CASES = ["sid_shorter_than_sod", "text_file", "png_file", "400_random_bytes", "corrupt_jpeg_stream",
              "bits_allocated_0", "no_decoder_for_the_syntax", "a_dicom_that_is_not_an_image"]


@pytest.mark.parametrize("case", WORD_CASES)
def test_errors_say_what_is_wrong(case, good_xa, torso_ct, finished, tmp_path, capsys):
    bad, words = _word_cases(good_xa, tmp_path)[case]
    line = assert_refused(register(bad, torso_ct, finished.folder, capsys), bad, finished, *words)
    if case != "no_decoder_for_the_syntax":  # only a missing decoder asks for one
        assert "install" not in line.lower()
    assert "header has no sod" not in line


# ---- truncated files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["preamble", "file_meta", "header", "before_pixel_data", "pixel_data",
                                   "last_byte"])
def test_truncated_dicoms(where, good_xa, torso_ct, finished, tmp_path, capsys):
    data = good_xa.read_bytes()
    pixel_start = data.index(b"\xe0\x7f\x10\x00")  # the PixelData tag, little endian
    cut = {"preamble": 100, "file_meta": 150, "header": pixel_start // 2, "before_pixel_data": pixel_start + 6,
           "pixel_data": pixel_start + 12 + 4000, "last_byte": len(data) - 1}[where]
    bad = tmp_path / f"cut_{where}.dcm"
    bad.write_bytes(data[:cut])
    words = ("not a DICOM file",) if where == "preamble" else ("the file is truncated",)
    assert_refused(register(bad, torso_ct, finished.folder, capsys), bad, finished, *words)


# ---- broken geometry tags --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "words"), [
    ("cr_chest_wg04_RG1.dcm", ("PixelSpacing (0028,0030) is 0.000\\0.000 (not a valid spacing)", "--pixel-spacing")),
    ("cr_hip_wg04_RG2.dcm", ("DistanceSourceToDetector (0018,1110) is absent", "--sdd")),
    ("xa_sc_wg04_XA1.dcm", ("DistanceSourceToDetector (0018,1110) is absent",
                            "ImagerPixelSpacing (0018,1164) is absent", "--pixel-spacing")),
])
def test_shared_radiographs_without_usable_geometry(name, words, shared_data, torso_ct, finished, capsys):
    bad = shared_data.joinpath(*RADIOGRAPHS, name)
    assert_refused(register(bad, torso_ct, finished.folder, capsys), bad, finished, *words)


@pytest.mark.parametrize(("case", "changes", "words"), [
    ("negative_sid", {"DistanceSourceToDetector": "-1000"},
     ("DistanceSourceToDetector (0018,1110) is -1000", "outside 100–5000 mm", "--sdd")),
    ("nan_sid", {"DistanceSourceToDetector": "NaN"}, ("DistanceSourceToDetector (0018,1110) is NaN", "--sdd")),
    ("zero_pixel_spacing", {"ImagerPixelSpacing": None, "PixelSpacing": "0\\0"},
     ("PixelSpacing (0028,0030) is 0\\0 (not a valid spacing)", "--pixel-spacing")),
    ("negative_sod", {"DistanceSourceToPatient": "-650"},
     ("DistanceSourceToPatient (0018,1111) is -650 mm", "cannot be negative", "--sod")),
])
def test_broken_geometry_tags(case, changes, words, good_xa, torso_ct, finished, tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom warns of the invalid values, which are the point
        bad = dicom_like(good_xa, tmp_path / f"{case}.dcm", **changes)
    assert_refused(register(bad, torso_ct, finished.folder, capsys), bad, finished, *words)


def test_non_numeric_spacing(good_xa, torso_ct, finished, tmp_path, capsys):
    """Letters where the header has numbers (pydicom will not write them, so they are put in the bytes)."""
    data = good_xa.read_bytes()
    assert data.count(b"4.8\\4.8 ") == 1  # ImagerPixelSpacing, padded to an even length
    bad = tmp_path / "letters_spacing.dcm"
    bad.write_bytes(data.replace(b"4.8\\4.8 ", b"abc\\def "))
    assert_refused(register(bad, torso_ct, finished.folder, capsys), bad, finished,
                   "ImagerPixelSpacing (0018,1164) is abc\\def", "--pixel-spacing")


# ---- hostile volumes (--volume) -------------------------------------------------------------------------


def _volume_cases(ct: Path, good: Path, folder: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    data = sitk.GetArrayFromImage(sitk.ReadImage(str(ct))).astype(np.float32)[::4, ::4, ::4].copy()
    nan, inf = data.copy(), data.copy()
    nan[2:5, 2:5, 2:5] = np.nan
    inf[3, 3, 3] = np.inf
    raw = ct.read_bytes()
    four_d = sitk.JoinSeries([sitk.GetImageFromArray(data)] * 2)
    sitk.WriteImage(four_d, str(folder / "four_d.nii.gz"))
    text = folder / "notes.nii.gz"
    text.write_text("not an image\n")
    negative_mha = image_file(folder / "negative.mha", data)
    negative_mha.write_bytes(negative_mha.read_bytes().replace(b"ElementSpacing = 3 3 3", b"ElementSpacing = 3 -3 3"))
    (folder / "cut_data.nii.gz").write_bytes(raw[: len(raw) // 2])
    (folder / "cut_header.nii.gz").write_bytes(raw[:100])
    (folder / "notes.txt").write_text("not an image\n")
    return {
        "nan": (image_file(folder / "nan.nii.gz", nan), ("27 NaN voxel values", "must be finite")),
        "inf": (image_file(folder / "inf.mha", inf), ("1 infinite voxel values", "must be finite")),
        "constant": (image_file(folder / "constant.nii.gz", np.full_like(data, -1000.0)),
                     ("every voxel has the value -1000", "empty")),
        "2d": (image_file(folder / "flat.nii.gz", data[5]), ("expected a 3-D volume", "2-D image")),
        "4d": (folder / "four_d.nii.gz", ("expected a 3-D volume", "4-D image")),
        "zero_spacing": (with_nifti_spacing(ct, folder / "zero_spacing.nii.gz", (3.0, 0.0, 3.0)),
                         ("spacing must be positive", "(3, 0, 3)")),
        "negative_spacing": (with_nifti_spacing(ct, folder / "negative_spacing.nii.gz", (3.0, -3.0, 3.0)),
                             ("spacing must be positive", "(3, -3, 3)")),
        "negative_spacing_mha": (negative_mha, ("spacing must be positive", "ElementSpacing")),
        "truncated_data": (folder / "cut_data.nii.gz", ("the file is truncated", "bytes of voxel data")),
        "truncated_header": (folder / "cut_header.nii.gz", ("truncated or not a NIfTI file", "348 bytes")),
        "text_as_nifti": (text, ("not a gzip-compressed NIfTI file", "text file")),
        "unsupported_file": (folder / "notes.txt", ("unsupported file type .txt",)),
        "xray_as_volume": (good, ("projection X-ray image", "not a 3-D volume")),
    }


VOLUME_CASES = ["nan", "inf", "constant", "2d", "4d", "zero_spacing", "negative_spacing", "negative_spacing_mha",
                "truncated_data", "truncated_header", "text_as_nifti", "unsupported_file", "xray_as_volume"]


@pytest.mark.parametrize("case", VOLUME_CASES)
def test_hostile_volumes(case, good_xa, torso_ct, finished, tmp_path, capsys):
    """Another X-ray into the finished folder (the good one is done there, so the volume would not be read)."""
    volume, words = _volume_cases(torso_ct, good_xa, tmp_path)[case]
    other = shutil.copy(good_xa, tmp_path / "other_xa.dcm")
    outcome = register(Path(other), volume, finished.folder, capsys)
    assert_refused(outcome, volume, finished, *words)
    assert not (finished.folder / "other_xa.json").exists()
