"""xvrcore: the Slicer-free core of SlicerXVR.

Geometry, volumes, a differentiable DRR renderer and metrics for registering intraoperative
X-ray images to a preoperative CT/MRA. Nothing here imports Slicer or Qt.

Conventions (shared by every module; see ``geometry.py`` for the details):

* World frame: the volume's physical RAS frame in millimetres (DICOM LPS converted to RAS).
* Camera frame: origin at the X-ray source, +z along the principal ray toward the detector,
  +y along increasing image row. Intrinsics are in pixels of the image grid and the first
  pixel's centre is (0, 0).
"""

__version__ = "0.1.0"
