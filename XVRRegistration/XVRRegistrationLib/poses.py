"""The X-ray's C-arm pose: set it, let the images follow it, swap its transform node, attach landmarks to it,
and nudge it by hand.
"""

from slicer.i18n import tr as _

from . import nodes

__all__ = ["PoseEditor"]


class PoseEditor:
    """Changes X-ray poses and keeps everything drawn on the detector plane on it. Never touches widgets."""

    pose = staticmethod(nodes.pose)
    poseNode = staticmethod(nodes.poseNode)

    @staticmethod
    def followPose(xrayNode) -> None:
        """Put the X-ray (and its DRR, outlines, checkerboard) on the detector plane of its current pose."""
        from XVRCoreLib.xray_plane import set_detector_pose

        pose = nodes.pose(xrayNode)
        for node in nodes.imageNodes(xrayNode):
            set_detector_pose(node, pose)

    def setPose(self, xrayNode, cameraToWorld) -> None:
        """Set the X-ray's pose (its transform node; a tensor or an array) and move its images with it."""
        from XVRCoreLib.poses import set_pose

        set_pose(nodes.poseNode(xrayNode), cameraToWorld)
        self.followPose(xrayNode)

    @staticmethod
    def poseNodeProblem(xrayNode, transformNode, scene):
        """Why ``transformNode`` cannot become the X-ray's pose, or None: it takes the X-ray's pose (its matrix
        is replaced), so it must be an XVR pose node (``XVR.Role = pose``: one the import made, or a new one
        from the pose selector) and no other X-ray's pose. Any other transform (a CT's parent transform, a
        registration result) would be moved.
        """
        from XVRCoreLib.poses import POSE_ROLE

        name = transformNode.GetName()
        if transformNode.GetAttribute("XVR.Role") != POSE_ROLE:
            return _("{name} is not an X-ray pose: pick this X-ray's pose or create a new one.").format(name=name)
        for other in nodes.xrayNodes(scene):
            if other is not xrayNode and nodes.poseNode(other) is transformNode:
                return _("{name} is the pose of {xray}: pick this X-ray's pose or create a new one.").format(
                    name=name, xray=other.GetName())
        return None

    def usePoseNode(self, xrayNode, transformNode) -> None:
        """Make ``transformNode`` the X-ray's pose (it takes the current pose; the beam models move under it).

        Raises ValueError for a transform that :meth:`poseNodeProblem` refuses.
        """
        from XVRCoreLib.poses import pose_transform_node
        from XVRCoreLib.scene import REFERENCE_ROLES

        problem = self.poseNodeProblem(xrayNode, transformNode, xrayNode.GetScene())
        if problem:
            raise ValueError(problem)

        pose = nodes.pose(xrayNode) if nodes.poseNode(xrayNode) is not None else None
        xrayNode.SetNodeReferenceID(REFERENCE_ROLES["pose"], transformNode.GetID())
        if pose is not None:
            pose_transform_node(xrayNode.GetScene(), pose, node=transformNode)
        for role in ("frustum", "plane"):
            model = xrayNode.GetNodeReference(REFERENCE_ROLES[role])
            if model is not None:
                model.SetAndObserveTransformNodeID(transformNode.GetID())
        self.followPose(xrayNode)

    @staticmethod
    def attachToXray(markupsNode, xrayNode) -> None:
        """Put markups placed on the X-ray under its pose transform, so they stay on the image when it moves.

        Only the points' world positions matter (they are projected with the current pose), so points
        already placed keep their world positions.
        """
        import numpy as np
        from XVRCoreLib.markups import markups_points_world

        poseNode = nodes.poseNode(xrayNode)
        if poseNode is None or markupsNode.GetParentTransformNode() is poseNode:
            return
        points, _ = markups_points_world(markupsNode)
        markupsNode.SetAndObserveTransformNodeID(poseNode.GetID())
        if len(points):
            pose = nodes.pose(xrayNode)
            local = (points - pose[:3, 3]) @ pose[:3, :3]
            for i, p in enumerate(np.asarray(local)):
                markupsNode.SetNthControlPointPosition(i, *p.tolist())

    def nudge(self, xrayNode, rotationDeg=(0.0, 0.0, 0.0), translationMm=(0.0, 0.0, 0.0), volumeNode=None):
        """Turn the pose by ``rotationDeg`` about the volume centre and move it by ``translationMm``.

        Both are in the camera axes (x, y in the image plane, z along the beam), as the registration moves it.
        Returns the new ``camera_to_world`` (an array).
        """
        import numpy as np
        import torch
        from xvrcore.registration import updated_pose

        pose = torch.as_tensor(nodes.pose(xrayNode))
        center = torch.as_tensor(nodes.volumeCenter(volumeNode), dtype=torch.float64)
        rotation = torch.as_tensor(np.radians(np.asarray(rotationDeg, dtype=np.float64)))
        moved = updated_pose(pose, center, rotation, torch.as_tensor(np.asarray(translationMm, dtype=np.float64)))
        self.setPose(xrayNode, moved.numpy())
        xrayNode.SetAttribute("XVR.ManuallyAdjusted", "true")
        return moved.numpy()
