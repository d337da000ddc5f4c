"""Projection images: X-ray/DSA DICOMs read with their C-arm geometry, and realistic synthetic ones."""

from .reader import GeometryOverrides, XrayDicomError, XrayImage, read_xray
from .synthesis import SynthesisSettings, synthesize_xray, write_xray_dicom

__all__ = [
    "GeometryOverrides",
    "SynthesisSettings",
    "XrayDicomError",
    "XrayImage",
    "read_xray",
    "synthesize_xray",
    "write_xray_dicom",
]
