"""The pose arithmetic of the QA controls, in clinical terms (pure: numpy, torch and xvrcore; no Slicer, no Qt).

A move changes an X-ray's ``camera_to_world`` (:mod:`xvrcore.conventions`) by a step, about the
isocentre (the panel passes the CT's centre, the centre :mod:`xvrcore.geometry.carm` uses):

* ``lao`` / ``cranial`` / ``roll``: the C-arm angles of :func:`xvrcore.geometry.carm.carm_parameters`
  with the ``"PA"`` orientation, in which α is the DICOM positioner's primary angle (LAO +, RAO −) and
  β its secondary angle (CRA +, CAU −) (:mod:`xvrcore.geometry.positioner`); γ turns the image about the
  beam. Only that angle changes, by exactly the step (degrees), and the pose is rebuilt with
  :func:`~xvrcore.geometry.carm.carm_pose`: LAO/RAO turns the C-arm about the patient's long axis
  through the isocentre, CRA/CAU about its rotated left–right axis, roll about the beam through it
  (roll + turns the anatomy clockwise in a DICOM X-ray, shown as seen from the detector).
  (At CRA/CAU ±90° the angles are degenerate; the clinical range is far from it.)
* ``panRight`` / ``panDown``: the anatomy at the isocentre moves by the step (mm, in the plane through
  the isocentre parallel to the detector) toward increasing image columns / rows, i.e. right / down
  as the panel shows the X-ray (first row at the top): ``step · |f| / depth`` pixels. The source moves
  in the detector plane, so the depth and the beam direction stay.
* ``magnify``: the source moves toward the isocentre along the beam by the step (mm): the isocentre's
  depth drops by the step and the anatomy looks larger (the detector moves with the source).

A negative step is the opposite move (RAO, caudal, pan left / up, minify).
"""

__all__ = ["QA_MOVES", "isocentreDepth", "qaMovedPose"]

QA_MOVES = ("lao", "cranial", "roll", "panRight", "panDown", "magnify")
_ANGLE_INDEX = {"lao": 0, "cranial": 1, "roll": 2}  # (α, β, γ) of carm_parameters


def qaMovedPose(cameraToWorld, move: str, step: float, isocentre, intrinsics=None):
    """``camera_to_world`` ``(4, 4)`` (float64 array) after ``move`` by ``step`` about ``isocentre`` ``(3,)``.

    ``intrinsics`` (:class:`xvrcore.geometry.camera.Intrinsics`) is needed for the pans: the sign of the
    focal lengths says which way the image columns run.
    """
    import numpy as np

    pose = np.asarray(cameraToWorld, dtype=np.float64).reshape(4, 4)
    if move in _ANGLE_INDEX:
        return _turned(pose, _ANGLE_INDEX[move], float(step), np.asarray(isocentre, dtype=np.float64))
    if move in ("panRight", "panDown"):
        if intrinsics is None:
            raise ValueError("a pan needs the X-ray's intrinsics")
        sign = np.sign(intrinsics.fx) if move == "panRight" else np.sign(intrinsics.fy)
        axis = 0 if move == "panRight" else 1
        return _shifted(pose, axis, -sign * float(step))  # the camera moves opposite to the image content
    if move == "magnify":
        return _shifted(pose, 2, float(step))
    raise ValueError(f"unknown QA move {move!r} (one of {', '.join(QA_MOVES)})")


def _turned(pose, index: int, degrees: float, isocentre):
    import torch
    from xvrcore.geometry.carm import carm_parameters, carm_pose

    iso = torch.as_tensor(isocentre, dtype=torch.float64)
    params = carm_parameters(torch.as_tensor(pose), "PA", iso)
    params[index] += degrees
    return carm_pose(params, "PA", iso).numpy()


def _shifted(pose, axis: int, millimetres: float):
    """The source moved by ``millimetres`` along its own camera axis ``axis`` (the rotation unchanged)."""
    moved = pose.copy()
    moved[:3, 3] += millimetres * pose[:3, axis]
    return moved


def isocentreDepth(cameraToWorld, isocentre) -> float:
    """The isocentre's depth (mm along the beam from the source): what ``magnify`` changes."""
    import numpy as np

    pose = np.asarray(cameraToWorld, dtype=np.float64).reshape(4, 4)
    return float(pose[:3, 2] @ (np.asarray(isocentre, dtype=np.float64) - pose[:3, 3]))
