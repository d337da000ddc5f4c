"""The conventions every part of SlicerXVR shares, stated once; every other module links here.

**World.** The CT's (or MRA's) physical **RAS** frame in millimetres, as 3D Slicer shows it: +x toward
the patient's **R**ight, +y **A**nterior, +z **S**uperior. DICOM and ITK use LPS (+x Left, +y Posterior,
+z Superior); a point converts as ``RAS = diag(−1, −1, 1) · LPS`` (:data:`LPS_TO_RAS`, its own inverse).
Voxel index ``(i, j, k)`` maps to RAS by a 4×4 affine, index ``(0, 0, 0)`` at the centre of the first
voxel (:class:`xvrcore.volume.Volume`).

**Camera.** Origin at the X-ray source, **+z along the principal ray toward the detector**, **+y along
increasing image row**, **+x along increasing image column** of the pinhole (source-side) view,
millimetres. In memory the camera frame is always right-handed (+x = y × z), so a pose is a proper
rigid transform (det +1) that can be optimised and interpolated; a detector-side view's columns run
along −x (below).

**Pose.** One type from the DICOM reader to the JSON writer: a ``torch.float64`` tensor ``(..., 4, 4)``,
the **camera-to-world** transform ``[R | s]`` (columns of ``R`` = the camera axes in the world, ``s`` =
the source position); ``world_to_camera`` is its inverse ``[Rᵀ | −Rᵀ s]``. See
:mod:`xvrcore.geometry.pose`.

**Intrinsics.** ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels of the image's own grid, the
first pixel's **centre** at ``(0, 0)`` (column ``u``, row ``v``); a world point ``X`` projects to
``(u, v) ~ K (R X + t)`` with ``[R | t]`` = world-to-camera (:class:`xvrcore.geometry.Intrinsics`).
For a flat-panel detector ``fx = SDD / column spacing``, ``fy = SDD / row spacing``.

**Mirrored (detector-side) views.** DICOM X-ray images are displayed as seen *from the detector looking
toward the source* — the mirror image of what a pinhole camera at the source sees. Such an image's
columns increase along **−x** of the right-handed camera frame, which the intrinsics express with a
**negative** ``fx`` (``Intrinsics.mirrored``); ``Detector(mirrored=True)`` (every DICOM X-ray) gives
these intrinsics. The pose stays proper either way.

**Result JSON** (:mod:`xvrcore.io.pose_json`). The keys other tools read and write are exactly
:data:`RESULT_KEYS`: ``intrinsics`` (3×3), ``world_to_camera`` (4×4) and ``projection`` (3×4 =
``K [R | t]``, **authoritative**). Everything else in the file is optional, and a reader accepts a file
that has only these three. The file also says its ``handedness``:

* ``"left"`` — ``world_to_camera`` is a reflection (det −1) and ``K`` has positive focal lengths; this is
  how a mirrored (DICOM) view is written by default, and what tools that assume ``fx > 0`` expect;
* ``"right"`` — ``world_to_camera`` is a proper rotation; a mirrored view then has ``K[0, 0] < 0``.

Both give the same ``projection``. ``image_size`` is ``[width, height]``; ``world_frame`` is ``"RAS"``
and ``units`` ``"mm"``.

**Slicer transform node.** A pose exported for 3D Slicer (an ITK ``.tfm``/``.h5`` file,
:mod:`xvrcore.io.itk_transform`) loads as a linear transform node whose **TransformToParent maps
camera → world (RAS)**; a model drawn in camera coordinates (the source at the origin, the detector
along +z) under that node appears where the C-arm was.

**The paper's C-arm parameters** ``(α, β, γ, x, y, z)`` and DiffDRR/xvr pose matrices convert in
:mod:`xvrcore.geometry.carm`; DICOM positioner angles (LAO/RAO, CRA/CAU) in
:mod:`xvrcore.geometry.positioner`.
"""

from __future__ import annotations

__all__ = ["LPS_TO_RAS", "RESULT_KEYS", "UNITS", "WORLD_FRAME"]

#: Diagonal of the matrix taking LPS (DICOM, ITK) coordinates to RAS (Slicer, xvrcore); its own inverse.
LPS_TO_RAS = (-1.0, -1.0, 1.0)
#: The keys of the shared result JSON that every reader and writer agrees on.
RESULT_KEYS = ("intrinsics", "world_to_camera", "projection")
WORLD_FRAME = "RAS"
UNITS = "mm"
