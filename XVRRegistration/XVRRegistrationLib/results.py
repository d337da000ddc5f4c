"""Registration results: a result JSON applied to its X-ray (pose, quality, overlays), the quality table,
and the pose exported as Slicer saves transforms, with the result JSON beside it.
"""

import json
import pathlib

from slicer.i18n import tr as _

from . import nodes
from .batch_rows import FAILURE_ATTRIBUTE
from .pose_review import PoseReview

__all__ = ["Results"]


class Results:
    """Reads results into the scene and writes the current poses out. Never touches widgets."""

    def __init__(self, poses, overlays, review=None) -> None:
        self.poses = poses  # the PoseEditor that moves the X-ray and its images
        self.overlays = overlays  # the Overlays that render the DRR and outlines at the new pose
        self.review = review or PoseReview(poses)  # the undo stack and the registered pose

    def applyResult(self, xrayNode, resultJson, volumeNode=None, segmentationNode=None):
        """Load a result JSON of ``xvrcore register``: the pose (the one it replaces can be undone; "back to
        the registered pose" returns to it), the quality (a failure recorded before is cleared), the overlays."""
        from xvrcore.io.pose_json import read_pose_json

        result = read_pose_json(resultJson)
        self.review.pushUndo(xrayNode)
        self.poses.setPose(xrayNode, result.camera_to_world)
        self.review.recordRegistered(xrayNode)
        xrayNode.RemoveAttribute(FAILURE_ATTRIBUTE)
        quality = result.extra.get("quality", {})
        similarity = result.extra.get("similarity", {})
        xrayNode.SetAttribute("XVR.Result", str(pathlib.Path(resultJson).resolve()))
        xrayNode.SetAttribute("XVR.Quality", json.dumps({
            "similarity": float(similarity.get("final", quality.get("similarity", float("nan")))),
            "p_submillimetre": float(quality.get("p_submillimetre", float("nan"))),
            "passed": bool(quality.get("passed", False)),
        }))
        xrayNode.RemoveAttribute("XVR.ManuallyAdjusted")
        if volumeNode is not None:
            self.overlays.updateOverlays(xrayNode, volumeNode, segmentationNode)
        return result

    @staticmethod
    def qualityRows(scene) -> list:
        """The quality of every registered X-ray: name, similarity, P(<1 mm), pass flag."""
        rows = []
        for node in nodes.xrayNodes(scene):
            quality = node.GetAttribute("XVR.Quality")
            if quality:
                rows.append({"id": node.GetID(), "name": node.GetName(), **json.loads(quality)})
        return rows

    @staticmethod
    def exportPose(xrayNode, directory):
        """Save the pose transform as Slicer saves transforms (``<name>.h5``) and the result JSON beside it.

        The transform node's TransformToParent maps the camera frame to the CT's RAS frame; the JSON is
        the shared result format (``xvrcore.io.pose_json``) of the current pose, with the registration's record.
        """
        from xvrcore.io.pose_json import camera_pose, write_pose_json
        from XVRCoreLib.poses import save_transform_node
        from XVRCoreLib.xray_plane import xray_intrinsics

        if str(directory) in ("", "."):
            raise ValueError(_("Select an output directory for the results."))
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in xrayNode.GetName())
        transformPath = save_transform_node(nodes.poseNode(xrayNode), directory / f"{name}_pose.h5")
        extra = _resultRecord(xrayNode)
        extra["slicer_export"] = {"transform_file": transformPath.name,
                                  "transform_direction": "TransformToParent = camera to world (RAS, mm)",
                                  "manually_adjusted": xrayNode.GetAttribute("XVR.ManuallyAdjusted") == "true"}
        jsonPath = write_pose_json(directory / f"{name}_pose.json",
                                   camera_pose(xray_intrinsics(xrayNode), nodes.pose(xrayNode), **extra))
        return transformPath, jsonPath


def _resultRecord(xrayNode) -> dict:
    """What the X-ray's last result JSON recorded besides the pose (empty if there is none or it is unreadable)."""
    from xvrcore.io.pose_json import PoseFileError, read_pose_json

    result = xrayNode.GetAttribute("XVR.Result")
    if not result:
        return {}
    try:
        return read_pose_json(result).extra
    except PoseFileError:
        return {}
