"""An X-ray node written back as a DICOM file, so that a saved scene registers without its original DICOM.

``xvrcore register`` reads X-ray DICOMs. A scene's X-ray node holds everything the registration needs
(:mod:`XVRCoreLib.xray_plane`): the line-integral pixels (the volume), the intrinsics and the source–detector
distance, the exposure mask, and the header's C-arm angles and source–isocentre distance (``XVR.Positioner``,
kept at import). :func:`write_xray_node_dicom` writes them in the tags :func:`xvrcore.xray.read_xray` reads
first, so that the file reads back with the node's geometry and mask (checked by the tests):

* pixels: 16-bit stored values with ``RescaleSlope``/``RescaleIntercept`` giving the node's values back,
  ``PixelIntensityRelationship`` LOG with sign −1 (dense = high, already line integrals: nothing is
  re-converted but an offset);
* mask: unexposed pixels hold ``PixelPaddingValue`` (0; exposed ones are 1…65535), any shape exactly
  (but for a plain disk, which the reader takes for a blanked round field and trims by 1.5 pixels);
* geometry: ``ImagerPixelSpacing``, ``DistanceSourceToDetector``, a principal point off the image centre
  through the detector's active area and field of view; ``DistanceSourceToIsocenter``, the positioner
  angles and ``PatientPosition`` as the import read them (absent stays absent).

The frame choice, the DSA mask frame and the geometry overrides are already in the node's pixels and
geometry: the file is registered without them. Nothing that identifies the patient is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .scene import attribute
from .xray_plane import xray_detector, xray_mask

__all__ = ["SOP_CLASSES", "write_xray_node_dicom"]

#: SOP class of the file per modality (XA for any other projection modality).
SOP_CLASSES = {
    "XA": "1.2.840.10008.5.1.4.1.1.12.1",
    "RF": "1.2.840.10008.5.1.4.1.1.12.2",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
}
_PADDING = 0  # stored value of unexposed pixels; exposed pixels are stored in 1 … 65535
_TOP = 65535


def _stored_pixels(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float, float]:
    """16-bit stored values of the exposed pixels (unexposed: the padding value), slope and intercept."""
    exposed = values[mask]
    low, high = (float(exposed.min()), float(exposed.max())) if exposed.size else (0.0, 1.0)
    slope = (high - low) / (_TOP - 1) if high > low else 1.0
    stored = np.clip(np.round((values - low) / slope) + 1, 1, _TOP)
    stored = np.where(mask, stored, _PADDING).astype(np.uint16)
    return stored, slope, low - slope


def _geometry_tags(ds, detector) -> None:
    """Spacing, SDD and, off the image centre, the principal point (as :mod:`xvrcore.xray.geometry` reads it)."""
    ds.ImagerPixelSpacing = [float(detector.row_spacing), float(detector.col_spacing)]
    ds.DistanceSourceToDetector = float(detector.sdd)
    dc, dr = detector.principal_offset
    if abs(dc) > 1e-9 or abs(dr) > 1e-9:
        height, width = detector.field_of_view
        ds.DetectorElementSpacing = [float(detector.row_spacing), float(detector.col_spacing)]
        ds.FieldOfViewOrigin = [0.0, 0.0]
        ds.FieldOfViewDimensions = [float(height), float(width)]
        ds.DetectorActiveOrigin = [float(dr), float(dc)]  # active centre − field centre = the offset
        ds.DetectorActiveDimensions = [float(height), float(width)]


def _positioner_tags(ds, positioner: dict) -> None:
    if positioner.get("sod") is not None:
        ds.DistanceSourceToIsocenter = float(positioner["sod"])
    if positioner.get("primary_angle") is not None and positioner.get("secondary_angle") is not None:
        ds.PositionerPrimaryAngle = float(positioner["primary_angle"])
        ds.PositionerSecondaryAngle = float(positioner["secondary_angle"])
    if positioner.get("patient_position"):
        ds.PatientPosition = str(positioner["patient_position"])


def _dataset(modality: str, sop_instance_uid: str | None):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    sop_class = SOP_CLASSES.get(modality, SOP_CLASSES["XA"])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = modality
    ds.PatientName, ds.PatientID = "", ""
    ds.ImageType = ["DERIVED", "SECONDARY"]
    return ds


def write_xray_node_dicom(node, path: str | Path, sop_instance_uid: str | None = None) -> Path:
    """Write the X-ray node as a single-frame DICOM that ``xvrcore register`` reads with the node's geometry.

    ``sop_instance_uid``: the file's SOP Instance UID (a new one if None). Raises ValueError for a node
    that is not an XVR X-ray (no geometry attributes) or has no pixels.
    """
    from xvrcore.io.atomic import atomic_write

    from XVRCoreLib.vtkdata import array_from_image_data

    if node.GetImageData() is None:
        raise ValueError(f"{node.GetName()}: the X-ray node has no pixels")
    detector, mask = xray_detector(node), xray_mask(node)
    if not detector.mirrored:
        raise ValueError(f"{node.GetName()}: only detector-side (DICOM) X-ray images can be written")
    values = array_from_image_data(node.GetImageData())[0].astype(np.float64)
    stored, slope, intercept = _stored_pixels(values, mask)
    modality = str(attribute(node, "Modality") or "XA").upper()
    ds = _dataset(modality, sop_instance_uid)
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:.10g}"
    ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LOG", -1
    ds.PixelPaddingValue = _PADDING
    _geometry_tags(ds, detector)
    _positioner_tags(ds, attribute(node, "Positioner") or {})
    ds.PixelData = np.ascontiguousarray(stored).astype("<u2").tobytes()
    return atomic_write(Path(path), lambda tmp: ds.save_as(tmp, enforce_file_format=True))
