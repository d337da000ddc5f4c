"""One preprocessing for the network: a training image and an X-ray file of it give the same network input."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from xvrcore.drr import DRRVolume
from xvrcore.geometry.camera import Detector
from xvrcore.geometry.carm import carm_pose
from xvrcore.learning.augment import AugmentSettings, augment_detector, exposure_masks
from xvrcore.learning.network import InputSpec
from xvrcore.learning.preprocess import network_input, training_input, xray_input
from xvrcore.learning.sampling import PRESETS
from xvrcore.volume import load_volume
from xvrcore.volume.attenuation import to_attenuation
from xvrcore.xray import read_xray
from xvrcore.xray.synthesis import SynthesisSettings, synthesize_xray, write_xray_dicom

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PELVIS = PRESETS["pelvis"]
SPEC = InputSpec()
# No augmentation at all: what training makes of an image is then its bare preprocessing.
NONE = AugmentSettings(p=0.0)


@pytest.fixture(scope="module")
def written(shared_data: Path, tmp_path_factory):
    """A realistic synthetic XA at the canonical camera (64 px), with its shutter, and the file's folder."""
    ct = load_volume(shared_data / "open" / "ct" / "torso_totalseg" / "torso_ct_3mm.nii.gz")
    volume = DRRVolume.from_volume(to_attenuation(ct))
    rng = np.random.default_rng(4)
    iso = torch.as_tensor(ct.center, dtype=torch.float64)
    pose = carm_pose(torch.tensor([10.0, 5.0, 0.0, 0.0, -750.0, 0.0], dtype=torch.float64), "PA", iso)
    det = Detector(PELVIS.sdd, 64, 64, PELVIS.pixel_spacing(64), PELVIS.pixel_spacing(64), mirrored=True)
    xray = synthesize_xray(volume, pose, det, SynthesisSettings(collimation=0.15, subpixel=1), rng)
    folder = tmp_path_factory.mktemp("preprocess")
    path = write_xray_dicom(folder / "xa.dcm", xray, det, pose, iso)
    return path, det.intrinsics()


def _variant(path: Path, kind: str) -> Path:
    """The same exposure as MONOCHROME1 (inverted stored values) or behind a circular shutter."""
    ds = pydicom.dcmread(path)
    if kind == "monochrome1":
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.PixelData = (4095 - ds.pixel_array.astype(np.int32)).astype("<u2").tobytes()
        ds.PixelIntensityRelationshipSign = -1  # now lower values = more beam intensity
    elif kind == "circular":
        ds.ShutterShape = "CIRCULAR"
        ds.CenterOfCircularShutter = [32, 30]  # row\column, 1-based
        ds.RadiusOfCircularShutter = 24
    out = path.with_name(f"xa_{kind}.dcm")
    ds.save_as(out)
    return out


@pytest.mark.parametrize("kind", ["rectangular", "monochrome1", "circular"])
def test_training_and_inference_preprocessing_of_one_xray_are_identical(written, kind):
    path, canonical = written
    xray = read_xray(path if kind == "rectangular" else _variant(path, kind))
    assert (~xray.mask).sum() > 50  # a real collimated field: the masking is exercised
    assert xray.intrinsics.width == canonical.width and abs(xray.intrinsics.fx - canonical.fx) < 1e-6
    pixels = torch.as_tensor(xray.pixels)[None, None]
    mask = torch.as_tensor(xray.mask)[None, None]
    trained = training_input(pixels, torch.Generator().manual_seed(0), NONE, SPEC, mask=mask)
    inferred = xray_input(xray.pixels, xray.mask, xray.intrinsics, canonical, SPEC)
    assert trained.shape == inferred.shape == (1, 1, 64, 64)
    assert torch.allclose(trained, inferred, atol=1e-5)
    outside = inferred[~mask]
    assert torch.all(outside == (0 - SPEC.mean) / SPEC.std)  # 0 after scaling, exactly
    inside = inferred[mask]
    assert float(inside.min()) == pytest.approx(-SPEC.mean / SPEC.std, abs=1e-4)
    assert float(inside.max()) == pytest.approx((1 - SPEC.mean) / SPEC.std, abs=0.01)  # minmax eps


def test_monochrome1_file_gives_the_network_the_same_polarity_as_monochrome2(written):
    path, canonical = written
    a, b = read_xray(path), read_xray(_variant(path, "monochrome1"))
    ia = xray_input(a.pixels, a.mask, a.intrinsics, canonical, SPEC)[0, 0][torch.as_tensor(a.mask)]
    ib = xray_input(b.pixels, b.mask, b.intrinsics, canonical, SPEC)[0, 0][torch.as_tensor(a.mask)]
    # Inverted stored counts are not the same log image, but dense must stay high: strongly positive correlation.
    assert float(torch.corrcoef(torch.stack([ia, ib]))[0, 1]) > 0.9


def test_mask_augmentation_blanks_exactly_the_masked_pixels_as_inference_does():
    torch.manual_seed(0)
    images = 2 + torch.rand(6, 1, 48, 48)
    only_masks = AugmentSettings(p=1.0, equalize=False, gamma=(1, 1), blur_sigma=(0, 0), noise_std=(0, 0),
                                 sharpen=(0, 0), erase_area=(0, 0), collimate_max=0.0, gain=(0, 0), scatter=(0, 0),
                                 detector_blur=(0, 0), photons=(1e12, 1e12), coarsen=(1, 1))
    gen = torch.Generator().manual_seed(9)
    augment_detector(images, gen, only_masks)  # the same draws as training_input makes before the mask
    masks = exposure_masks(gen, 6, 48, 48, only_masks)
    assert all(0 < int(m.sum()) < 48 * 48 for m in masks)  # every image is collimated
    trained = training_input(images, torch.Generator().manual_seed(9), only_masks, SPEC)
    as_inference = network_input(images, masks, SPEC)
    assert torch.allclose(trained, as_inference, atol=1e-4)
    assert torch.all(trained[~masks] == -SPEC.mean / SPEC.std)
    assert torch.all(trained[masks] >= -SPEC.mean / SPEC.std - 1e-4)
