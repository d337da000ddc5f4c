"""The X-ray on its detector plane: the image as a single-slice volume, the textured plane model and the
frustum (the beam), all placed by the C-arm pose.

Conventions: :mod:`xvrcore.conventions` (world, camera, intrinsics, mirrored views). The X-ray (and
the DRR and outlines computed for it) is a single-slice scalar volume whose IJK-to-RAS *is* the
detector pose: pixel ``(u, v)`` (first pixel centre = (0, 0)) sits at
``camera_to_world · depth · K⁻¹ (u, v, 1)``, which is where :func:`xvrcore.geometry.backproject` puts
the detector at ``depth`` = the source–detector distance. The column axis is ``+x`` of the
right-handed camera frame, or ``−x`` for a mirrored (detector-side, ``fx < 0``) image — every DICOM
X-ray — and the slice axis points away from the viewer of the displayed image (toward the source for a
mirrored image), so the IJK axes are always a proper rotation and a slice view aligned with
:func:`XVRCoreLib.views.align_slice_to_xray` shows the image the way it is displayed clinically:
first row at the top, columns left to right.

The frustum and the plane model are drawn in camera coordinates and put *under* the pose transform
node (:mod:`XVRCoreLib.poses`). The intrinsics, the source–detector distance and the exposure mask are
kept as ``XVR.*`` attributes of the image node, and its pixels are the volume's own: a saved scene needs
no DICOM file to show, overlay or register the X-ray (:mod:`XVRCoreLib.xray_dicom`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from .scene import ATTRIBUTE_PREFIX, add_node, attribute, set_attributes
from .vtkdata import image_data, rgba_image_data, vtk_matrix

if TYPE_CHECKING:
    from xvrcore.geometry.camera import Intrinsics

__all__ = [
    "MASK_ENCODING",
    "decode_mask",
    "detector_ijk_to_ras",
    "display_window",
    "encode_mask",
    "frustum_model_node",
    "frustum_polydata",
    "set_detector_pose",
    "set_xray_mask",
    "xray_depth",
    "xray_detector",
    "xray_intrinsics",
    "xray_mask",
    "xray_plane_model_node",
    "xray_volume_node",
]


def detector_ijk_to_ras(camera_to_world, intrinsics: Intrinsics, depth: float) -> np.ndarray:
    """IJK-to-RAS of an image with ``intrinsics`` lying on the detector plane at ``depth`` mm.

    Column ``i`` and row ``j`` map to ``camera_to_world · depth · K⁻¹ (i, j, 1)``; the slice axis
    ``k`` is ``sign(fx)`` times the beam direction with the mean pixel spacing, so the direction
    matrix is a proper rotation (see the module docstring).
    """
    pose = np.asarray(camera_to_world, dtype=np.float64).reshape(4, 4)
    rot, t = pose[:3, :3], pose[:3, 3]
    k = intrinsics
    m = np.eye(4)
    m[:3, 0] = rot[:, 0] * depth / k.fx
    m[:3, 1] = rot[:, 1] * depth / k.fy
    m[:3, 2] = np.sign(k.fx) * rot[:, 2] * 0.5 * depth * (1 / abs(k.fx) + 1 / k.fy)
    m[:3, 3] = rot @ np.array([-depth * k.cx / k.fx, -depth * k.cy / k.fy, depth]) + t
    return m


def xray_intrinsics(node) -> Intrinsics:
    """The intrinsics stored on an X-ray (or DRR/outline) node by :func:`xray_volume_node`."""
    from xvrcore.geometry.camera import Intrinsics

    value = attribute(node, "Intrinsics")
    if not value:
        raise ValueError(f"{node.GetName()}: not an XVR X-ray node (no {ATTRIBUTE_PREFIX}Intrinsics attribute)")
    return Intrinsics(*(float(v) for v in value[:4]), int(value[4]), int(value[5]))


def xray_depth(node) -> float:
    """The source–detector distance (mm) stored on an X-ray node."""
    value = attribute(node, "SDD")
    if value is None:
        raise ValueError(f"{node.GetName()}: not an XVR X-ray node (no {ATTRIBUTE_PREFIX}SDD attribute)")
    return float(value)


def xray_detector(node):
    """The :class:`xvrcore.geometry.camera.Detector` whose intrinsics the node holds (spacings, SDD, offset)."""
    from xvrcore.geometry.camera import Detector

    k, depth = xray_intrinsics(node), xray_depth(node)
    col_spacing, row_spacing = depth / abs(k.fx), depth / k.fy
    offset = ((k.cx - (k.width - 1) / 2) * col_spacing, (k.cy - (k.height - 1) / 2) * row_spacing)
    return Detector(depth, k.height, k.width, row_spacing, col_spacing, offset, mirrored=k.fx < 0)


#: How the exposure mask is kept in the ``XVR.Mask`` attribute: one bit per pixel, deflated, base64.
MASK_ENCODING = "packbits-zlib-base64"


def encode_mask(mask: np.ndarray) -> str:
    """The ``XVR.Mask`` text of an ``(H, W)`` boolean mask (a few hundred bytes for a shutter's shape)."""
    import base64
    import zlib

    packed = np.packbits(np.asarray(mask, dtype=bool).ravel())
    return MASK_ENCODING + ":" + base64.b64encode(zlib.compress(packed.tobytes(), 9)).decode("ascii")


def decode_mask(text: str, shape: tuple[int, int]) -> np.ndarray:
    """The boolean mask of :func:`encode_mask`'s text, ``shape`` = (H, W)."""
    import base64
    import zlib

    encoding, _, payload = text.partition(":")
    if encoding != MASK_ENCODING:
        raise ValueError(f"unknown exposure mask encoding {encoding!r}")
    bits = np.unpackbits(np.frombuffer(zlib.decompress(base64.b64decode(payload)), dtype=np.uint8))
    count = shape[0] * shape[1]
    if bits.size < count:
        raise ValueError(f"the exposure mask holds {bits.size} pixels, the image {count}")
    return bits[:count].reshape(shape).astype(bool)


def set_xray_mask(node, mask: np.ndarray | None) -> None:
    """Keep the exposure mask (True = exposed) on an X-ray node; None: every pixel exposed."""
    node.SetAttribute(ATTRIBUTE_PREFIX + "Mask", encode_mask(mask) if mask is not None else "")


def xray_mask(node) -> np.ndarray:
    """The exposure mask kept on an X-ray node (every pixel exposed if none was kept)."""
    k = xray_intrinsics(node)
    text = node.GetAttribute(ATTRIBUTE_PREFIX + "Mask")
    if not text:
        return np.ones((k.height, k.width), dtype=bool)
    return decode_mask(text, (k.height, k.width))


def set_detector_pose(node, camera_to_world, intrinsics: Intrinsics | None = None, depth: float | None = None) -> None:
    """Move an image node onto the detector plane of ``camera_to_world``."""
    intrinsics = intrinsics or xray_intrinsics(node)
    depth = xray_depth(node) if depth is None else depth
    node.SetIJKToRASMatrix(vtk_matrix(detector_ijk_to_ras(camera_to_world, intrinsics, depth)))


def _window_of(image: np.ndarray, mask: np.ndarray | None) -> tuple[float, float]:
    """The 1st–99th percentile of the pixels inside ``mask`` (or all): the collimator blades, far denser
    than any anatomy, would otherwise take most of the grey range."""
    values = image[mask] if mask is not None and np.any(mask) else image.ravel()
    low, high = (float(v) for v in np.percentile(values, [1.0, 99.0]))
    return low, (high if high > low else low + 1.0)


def display_window(node) -> tuple[float, float] | None:
    """The (low, high) display range of a volume node (its window/level), None without a display node."""
    display = node.GetDisplayNode()
    if display is None:
        return None
    return float(display.GetWindowLevelMin()), float(display.GetWindowLevelMax())


def _set_window(node, image: np.ndarray, window: tuple[float, float] | None, mask: np.ndarray | None) -> None:
    """Display range ``window``, or the 1st–99th percentile of the pixels inside ``mask`` (or all)."""
    display = node.GetDisplayNode()
    if display is None or not image.size:
        return
    low, high = window if window is not None else _window_of(image, mask)
    if high <= low:
        high = low + 1.0
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(float(low), float(high))


def xray_volume_node(scene, image: np.ndarray, camera_to_world, intrinsics: Intrinsics, depth: float,
                     name: str = "X-ray", node=None, class_name: str = "vtkMRMLScalarVolumeNode",
                     attributes: Mapping[str, object] | None = None, window: tuple[float, float] | None = None,
                     mask: np.ndarray | None = None):
    """A single-slice volume of an ``(H, W)`` image on the detector plane (see the module docstring).

    ``window`` (low, high) sets the display range; by default the 1st–99th percentile of the pixels
    inside ``mask`` (or all). Label maps (``class_name="vtkMRMLLabelMapVolumeNode"``) keep their values.
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.shape != (intrinsics.height, intrinsics.width):
        raise ValueError(f"image of shape {image.shape} does not match the {intrinsics.width}×{intrinsics.height} intrinsics")
    node = node or add_node(scene, class_name, name, attributes)
    node.SetAndObserveImageData(image_data(image[None]))
    set_attributes(node, {"Intrinsics": [intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy,
                                         intrinsics.width, intrinsics.height], "SDD": float(depth)})
    set_attributes(node, attributes or {})
    set_detector_pose(node, camera_to_world, intrinsics, depth)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    if class_name != "vtkMRMLLabelMapVolumeNode":
        _set_window(node, image, window, mask)
    return node


# ---- models in camera coordinates --------------------------------------------------------------------


def _detector_corners(intrinsics: Intrinsics, depth: float) -> np.ndarray:
    """(4, 3) camera-frame corners of the image's outer pixel edges, in frustum_corners' order."""
    w, h = intrinsics.width, intrinsics.height
    uv = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    x = (uv[:, 0] - intrinsics.cx) / intrinsics.fx
    y = (uv[:, 1] - intrinsics.cy) / intrinsics.fy
    return np.stack([x, y, np.ones(4)], 1) * depth


def frustum_polydata(intrinsics: Intrinsics, depth: float):
    """Lines from the source (camera origin) to the detector corners, and the detector outline."""
    import vtk

    points = vtk.vtkPoints()
    points.InsertNextPoint(0.0, 0.0, 0.0)
    for corner in _detector_corners(intrinsics, depth):
        points.InsertNextPoint(*corner.tolist())
    lines = vtk.vtkCellArray()
    for c in range(1, 5):
        lines.InsertNextCell(2, [0, c])
    lines.InsertNextCell(5, [1, 2, 3, 4, 1])
    polydata = vtk.vtkPolyData()
    polydata.SetPoints(points)
    polydata.SetLines(lines)
    return polydata


def _model_node(scene, node, name: str, polydata, transform_node):
    """A model node (new unless ``node``) showing ``polydata`` under ``transform_node``, with a display node."""
    node = node or add_node(scene, "vtkMRMLModelNode", name)
    node.SetAndObservePolyData(polydata)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    if transform_node is not None:
        node.SetAndObserveTransformNodeID(transform_node.GetID())
    return node


def frustum_model_node(scene, intrinsics: Intrinsics, depth: float, transform_node=None, name: str = "C-arm frustum",
                       color=(1.0, 0.8, 0.1), node=None):
    """A model of the X-ray beam (source → detector corners) under the pose transform node."""
    node = _model_node(scene, node, name, frustum_polydata(intrinsics, depth), transform_node)
    display = node.GetDisplayNode()
    display.SetColor(*color)
    display.SetLineWidth(2.0)
    display.SetVisibility2D(False)
    return node


def _display_uint8(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    low, high = window
    scaled = (np.asarray(image, dtype=np.float64) - low) / max(high - low, 1e-12)
    return np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)


def _plane_polydata(intrinsics: Intrinsics, depth: float):
    """The detector rectangle, texture (0, 0) at the corner of the first pixel."""
    import vtk

    corners = _detector_corners(intrinsics, depth)
    plane = vtk.vtkPlaneSource()
    plane.SetOrigin(*corners[0])  # texture (0, 0): the corner of the first pixel
    plane.SetPoint1(*corners[1])  # along the first row
    plane.SetPoint2(*corners[3])  # along the first column
    plane.Update()
    return plane.GetOutput()


def xray_plane_model_node(scene, image: np.ndarray, intrinsics: Intrinsics, depth: float, transform_node=None,
                          window: tuple[float, float] | None = None, name: str = "X-ray plane", node=None,
                          invert: bool = False, mask: np.ndarray | None = None):
    """The X-ray as a textured rectangle on the detector plane (camera coordinates; under the pose node).

    Shows the image in 3D views whatever the slice views show (the technique of SlicerRT's
    PlanarImage). Texture row 0 is the image's first row, at the corner of pixel (0, 0). The grey
    range is ``window`` (low, high: pass the X-ray volume's :func:`display_window`, so that 2D and 3D
    look alike), else the 1st–99th percentile inside the exposure ``mask``.
    """
    import vtk

    image = np.asarray(image, dtype=np.float64)
    window = window or _window_of(image, mask)
    grey = _display_uint8(image, window)
    if invert:
        grey = 255 - grey
    node = _model_node(scene, node, name, _plane_polydata(intrinsics, depth), transform_node)
    rgba = np.stack([grey, grey, grey, np.full_like(grey, 255)], -1)  # Slicer's model textures are RGBA
    producer = vtk.vtkTrivialProducer()
    producer.SetOutput(rgba_image_data(rgba))
    node._xvr_texture_producer = producer  # keep the producer alive with the node's Python wrapper
    display = node.GetDisplayNode()
    display.SetTextureImageDataConnection(producer.GetOutputPort())
    display.SetBackfaceCulling(False)
    display.SetAmbient(1.0)
    display.SetDiffuse(0.0)
    display.SetColor(1.0, 1.0, 1.0)
    display.SetVisibility2D(False)
    return node
