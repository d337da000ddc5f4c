"""MRML scene helpers for the Slicer panels: volumes, the X-ray on its detector plane, poses, overlays.

Every function takes the scene and the nodes explicitly (never ``slicer.mrmlScene``), and imports
``slicer`` and ``vtk`` inside the function, so ``import xvrcore`` never needs Slicer and all of this
runs headless with the ``slicer-core`` wheel (the project's tests do exactly that).

Conventions (those of :mod:`xvrcore.geometry`; the world is the CT's RAS frame in mm):

* **Pose transform node.** A C-arm pose is a ``vtkMRMLLinearTransformNode`` whose
  **TransformToParent is ``camera_to_world``**: it maps a point in the camera frame (origin at the
  X-ray source, +z toward the detector, mm) to the world. Models drawn in camera coordinates — the
  frustum, the textured detector plane — are put *under* it. Saved by Slicer (ITK ``.h5``/``.tfm``)
  it reads back with :func:`xvrcore.io.itk_transform.read_pose_transform`, and the ``.tfm`` that
  ``xvrcore register`` writes loads as the same node.
* **The X-ray on the detector plane.** The X-ray (and the DRR and outlines computed for it) is a
  single-slice scalar volume whose IJK-to-RAS *is* the detector pose: pixel ``(u, v)`` (first pixel
  centre = (0, 0)) sits at ``camera_to_world · depth · K⁻¹ (u, v, 1)``, which is where
  :func:`xvrcore.geometry.backproject` puts the detector at ``depth`` = the source–detector
  distance. The column axis is ``+x`` of the right-handed camera frame, or ``−x`` for a mirrored
  (detector-side, ``fx < 0``) image — every DICOM X-ray — and the slice axis points away from the
  viewer of the displayed image (toward the source for a mirrored image), so the IJK axes are always
  a proper rotation and a slice view aligned with :func:`align_slice_to_xray` shows the image the
  way it is displayed clinically: first row at the top, columns left to right.
* Node attributes ``XVR.*`` keep what the panels need to re-derive the geometry after a scene is
  saved and reloaded (intrinsics, source–detector distance, DICOM file, frame); node references
  tie an X-ray to its pose transform, DRR, outlines, frustum and plane model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from xvrcore.geometry.camera import Intrinsics
from xvrcore.volume.grid import Volume, volume_from_array

__all__ = [
    "ATTRIBUTE_PREFIX",
    "REFERENCE_ROLES",
    "align_slice_to_xray",
    "array_from_vtk_matrix",
    "color_table_node",
    "detector_ijk_to_ras",
    "frustum_model_node",
    "frustum_polydata",
    "landmarks_from_markups",
    "load_scene_mrb",
    "load_transform_node",
    "load_volume_node",
    "markups_points_world",
    "module_parameter",
    "outline_labels",
    "pose_from_transform_node",
    "pose_transform_node",
    "save_scene_mrb",
    "save_transform_node",
    "segmentation_from_labelmap",
    "segmentation_labelmap",
    "set_detector_pose",
    "set_pose",
    "show_in_slice_view",
    "volume_from_node",
    "volume_node_from_volume",
    "vtk_matrix",
    "write_label_names",
    "xray_depth",
    "xray_intrinsics",
    "xray_plane_model_node",
    "xray_volume_node",
]

ATTRIBUTE_PREFIX = "XVR."
#: Node reference roles from an X-ray node to what belongs to it.
REFERENCE_ROLES = {
    "pose": "XVRPose",
    "drr": "XVRDrr",
    "outlines": "XVROutlines",
    "frustum": "XVRFrustum",
    "plane": "XVRPlane",
    "checkerboard": "XVRCheckerboard",
}


# ---- small VTK helpers -------------------------------------------------------------------------------


def vtk_matrix(array) -> object:
    """A ``vtkMatrix4x4`` holding the 4×4 ``array``."""
    import vtk

    a = np.asarray(array, dtype=np.float64).reshape(4, 4)
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r, c]))
    return m


def array_from_vtk_matrix(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def _image_data(array_kji: np.ndarray):
    """``vtkImageData`` of a (K, J, I) array (a deep copy; bool becomes uint8)."""
    import vtk
    from vtk.util import numpy_support

    data = np.asarray(array_kji)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    data = np.ascontiguousarray(data)
    k, j, i = data.shape
    image = vtk.vtkImageData()
    image.SetDimensions(i, j, k)
    scalars = numpy_support.numpy_to_vtk(data.ravel(), deep=True)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    return image


def _image_data_rgba(rgba: np.ndarray):
    """Single-slice ``vtkImageData`` of an ``(H, W, 4)`` uint8 picture (row 0 at j = 0)."""
    import vtk
    from vtk.util import numpy_support

    h, w, _ = rgba.shape
    image = vtk.vtkImageData()
    image.SetDimensions(w, h, 1)
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(rgba, dtype=np.uint8).reshape(-1, 4), deep=True)
    image.GetPointData().SetScalars(scalars)
    return image


def _array_kji(image) -> np.ndarray:
    from vtk.util import numpy_support

    i, j, k = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    if scalars is None:
        raise ValueError("the volume node holds no voxels")
    if scalars.GetNumberOfComponents() != 1:
        raise ValueError(f"expected a scalar volume, got {scalars.GetNumberOfComponents()} components per voxel")
    return numpy_support.vtk_to_numpy(scalars).reshape(k, j, i).copy()


def _to_world(node) -> np.ndarray:
    """The 4×4 from the node's coordinates to the world (its parent transforms; identity if none)."""
    import vtk

    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise ValueError(f"{node.GetName()}: its parent transform is not linear; harden or remove it first")
    m = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(m)
    return array_from_vtk_matrix(m)


def _ijk_to_ras(node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return array_from_vtk_matrix(m)


def _add_node(scene, class_name: str, name: str | None):
    node = scene.AddNewNodeByClass(class_name, name or "")
    if node is None:
        raise RuntimeError(f"the scene cannot create a {class_name} (is its module logic registered?)")
    return node


# ---- volumes -----------------------------------------------------------------------------------------


def volume_node_from_volume(scene, volume: Volume, name: str | None = None, node=None,
                            class_name: str = "vtkMRMLScalarVolumeNode"):
    """A volume node holding ``volume``'s voxels with IJK-to-RAS = ``volume.affine`` (exactly)."""
    node = node or _add_node(scene, class_name, name or Path(volume.source).name)
    node.SetAndObserveImageData(_image_data(volume.data))
    node.SetIJKToRASMatrix(vtk_matrix(volume.affine))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def volume_from_node(node, kind: str = "ct") -> Volume:
    """An :class:`~xvrcore.volume.Volume` of a volume node, in world coordinates.

    The affine is the node's IJK-to-RAS preceded by its (linear) parent transforms, so a CT the user
    moved in Slicer is used where it is shown.
    """
    if node is None or node.GetImageData() is None:
        raise ValueError("the volume node is empty")
    affine = _to_world(node) @ _ijk_to_ras(node)
    return volume_from_array(_array_kji(node.GetImageData()), affine, kind=kind, source=node.GetName() or "volume node")


def load_volume_node(scene, path: str | Path, name: str | None = None, labelmap: bool = False):
    """Read a volume file (NRRD, NIfTI, MHA, …) with Slicer's own reader into a new node."""
    import slicer

    path = Path(path)
    node = _add_node(scene, "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode",
                     name or path.name.split(".")[0])
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)
    if labelmap:
        storage.SetCenterImage(False)
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise OSError(f"{path}: Slicer could not read this volume")
    node.SetAndObserveStorageNodeID(storage.GetID())
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


# ---- segmentations -----------------------------------------------------------------------------------


def segmentation_labelmap(segmentation_node, reference_node, segment_ids: Sequence[str] | None = None):
    """The segments as a label map on ``reference_node``'s grid (world coordinates).

    Returns ``(labels, names, colors)``: an :class:`~xvrcore.volume.Volume` of kind ``"labels"``
    (label ``n`` = the ``n``-th segment, 1-based, in ``segment_ids`` order or the segmentation's),
    ``{label: segment name}`` and ``{label: (r, g, b)}`` (0–255).
    """
    import slicer
    import vtk

    scene = segmentation_node.GetScene()
    segmentation = segmentation_node.GetSegmentation()
    ids = list(segment_ids) if segment_ids is not None else [
        segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())
    ]
    if not ids:
        raise ValueError(f"{segmentation_node.GetName()}: the segmentation has no segments")
    array = vtk.vtkStringArray()
    for segment_id in ids:
        if segmentation.GetSegment(segment_id) is None:
            raise ValueError(f"{segmentation_node.GetName()}: no segment {segment_id!r}")
        array.InsertNextValue(segment_id)
    label_node = _add_node(scene, "vtkMRMLLabelMapVolumeNode", "XVR temporary labels")
    try:
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, array, label_node, reference_node)
        if not ok:
            raise ValueError(f"{segmentation_node.GetName()}: the segments could not be exported as a label map")
        # The exported map is on the reference grid; the reference's parent transforms apply to it too.
        affine = _to_world(reference_node) @ _ijk_to_ras(label_node)
        data = _array_kji(label_node.GetImageData())
    finally:
        display = label_node.GetDisplayNode()
        if display is not None:
            scene.RemoveNode(display)
        scene.RemoveNode(label_node)
    names, colors = {}, {}
    for label, segment_id in enumerate(ids, start=1):
        segment = segmentation.GetSegment(segment_id)
        names[label] = segment.GetName()
        colors[label] = tuple(int(round(255 * c)) for c in segment.GetColor())
    labels = volume_from_array(data, affine, kind="labels", source=segmentation_node.GetName() or "segmentation")
    return labels, names, colors


def segmentation_from_labelmap(scene, labels: Volume, names: Mapping[int, str] | None = None,
                               colors: Mapping[int, tuple[int, int, int]] | None = None, name: str = "Segmentation"):
    """A segmentation node with one segment per label of ``labels`` (named and coloured if given)."""
    import slicer

    label_node = volume_node_from_volume(scene, labels, name=f"{name} labels", class_name="vtkMRMLLabelMapVolumeNode")
    segmentation_node = _add_node(scene, "vtkMRMLSegmentationNode", name)
    segmentation_node.CreateDefaultDisplayNodes()
    try:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, segmentation_node):
            raise ValueError(f"{labels.source}: the label map could not be imported as segments")
    finally:
        display = label_node.GetDisplayNode()
        if display is not None:
            scene.RemoveNode(display)
        scene.RemoveNode(label_node)
    segmentation = segmentation_node.GetSegmentation()
    values = sorted(int(v) for v in np.unique(labels.data) if v != 0)
    for index, value in enumerate(values):
        if index >= segmentation.GetNumberOfSegments():
            break
        segment = segmentation.GetNthSegment(index)
        if names and value in names:
            segment.SetName(str(names[value]))
        if colors and value in colors:
            segment.SetColor(*(c / 255.0 for c in colors[value]))
    return segmentation_node


def write_label_names(path: str | Path, names: Mapping[int, str], colors: Mapping[int, tuple[int, int, int]]) -> Path:
    """A Slicer colour table (``id name r g b a``) that :func:`xvrcore.io.overlay.read_label_names` reads."""
    lines = ["# label names and colours (Slicer colour table)"]
    for label in sorted(names):
        r, g, b = colors.get(label, (255, 255, 0))
        lines.append(f"{label} {'_'.join(str(names[label]).split()) or f'label_{label}'} {r} {g} {b} 255")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---- the detector plane ------------------------------------------------------------------------------


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


def _set_attributes(node, values: Mapping[str, object]) -> None:
    for key, value in values.items():
        if value is None:
            node.RemoveAttribute(ATTRIBUTE_PREFIX + key)
        else:
            node.SetAttribute(ATTRIBUTE_PREFIX + key, value if isinstance(value, str) else json.dumps(value))


def _attribute(node, key: str, default=None):
    value = node.GetAttribute(ATTRIBUTE_PREFIX + key)
    if value is None:
        return default
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def xray_intrinsics(node) -> Intrinsics:
    """The intrinsics stored on an X-ray (or DRR/outline) node by :func:`xray_volume_node`."""
    value = _attribute(node, "Intrinsics")
    if not value:
        raise ValueError(f"{node.GetName()}: not an XVR X-ray node (no {ATTRIBUTE_PREFIX}Intrinsics attribute)")
    return Intrinsics(*(float(v) for v in value[:4]), int(value[4]), int(value[5]))


def xray_depth(node) -> float:
    """The source–detector distance (mm) stored on an X-ray node."""
    value = _attribute(node, "SDD")
    if value is None:
        raise ValueError(f"{node.GetName()}: not an XVR X-ray node (no {ATTRIBUTE_PREFIX}SDD attribute)")
    return float(value)


def set_detector_pose(node, camera_to_world, intrinsics: Intrinsics | None = None, depth: float | None = None) -> None:
    """Move an image node onto the detector plane of ``camera_to_world``."""
    intrinsics = intrinsics or xray_intrinsics(node)
    depth = xray_depth(node) if depth is None else depth
    node.SetIJKToRASMatrix(vtk_matrix(detector_ijk_to_ras(camera_to_world, intrinsics, depth)))


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
    node = node or _add_node(scene, class_name, name)
    node.SetAndObserveImageData(_image_data(image[None]))
    _set_attributes(node, {"Intrinsics": [intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy,
                                          intrinsics.width, intrinsics.height], "SDD": float(depth)})
    _set_attributes(node, attributes or {})
    set_detector_pose(node, camera_to_world, intrinsics, depth)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if class_name != "vtkMRMLLabelMapVolumeNode" and display is not None and image.size:
        values = image[mask] if mask is not None and np.any(mask) else image.ravel()
        low, high = window if window is not None else np.percentile(values, [1.0, 99.0])
        if high <= low:
            high = low + 1.0
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(float(low), float(high))
    return node


# ---- poses as transform nodes ------------------------------------------------------------------------


def _check_rigid(pose: np.ndarray, what: str) -> np.ndarray:
    rot = pose[:3, :3]
    if not np.isfinite(pose).all() or np.abs(rot @ rot.T - np.eye(3)).max() > 1e-5 or np.linalg.det(rot) < 0:
        raise ValueError(f"{what} is not a rigid pose (rotation + translation)")
    return pose


def set_pose(transform_node, camera_to_world) -> None:
    """Set a linear transform node's TransformToParent to ``camera_to_world``."""
    pose = _check_rigid(np.asarray(camera_to_world, dtype=np.float64).reshape(4, 4), "camera_to_world")
    transform_node.SetMatrixTransformToParent(vtk_matrix(pose))


def pose_from_transform_node(transform_node, world: bool = True) -> np.ndarray:
    """``camera_to_world`` of a pose transform node (its TransformToParent; to the world if ``world``)."""
    import vtk

    if not transform_node.IsLinear():
        raise ValueError(f"{transform_node.GetName()}: a C-arm pose must be a linear transform")
    m = vtk.vtkMatrix4x4()
    if world:
        transform_node.GetMatrixTransformToWorld(m)
    else:
        transform_node.GetMatrixTransformToParent(m)
    return _check_rigid(array_from_vtk_matrix(m), transform_node.GetName())


def pose_transform_node(scene, camera_to_world, name: str = "C-arm pose", node=None):
    """A linear transform node (new unless ``node`` is given) holding the pose."""
    node = node or _add_node(scene, "vtkMRMLLinearTransformNode", name)
    set_pose(node, camera_to_world)
    node.SetAttribute(ATTRIBUTE_PREFIX + "Direction", "TransformToParent = camera to world (RAS, mm)")
    return node


def save_transform_node(transform_node, path: str | Path) -> Path:
    """Write a transform node as Slicer saves it (ITK ``.h5``, ``.tfm`` or ``.txt``)."""
    import slicer

    path = Path(path)
    storage = slicer.vtkMRMLTransformStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(transform_node):
        raise OSError(f"{path}: could not write the transform")
    return path


def load_transform_node(scene, path: str | Path, name: str | None = None):
    """Read an ITK transform file (``xvrcore register``'s ``.tfm``, Slicer's ``.h5``) into a new node."""
    import slicer

    path = Path(path)
    node = _add_node(scene, "vtkMRMLLinearTransformNode", name or path.stem)
    storage = slicer.vtkMRMLTransformStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise OSError(f"{path}: Slicer could not read this transform")
    node.SetAndObserveStorageNodeID(storage.GetID())
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


def frustum_model_node(scene, intrinsics: Intrinsics, depth: float, transform_node=None, name: str = "C-arm frustum",
                       color=(1.0, 0.8, 0.1), node=None):
    """A model of the X-ray beam (source → detector corners) under the pose transform node."""
    node = node or _add_node(scene, "vtkMRMLModelNode", name)
    node.SetAndObservePolyData(frustum_polydata(intrinsics, depth))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetColor(*color)
    display.SetLineWidth(2.0)
    display.SetVisibility2D(False)
    if transform_node is not None:
        node.SetAndObserveTransformNodeID(transform_node.GetID())
    return node


def _display_uint8(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    low, high = window
    scaled = (np.asarray(image, dtype=np.float64) - low) / max(high - low, 1e-12)
    return np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)


def xray_plane_model_node(scene, image: np.ndarray, intrinsics: Intrinsics, depth: float, transform_node=None,
                          window: tuple[float, float] | None = None, name: str = "X-ray plane", node=None,
                          invert: bool = False):
    """The X-ray as a textured rectangle on the detector plane (camera coordinates; under the pose node).

    Shows the image in 3D views whatever the slice views show (the technique of SlicerRT's
    PlanarImage). Texture row 0 is the image's first row, at the corner of pixel (0, 0).
    """
    import vtk

    image = np.asarray(image, dtype=np.float64)
    window = window or tuple(np.percentile(image, [1.0, 99.0]))
    grey = _display_uint8(image, window)
    if invert:
        grey = 255 - grey
    corners = _detector_corners(intrinsics, depth)
    plane = vtk.vtkPlaneSource()
    plane.SetOrigin(*corners[0])  # texture (0, 0): the corner of the first pixel
    plane.SetPoint1(*corners[1])  # along the first row
    plane.SetPoint2(*corners[3])  # along the first column
    plane.Update()
    node = node or _add_node(scene, "vtkMRMLModelNode", name)
    node.SetAndObservePolyData(plane.GetOutput())
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    rgba = np.stack([grey, grey, grey, np.full_like(grey, 255)], -1)  # Slicer's model textures are RGBA
    texture = _image_data_rgba(rgba)
    producer = vtk.vtkTrivialProducer()
    producer.SetOutput(texture)
    node._xvr_texture_producer = producer  # keep the producer alive with the node's Python wrapper
    display = node.GetDisplayNode()
    display.SetTextureImageDataConnection(producer.GetOutputPort())
    display.SetBackfaceCulling(False)
    display.SetAmbient(1.0)
    display.SetDiffuse(0.0)
    display.SetColor(1.0, 1.0, 1.0)
    display.SetVisibility2D(False)
    if transform_node is not None:
        node.SetAndObserveTransformNodeID(transform_node.GetID())
    return node


# ---- overlays ----------------------------------------------------------------------------------------


def outline_labels(masks: Mapping[int, np.ndarray], shape: tuple[int, int] | None = None) -> np.ndarray:
    """An ``int16`` image whose outline pixels of each structure's silhouette carry its label (0 elsewhere).

    Where outlines cross, the later label wins.
    """
    from xvrcore.io.overlay import outline

    if not masks and shape is None:
        raise ValueError("no masks and no shape")
    shape = shape or next(iter(masks.values())).shape
    out = np.zeros(shape, dtype=np.int16)
    for label, mask in masks.items():
        out[outline(mask)] = int(label)
    return out


def color_table_node(scene, names: Mapping[int, str], colors: Mapping[int, tuple[int, int, int]],
                     name: str = "XVR structure colours", node=None):
    """A colour table with one entry per label (label 0 transparent)."""
    node = node or _add_node(scene, "vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    top = max([0, *names, *colors]) + 1
    node.SetNumberOfColors(top)
    node.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for label in range(1, top):
        r, g, b = colors.get(label, (255, 255, 0))
        node.SetColor(label, str(names.get(label, f"label {label}")), r / 255.0, g / 255.0, b / 255.0, 1.0)
    node.SetAttribute("Category", "SlicerXVR")
    return node


def align_slice_to_xray(slice_node, xray_node, view_size: tuple[int, int] | None = None, margin: float = 1.05) -> None:
    """Turn a slice view to the X-ray's plane, first row at the top, columns left to right, and fit it.

    Slicer's ``RotateToVolumePlane`` puts the slice plane on the image; the in-plane axes it picks
    depend on the view's previous orientation, so they are then set explicitly: screen x = image
    columns, screen y = −rows, slice normal = away from the viewer (the convention of Slicer's own
    axial view). The field of view fits the whole image with ``margin``.
    """
    slice_node.RotateToVolumePlane(xray_node)
    m = _to_world(xray_node) @ _ijk_to_ras(xray_node)
    dims = xray_node.GetImageData().GetDimensions()
    spacing_i, spacing_j = np.linalg.norm(m[:3, 0]), np.linalg.norm(m[:3, 1])
    di, dj = m[:3, 0] / spacing_i, m[:3, 1] / spacing_j
    slice_to_ras = np.eye(4)
    slice_to_ras[:3, 0], slice_to_ras[:3, 1], slice_to_ras[:3, 2] = di, -dj, np.cross(di, dj)
    slice_to_ras[:3, 3] = (m @ np.array([(dims[0] - 1) / 2, (dims[1] - 1) / 2, 0.0, 1.0]))[:3]
    slice_node.GetSliceToRAS().DeepCopy(vtk_matrix(slice_to_ras))
    width_mm, height_mm = dims[0] * spacing_i * margin, dims[1] * spacing_j * margin
    view = view_size or slice_node.GetDimensions()[:2]
    aspect = view[1] / max(view[0], 1)
    if height_mm / width_mm > aspect:
        fov_x, fov_y = height_mm / aspect, height_mm
    else:
        fov_x, fov_y = width_mm, width_mm * aspect
    slice_node.SetFieldOfView(fov_x, fov_y, slice_node.GetFieldOfView()[2])
    slice_node.UpdateMatrices()


def show_in_slice_view(scene, slice_node, xray_node, drr_node=None, outline_node=None, opacity: float = 0.5,
                       view_size: tuple[int, int] | None = None) -> None:
    """The X-ray as background, the DRR as foreground (``opacity``), the outlines as label layer."""
    composite = None
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        candidate = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        if candidate.GetLayoutName() == slice_node.GetLayoutName():
            composite = candidate
            break
    if composite is None:
        raise ValueError(f"no slice composite node for the {slice_node.GetLayoutName()} view")
    composite.SetBackgroundVolumeID(xray_node.GetID())
    composite.SetForegroundVolumeID(drr_node.GetID() if drr_node is not None else None)
    composite.SetForegroundOpacity(float(opacity))
    composite.SetLabelVolumeID(outline_node.GetID() if outline_node is not None else None)
    composite.SetLabelOpacity(1.0)
    align_slice_to_xray(slice_node, xray_node, view_size)


# ---- markups -----------------------------------------------------------------------------------------


def markups_points_world(node) -> tuple[np.ndarray, list[str]]:
    """World (RAS) positions ``(N, 3)`` of a markups node's defined control points, and their labels."""
    points, labels = [], []
    for i in range(node.GetNumberOfControlPoints()):
        if hasattr(node, "GetNthControlPointPositionStatus") and node.GetNthControlPointPositionStatus(i) != node.PositionDefined:
            continue
        p = [0.0, 0.0, 0.0]
        node.GetNthControlPointPositionWorld(i, p)
        points.append(p)
        labels.append(node.GetNthControlPointLabel(i))
    return np.asarray(points, dtype=np.float64).reshape(-1, 3), labels


def landmarks_from_markups(xray_markups, volume_markups, camera_to_world, intrinsics: Intrinsics):
    """Pairs of image points (pixels) and CT points (RAS) from two markups nodes.

    The image points were placed on the X-ray in a slice view, so they lie on the detector plane of
    ``camera_to_world``; each is projected to its pixel ``(u, v)``. Points pair by label when both
    nodes use the same set of labels, else by order. Returns ``(points_2d, points_3d, labels)``.
    """
    p2w, l2 = markups_points_world(xray_markups)
    p3, l3 = markups_points_world(volume_markups)
    if len(l2) != len(l3):
        raise ValueError(f"{len(l2)} points on the X-ray but {len(l3)} in the CT; place the same landmarks in both")
    if len(set(l2)) == len(l2) and set(l2) == set(l3) and l2 != l3:
        order = [l3.index(label) for label in l2]
        p3, l3 = p3[order], [l3[i] for i in order]
    pose = np.asarray(camera_to_world, dtype=np.float64).reshape(4, 4)
    cam = (p2w - pose[:3, 3]) @ pose[:3, :3]  # world → camera: Rᵀ (p − t)
    if len(cam) and np.any(cam[:, 2] <= 0):
        raise ValueError("an X-ray landmark lies behind the X-ray source; place the points on the X-ray image")
    u = intrinsics.fx * cam[:, 0] / cam[:, 2] + intrinsics.cx
    v = intrinsics.fy * cam[:, 1] / cam[:, 2] + intrinsics.cy
    return np.stack([u, v], 1), p3, l2


# ---- scenes and parameters ---------------------------------------------------------------------------


def save_scene_mrb(scene, path: str | Path) -> Path:
    """Save the whole scene as a Medical Reality Bundle (``.mrb``), as Slicer's "Save" does."""
    path = Path(path)
    if not scene.WriteToMRB(str(path)):
        raise OSError(f"{path}: could not write the scene bundle")
    return path


def load_scene_mrb(scene, path: str | Path) -> None:
    """Replace ``scene``'s content with a ``.mrb`` (the scene needs Slicer's IO logic, as in Slicer)."""
    if not scene.ReadFromMRB(str(path), True):
        raise OSError(f"{path}: could not read the scene bundle")


def module_parameter(scene, module: str, name: str) -> str | None:
    """A parameter of a module's parameter node (``vtkMRMLScriptedModuleNode`` tagged ``ModuleName``)."""
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode")
        if node.GetAttribute("ModuleName") == module:
            value = node.GetParameter(name)
            if value:
                return value
    return None
