"""Importing X-rays: DICOM files (or Slicer's DICOM database) read with their C-arm geometry and shown on
their detector plane, with the beam and the textured plane in 3D.
"""

import pathlib

import slicer

from . import nodes

__all__ = ["XRAY_MODALITIES", "XrayImporter", "dicomDatabaseXraySeries", "frameValue", "geometryOverrides"]

XRAY_MODALITIES = ("XA", "RF", "DX", "CR", "RG", "MG", "OT")


def geometryOverrides(pixelSpacing=0.0, sourceDetectorDistance=0.0, sourceIsocenterDistance=0.0, angles=None) -> dict:
    """Geometry overrides (a JSON-able dict; zero/None = use the header's value)."""
    out = {}
    if pixelSpacing:
        out["pixel_spacing"] = float(pixelSpacing)
    if sourceDetectorDistance:
        out["sdd"] = float(sourceDetectorDistance)
    if sourceIsocenterDistance:
        out["sod"] = float(sourceIsocenterDistance)
    if angles is not None:
        out["primary_angle"], out["secondary_angle"] = float(angles[0]), float(angles[1])
    return out


def frameValue(frame):
    """The reader's frame choice of the panel's text: None, ``max``/``min``/``mean`` or a frame number."""
    text = str(frame if frame is not None else "").strip().lower()
    if text in ("", "none"):
        return None
    if text in ("max", "min", "mean"):
        return text
    return int(text)


def dicomDatabaseXraySeries(database=None) -> list:
    """X-ray series (XA, RF, DX, CR, …) in Slicer's DICOM database: label, series UID and files."""
    database = database or slicer.dicomDatabase
    rows = []
    for patient in database.patients():
        for study in database.studiesForPatient(patient):
            for series in database.seriesForStudy(study):
                files = list(database.filesForSeries(series))
                if not files:
                    continue
                modality = (database.fileValue(files[0], "0008,0060") or "").strip().upper()
                if modality not in XRAY_MODALITIES:
                    continue
                description = database.fileValue(files[0], "0008,103E") or ""
                rows.append({"label": f"{modality} {description} ({len(files)} file(s))".strip(),
                             "series": series, "files": files, "modality": modality})
    return rows


def _selfContained(xray) -> dict:
    """What the X-ray node keeps of the file, so that the scene needs it no more: the exposure mask and the
    header's C-arm angles and distances (the pixels are the volume's, the intrinsics the node's geometry).
    """
    from XVRCoreLib.xray_plane import encode_mask

    return {"Mask": encode_mask(xray.mask), "Positioner": {
        "primary_angle": xray.primary_angle, "secondary_angle": xray.secondary_angle, "sod": xray.sod,
        "patient_position": xray.patient_position}}


class XrayImporter:
    """Reads X-ray DICOMs into X-ray nodes that hold all of it (pixels, geometry, mask, C-arm angles), so
    that the overlays and the registration of a saved scene need no DICOM file. Never touches widgets.
    """

    isXray = staticmethod(nodes.isXray)
    upgradeScene = staticmethod(nodes.upgradeScene)
    xrayNodes = staticmethod(nodes.xrayNodes)
    warnings = staticmethod(nodes.warnings)
    dicomDatabaseXraySeries = staticmethod(dicomDatabaseXraySeries)
    geometryOverrides = staticmethod(geometryOverrides)

    @staticmethod
    def readXray(path, frame=None, maskFrame=None, overrides=None):
        """The X-ray with its C-arm geometry (:func:`xvrcore.xray.reader.read_xray`)."""
        from xvrcore.xray import GeometryOverrides, read_xray

        mask = None if maskFrame is None or int(maskFrame) < 0 else int(maskFrame)
        return read_xray(path, frame=frameValue(frame), mask_frame=mask, overrides=GeometryOverrides(**(overrides or {})))

    @staticmethod
    def headerPose(xray, volumeNode=None):
        """The nominal C-arm pose of the DICOM header about the volume centre (a frontal view if it has no angles)."""
        import numpy as np
        import torch
        from xvrcore.geometry.positioner import pose_from_positioner, pose_from_xray

        center = torch.as_tensor(nodes.volumeCenter(volumeNode), dtype=torch.float64)
        if xray.primary_angle is not None and xray.sod is not None:
            return pose_from_xray(xray, center).numpy()
        sod = xray.sod or 0.7 * xray.detector.sdd
        return pose_from_positioner(xray.primary_angle or 0.0, xray.secondary_angle or 0.0, sod, center).numpy().astype(np.float64)

    def importXray(self, path, scene, volumeNode=None, frame="max", maskFrame=-1, overrides=None, name=None):
        """Read an X-ray DICOM with its geometry and show it on its detector plane at the header's pose.

        Creates the X-ray node, its pose transform node (TransformToParent = camera → world), the C-arm
        frustum and the textured detector plane (both in camera coordinates under the pose node).
        """
        from XVRCoreLib.poses import pose_transform_node
        from XVRCoreLib.scene import REFERENCE_ROLES
        from XVRCoreLib.xray_plane import (
            display_window,
            frustum_model_node,
            xray_plane_model_node,
            xray_volume_node,
        )

        path = pathlib.Path(path)
        xray = self.readXray(path, frame, maskFrame, overrides)
        pose = self.headerPose(xray, volumeNode)
        name = name or path.stem
        intrinsics, depth = xray.intrinsics, xray.detector.sdd
        node = xray_volume_node(scene, xray.pixels, pose, intrinsics, depth, name=name, mask=xray.mask, attributes={
            "Role": "xray", "Source": str(path.resolve()), "Frame": str(frame if frame is not None else ""),
            "MaskFrame": int(maskFrame if maskFrame is not None else -1), "Overrides": overrides or {},
            "Modality": xray.modality, "Warnings": list(xray.warnings), "FrameInfo": xray.frame_info,
            **_selfContained(xray)})
        nodes.setColormap(node, xray.modality)
        poseNode = pose_transform_node(scene, pose, name=f"{name} pose")
        frustum = frustum_model_node(scene, intrinsics, depth, poseNode, name=f"{name} beam")
        plane = xray_plane_model_node(scene, xray.pixels, intrinsics, depth, poseNode, name=f"{name} plane",
                                      window=display_window(node), invert=nodes.displayInverted(xray.modality))
        node.SetNodeReferenceID(REFERENCE_ROLES["pose"], poseNode.GetID())
        node.SetNodeReferenceID(REFERENCE_ROLES["frustum"], frustum.GetID())
        node.SetNodeReferenceID(REFERENCE_ROLES["plane"], plane.GetID())
        return node

    def importXrays(self, paths, scene, volumeNode=None, **kwargs):
        """Import several files; one bad file is reported and the others go on. Returns (nodes, errors)."""
        imported, errors = [], []
        for path in paths:
            try:
                imported.append(self.importXray(path, scene, volumeNode, **kwargs))
            except (ValueError, OSError) as exc:
                errors.append(str(exc))
        return imported, errors

    def reloadXray(self, xrayNode, frame="max", maskFrame=-1, overrides=None):
        """Read the X-ray again with another frame choice or other geometry overrides (same pose).

        The one thing that needs the X-ray's DICOM file (``XVR.Source``) after the import.
        """
        from XVRCoreLib.scene import REFERENCE_ROLES
        from XVRCoreLib.xray_plane import (
            display_window,
            frustum_model_node,
            xray_plane_model_node,
            xray_volume_node,
        )

        xray = self.readXray(xrayNode.GetAttribute("XVR.Source"), frame, maskFrame, overrides)
        scene = xrayNode.GetScene()
        xray_volume_node(scene, xray.pixels, nodes.pose(xrayNode), xray.intrinsics, xray.detector.sdd, node=xrayNode,
                         mask=xray.mask, attributes={"Frame": str(frame), "MaskFrame": int(maskFrame),
                                                     "Overrides": overrides or {}, "Warnings": list(xray.warnings),
                                                     "FrameInfo": xray.frame_info, **_selfContained(xray)})
        frustum = xrayNode.GetNodeReference(REFERENCE_ROLES["frustum"])
        if frustum is not None:
            frustum_model_node(scene, xray.intrinsics, xray.detector.sdd, node=frustum)
        plane = xrayNode.GetNodeReference(REFERENCE_ROLES["plane"])
        if plane is not None:
            xray_plane_model_node(scene, xray.pixels, xray.intrinsics, xray.detector.sdd, node=plane,
                                  window=display_window(xrayNode), invert=nodes.displayInverted(xray.modality))
        return xrayNode

    def restorePlaneTextures(self, scene) -> int:
        """Re-attach the image to each X-ray's 3D detector plane after a scene load; returns how many.

        A model's texture is a display pipeline connection, which scenes do not save; the X-ray
        volume itself is saved, so its pixels (no DICOM file needed) give the texture back.
        """
        from XVRCoreLib.scene import REFERENCE_ROLES
        from XVRCoreLib.xray_plane import display_window, xray_depth, xray_intrinsics, xray_plane_model_node

        restored = 0
        for node in self.xrayNodes(scene):
            plane = node.GetNodeReference(REFERENCE_ROLES["plane"])
            display = plane.GetDisplayNode() if plane is not None else None
            if display is None or display.GetTextureImageDataConnection() is not None or node.GetImageData() is None:
                continue
            image = slicer.util.arrayFromVolume(node)[0]
            xray_plane_model_node(scene, image, xray_intrinsics(node), xray_depth(node), node=plane,
                                  window=display_window(node), invert=nodes.displayInverted(node.GetAttribute("XVR.Modality")))
            restored += 1
        return restored

    @staticmethod
    def xray(xrayNode):
        """The X-ray as its node holds it (pixels, mask, intrinsics, detector, modality): no file is read."""
        return nodes.xrayFromNode(xrayNode)
