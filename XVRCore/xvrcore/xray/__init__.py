"""Projection images: X-ray/DSA DICOMs read with their C-arm geometry, and realistic synthetic ones.

:func:`read_xray` (:mod:`.reader`) orchestrates the reading; each step lives in the module that
states its rules: :mod:`.tags`, :mod:`.pixels`, :mod:`.geometry`, :mod:`.angles`,
:mod:`.overrides`, :mod:`.masks`, :mod:`.polarity`. :mod:`.synthesis` writes synthetic XA files.
"""

from .overrides import GeometryOverrides
from .reader import XrayImage, read_xray
from .synthesis import SynthesisSettings, synthesize_xray, write_xray_dicom
from .tags import XrayDicomError

__all__ = [
    "GeometryOverrides",
    "SynthesisSettings",
    "XrayDicomError",
    "XrayImage",
    "read_xray",
    "synthesize_xray",
    "write_xray_dicom",
]
