"""Reviewing an X-ray's pose: the QA moves (:mod:`.qa_poses`) applied to its node, an undo stack of poses per
X-ray, and the way back to the registered pose. Never touches widgets.

Both are kept on the X-ray node, so they are saved with the scene: ``XVR.PoseUndo`` (JSON list of the
pose transform's TransformToParent matrices, oldest first, at most :data:`UNDO_DEPTH`) and
``XVR.RegisteredPose`` (the matrix the last registration result set). A move, "back to the registered
pose" and a result arriving push the pose they replace; undo pops it back, bit for bit (JSON keeps
every float's digits). Edits outside the panel (Transforms module, 3D handles) are not on the stack.
"""

import json

from . import nodes
from .qa_poses import qaMovedPose

__all__ = ["UNDO_DEPTH", "PoseReview"]

UNDO_DEPTH = 50
UNDO_ATTRIBUTE = "XVR.PoseUndo"
REGISTERED_ATTRIBUTE = "XVR.RegisteredPose"


def _matrix(xrayNode):
    """The pose transform's TransformToParent (what ``set_pose`` writes), as a float64 ``(4, 4)`` array."""
    from XVRCoreLib.poses import pose_from_transform_node

    return pose_from_transform_node(nodes.poseNode(xrayNode), world=False)


def _encode(matrix) -> list:
    return [float(v) for v in matrix.reshape(-1)]


def _decode(values):
    import numpy as np

    return np.asarray(values, dtype=np.float64).reshape(4, 4)


class PoseReview:
    """QA moves, undo and "back to the registered pose" of X-ray poses (through the :class:`PoseEditor`)."""

    def __init__(self, poses) -> None:
        self.poses = poses  # the PoseEditor that moves the X-ray and its images

    # -- the moves ----------------------------------------------------------------------------------------------

    def move(self, xrayNode, move: str, step: float, volumeNode=None):
        """Move the X-ray's pose (``qa_poses.qaMovedPose``) about the CT's centre; returns the new pose."""
        from XVRCoreLib.xray_plane import xray_intrinsics

        isocentre = nodes.volumeCenter(volumeNode)
        moved = qaMovedPose(nodes.pose(xrayNode), move, step, isocentre, xray_intrinsics(xrayNode))
        self.pushUndo(xrayNode)
        self.poses.setPose(xrayNode, moved)
        xrayNode.SetAttribute("XVR.ManuallyAdjusted", "true")
        return moved

    # -- undo ---------------------------------------------------------------------------------------------------

    @staticmethod
    def _stack(xrayNode) -> list:
        return json.loads(xrayNode.GetAttribute(UNDO_ATTRIBUTE) or "[]")

    def pushUndo(self, xrayNode) -> None:
        """Remember the X-ray's current pose (nothing if it has no pose yet)."""
        if nodes.poseNode(xrayNode) is None:
            return
        stack = (self._stack(xrayNode) + [_encode(_matrix(xrayNode))])[-UNDO_DEPTH:]
        xrayNode.SetAttribute(UNDO_ATTRIBUTE, json.dumps(stack))

    def canUndo(self, xrayNode) -> bool:
        return xrayNode is not None and bool(self._stack(xrayNode))

    def undo(self, xrayNode) -> bool:
        """Put back the pose before the last move, result or return; False if there is none."""
        stack = self._stack(xrayNode)
        if not stack:
            return False
        self.poses.setPose(xrayNode, _decode(stack.pop()))
        xrayNode.SetAttribute(UNDO_ATTRIBUTE, json.dumps(stack))
        return True

    # -- the registered pose ------------------------------------------------------------------------------------

    @staticmethod
    def recordRegistered(xrayNode) -> None:
        """Remember the pose a registration result just set (called when the result is applied)."""
        xrayNode.SetAttribute(REGISTERED_ATTRIBUTE, json.dumps(_encode(_matrix(xrayNode))))

    @staticmethod
    def registeredPose(xrayNode):
        """The pose the last result set (TransformToParent), or None."""
        text = xrayNode.GetAttribute(REGISTERED_ATTRIBUTE) if xrayNode is not None else None
        return _decode(json.loads(text)) if text else None

    def backToRegistered(self, xrayNode) -> bool:
        """Put the registered pose back (undoable); False if the X-ray has no result."""
        registered = self.registeredPose(xrayNode)
        if registered is None:
            return False
        self.pushUndo(xrayNode)
        self.poses.setPose(xrayNode, registered)
        xrayNode.RemoveAttribute("XVR.ManuallyAdjusted")
        return True
