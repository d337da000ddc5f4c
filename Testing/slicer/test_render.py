"""Offscreen rendering with Slicer's own displayable managers (trame-slicer's standalone views, EGL).

The registration panel's logic builds the scene (X-ray on its detector plane, DRR, reprojected outlines,
C-arm beam, textured detector plane, segments); the Red slice view and a 3D view render it to PNG, and
the pictures are checked by content: the slice view shows the X-ray the way it is displayed (first row at
the top, columns left to right, not mirrored), the outlines where the segments project, the 3D view the
beam, the detector plane and the segments. With XVR_WRITE_SCREENSHOTS=1 the PNGs also go to
Resources/Screenshots/ (the README shows them).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
slicer = pytest.importorskip("slicer")
torch = pytest.importorskip("torch")
trame_core = pytest.importorskip("trame_slicer.core")
trame_views = pytest.importorskip("trame_slicer.views")

from XVRCoreLib import volumes, xray_plane
from XVRCoreLib.scene import REFERENCE_ROLES

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "Resources" / "Screenshots"
SLICE_SIZE = (320, 256)
THREED_SIZE = (400, 320)
README_PICTURES = {"registration_slice_view.png", "registration_3d_view.png"}  # also the extension's screenshots
REVIEW_SIZE = (1280, 800)  # the review layout (and the checkerboard in its fusion view) at real size
STRUCTURES = {5: "liver", 52: "aorta", 31: "L1", 32: "L2", 33: "L3"}


def _grab(view, path: Path) -> np.ndarray:
    import vtk
    from PIL import Image
    from vtk.util import numpy_support

    view.render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(view.render_window())
    grab.ReadFrontBufferOff()
    grab.Update()
    image = grab.GetOutput()
    width, height, _ = image.GetDimensions()
    rgb = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)[::-1, :, :3]
    rgb = np.ascontiguousarray(rgb)
    Image.fromarray(rgb).save(path)
    if os.environ.get("XVR_WRITE_SCREENSHOTS") and path.name in README_PICTURES:
        Image.fromarray(rgb).save(SCREENSHOTS / path.name)
    return rgb


@pytest.fixture(scope="module")
def rendered(registration_module, torso_path, torso_crop, tmp_path_factory):
    """The panel's scene for one synthetic X-ray of the torso CT, with a slice view and a 3D view."""
    from slicertest_utils import true_pose
    from xvrcore.drr import DRRVolume
    from xvrcore.geometry.camera import Detector
    from xvrcore.volume import load_volume, volume_from_array
    from xvrcore.volume.attenuation import to_attenuation
    from xvrcore.xray.synthesis import synthesize_xray, write_xray_dicom

    out = tmp_path_factory.mktemp("render")
    ct = load_volume(torso_path)
    detector = Detector(1000.0, 150, 200, 1.8, 1.8)
    # Aimed at the labelled slab (the TotalSegmentator labels cover 30 slices of the CT).
    _, labels = torso_crop
    target = labels.ijk_to_ras((np.array(labels.shape_ijk) - 1) / 2)
    target[2] = max(target[2], ct.corners()[:, 2].min() + 95.0)  # the field of view stays inside the scan
    pose = true_pose(target, 15.0, -5.0, roll=3.0, sod=620.0)
    image = synthesize_xray(DRRVolume.from_volume(to_attenuation(ct)), pose, detector, rng=np.random.default_rng(7))
    dicom = write_xray_dicom(out / "torso_lao25.dcm", image, detector, pose, ct.center)

    app = trame_core.SlicerApp()
    app.view_manager.register_factory(trame_views.DirectViewFactory(do_render_offscreen=True))
    red = app.view_manager.create_view(trame_views.ViewLayoutDefinition.axial_view())
    threed = app.view_manager.create_view(trame_views.ViewLayoutDefinition.threed_view())
    from XVRRegistrationLib.layout import OUTLINE_VIEW, REVIEW_VIEW_SIZES

    outline_view = app.view_manager.create_view(trame_views.ViewLayoutDefinition.slice_view(
        "Axial", label=OUTLINE_VIEW, color="#6EB04B"))  # the review layout's second slice view
    for view, size in ((red, SLICE_SIZE), (threed, THREED_SIZE), (outline_view, REVIEW_VIEW_SIZES[OUTLINE_VIEW])):
        view.render_window().SetMultiSamples(0)  # translucent geometry disappears with MSAA on Mesa EGL
        view.render_window().SetSize(*size)
    scene = app.scene
    slice_node = scene.GetNodeByID("vtkMRMLSliceNodeRed")
    slice_node.SetDimensions(*SLICE_SIZE, 1)

    ct_node = volumes.load_volume_node(scene, torso_path, name="CT")
    data = np.zeros(ct.data.shape, np.int16)  # the crop's labels on the full CT's grid
    k0 = round(ct.ras_to_ijk(labels.origin)[2])
    data[k0 : k0 + labels.data.shape[0]] = np.where(np.isin(labels.data, list(STRUCTURES)), labels.data, 0)
    colors = {5: (221, 130, 101), 52: (224, 97, 76), 31: (216, 186, 128), 32: (255, 215, 140), 33: (230, 180, 110)}
    segmentation = volumes.segmentation_from_labelmap(scene, volume_from_array(data, ct.affine, kind="labels"),
                                                   STRUCTURES, colors, name="Structures")
    bone = volumes.segmentation_from_labelmap(scene, volume_from_array((ct.data > 300).astype(np.int16), ct.affine,
                                                                    kind="labels"), {1: "bone"}, {1: (241, 214, 145)},
                                           name="Bone")
    for node in (segmentation, bone):
        node.CreateClosedSurfaceRepresentation()
        node.GetDisplayNode().SetVisibility2D(False)
    bone.GetDisplayNode().SetOpacity3D(0.5)

    logic = registration_module.XVRRegistrationLogic()
    xray_node = logic.xrays.importXray(dicom, scene, ct_node)
    logic.poses.setPose(xray_node, pose.numpy())  # as a registration result would
    drr_node, outline_node = logic.overlays.updateOverlays(xray_node, ct_node, segmentation, maxSize=200)
    return {"app": app, "red": red, "threed": threed, "outline_view": outline_view, "scene": scene, "slice": slice_node, "logic": logic,
            "xray": xray_node, "drr": drr_node, "outlines": outline_node, "ct": ct, "pose": pose.numpy(), "target": target,
            "detector": detector, "out": out}


def _image_to_screen(r, u, v):
    """Screen (column, row from the top) of X-ray pixel (u, v) in the aligned slice view."""
    k = xray_plane.xray_intrinsics(r["xray"])
    fov = r["slice"].GetFieldOfView()
    scale = SLICE_SIZE[0] / fov[0]
    spacing_u, spacing_v = r["detector"].col_spacing, r["detector"].row_spacing
    x = SLICE_SIZE[0] / 2 + (u - (k.width - 1) / 2) * spacing_u * scale
    y = SLICE_SIZE[1] / 2 + (v - (k.height - 1) / 2) * spacing_v * scale
    return x, y


def test_slice_view_shows_the_xray_upright_and_unmirrored(rendered):
    r = rendered
    r["logic"].display.showXray(r["xray"], r["slice"], opacity=0.0, showOutlines=False)
    shot = _grab(r["red"], r["out"] / "xray_only.png").astype(np.float64).mean(-1)
    xray = r["logic"].xrays.xray(r["xray"])
    display = -xray.pixels  # XA: dense displayed dark (inverted grey)
    # Sample the screen where each X-ray pixel should be and compare with the image and its mirrors.
    v, u = np.mgrid[5 : xray.pixels.shape[0] - 5 : 4, 5 : xray.pixels.shape[1] - 5 : 4]
    x, y = _image_to_screen(r, u, v)
    seen = shot[np.round(y).astype(int), np.round(x).astype(int)]
    inside = xray.mask[v, u]
    scores = {name: np.corrcoef(seen[inside], img[v, u][inside])[0, 1]
              for name, img in (("as displayed", display), ("left-right mirrored", display[:, ::-1]),
                                ("upside down", display[::-1]))}
    assert scores["as displayed"] > 0.95, scores
    # Unexplained variance: a small fraction of that of either mirror image (a spine view is nearly symmetric).
    for mirror in ("left-right mirrored", "upside down"):
        assert 1 - scores["as displayed"] ** 2 < 0.2 * (1 - scores[mirror] ** 2), scores


def test_registration_view_with_drr_and_outlines(rendered):
    r = rendered
    # The DRR in warm colours tints the X-ray (red above blue) inside the image.
    r["logic"].display.showXray(r["xray"], r["slice"], opacity=0.45, showOutlines=False)
    r["drr"].GetDisplayNode().SetAndObserveColorNodeID("vtkMRMLColorTableNodeWarm1")
    tinted = _grab(r["red"], r["out"] / "drr_tint.png").astype(np.int16)
    r["drr"].GetDisplayNode().SetAndObserveColorNodeID("vtkMRMLColorTableNodeInvertedGrey")
    centre = tinted[SLICE_SIZE[1] // 2 - 20 : SLICE_SIZE[1] // 2 + 20, SLICE_SIZE[0] // 2 - 20 : SLICE_SIZE[0] // 2 + 20]
    assert centre[..., 0].mean() > centre[..., 2].mean() + 10
    # The panel's look: X-ray and DRR alike (dense dark), the segments' outlines in their colours.
    r["logic"].display.showXray(r["xray"], r["slice"], opacity=0.5, showOutlines=True)
    shot = _grab(r["red"], r["out"] / "registration_slice_view.png").astype(np.int16)
    outlines = slicer.util.arrayFromVolume(r["outlines"])[0]
    assert set(np.unique(outlines)) - {0}, "no outline pixels"
    # Outline pixels of the label layer appear on screen in their segment's colour, where they project.
    k = xray_plane.xray_intrinsics(r["outlines"])
    scale_to_xray = r["detector"].cols / k.width
    colour_table = r["outlines"].GetDisplayNode().GetColorNode()
    hits = 0
    rows, cols = np.nonzero(outlines)
    for row, col in list(zip(rows, cols))[::7]:
        u, v = (col + 0.5) * scale_to_xray - 0.5, (row + 0.5) * scale_to_xray - 0.5
        x, y = _image_to_screen(r, u, v)
        rgba = [0.0] * 4
        colour_table.GetColor(int(outlines[row, col]), rgba)
        expected = np.array(rgba[:3]) * 255
        patch = shot[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2].reshape(-1, 3)
        hits += bool((np.abs(patch - expected).max(1) < 40).any())
    assert hits / len(rows[::7]) > 0.8


def test_checkerboard_view(rendered):
    r = rendered
    r["logic"].display.showCheckerboard(r["xray"], r["slice"])
    shot = _grab(r["red"], r["out"] / "checkerboard_slice_view.png").astype(np.float64).mean(-1)
    assert shot.std() > 10
    r["logic"].display.showXray(r["xray"], r["slice"], opacity=0.45)


def test_threed_view_shows_beam_detector_and_segments(rendered):
    r = rendered
    view = r["threed"]
    pose = r["pose"]
    renderer = view.renderer()
    camera = renderer.GetActiveCamera()
    k = xray_plane.xray_intrinsics(r["xray"])
    detector_centre = pose[:3, 3] + r["detector"].sdd * pose[:3, 2]
    side = pose[:3, 0] * 0.75 - pose[:3, 1] * 0.35 + pose[:3, 2] * 0.75  # beside the beam, behind the detector
    focal = 0.5 * (pose[:3, 3] + detector_centre)
    camera.SetFocalPoint(*focal)
    camera.SetPosition(*(focal + 1900 * side / np.linalg.norm(side)))
    camera.SetViewUp(*(-pose[:3, 1]))
    camera.SetViewAngle(30)
    renderer.ResetCameraClippingRange()
    assert k.width == r["detector"].cols
    shot = _grab(view, r["out"] / "registration_3d_view.png").astype(np.int16)
    red, green, blue = shot[..., 0], shot[..., 1], shot[..., 2]
    yellow = (red > 170) & (green > 130) & (blue < 90) & (red - blue > 100)
    grey = (np.abs(red - green) < 6) & (np.abs(green - blue) < 6) & (red > 60) & (red < 250)
    assert yellow.sum() > 150, "the C-arm beam is not visible"
    assert grey.sum() > 500, "the textured detector plane is not visible"
    # Without the beam model the yellow lines are gone: they were the beam.
    frustum = r["xray"].GetNodeReference(REFERENCE_ROLES["frustum"])
    frustum.GetDisplayNode().SetVisibility(False)
    without = _grab(view, r["out"] / "no_beam.png").astype(np.int16)
    yellow_without = (without[..., 0] > 170) & (without[..., 1] > 130) & (without[..., 2] < 90) & (
        without[..., 0] - without[..., 2] > 100)
    assert yellow_without.sum() < 0.2 * yellow.sum()
    frustum.GetDisplayNode().SetVisibility(True)
    # Segments: warm, saturated surface colours (liver, aorta, vertebrae) somewhere in the picture.
    warm = (red > green + 25) & (green > blue) & (red > 90)
    assert warm.sum() > 200, "the segments are not visible"


def test_threed_view_shows_the_ct_by_volume_rendering(rendered):
    from xvrcore.volume import volume_from_array

    r = rendered
    vr = r["app"].volume_rendering._logic  # Slicer's vtkSlicerVolumeRenderingLogic, registered with the scene
    ct_node = r["scene"].GetFirstNodeByName("CT")
    ct = r["ct"]
    segmentation = volumes.segmentation_from_labelmap(r["scene"], volume_from_array((ct.data > 500).astype(np.int16), ct.affine,
                                                                                  kind="labels"), {1: "dense bone"})
    assert not segmentation.GetSegmentation().ContainsRepresentation("Closed surface")
    assert r["logic"].display.volumeRenderingPreset(ct_node) == "CT-Bone"
    display = r["logic"].display.show3D(ct_node, segmentation, volumeRenderingLogic=vr)
    try:
        assert display.GetVisibility() and vr.GetFirstVolumeRenderingDisplayNode(ct_node) is display
        assert segmentation.GetSegmentation().ContainsRepresentation("Closed surface")
        assert segmentation.GetDisplayNode().GetVisibility3D()
        ramp = display.GetVolumePropertyNode().GetVolumeProperty().GetScalarOpacity()
        assert ramp.GetValue(-1000.0) == 0.0 and ramp.GetValue(1000.0) > 0.0  # bone shows, air does not
        assert r["logic"].display.show3D(ct_node, segmentation, volumeRenderingLogic=vr) is display  # idempotent
        with_vr = _grab(r["threed"], r["out"] / "volume_rendering.png").astype(np.int16)
        display.SetVisibility(False)
        without_vr = _grab(r["threed"], r["out"] / "no_volume_rendering.png").astype(np.int16)
        changed = np.abs(with_vr - without_vr).max(-1) > 30
        assert changed.sum() > 2000, "the volume rendering of the CT is not visible"
    finally:
        display.SetVisibility(False)
        r["scene"].RemoveNode(segmentation)


def _plane_on_screen(r, shot: np.ndarray, step: int = 4):
    """The rendered 3D view sampled where X-ray pixels lie (every ``step``-th, away from the edges):
    (grey seen, the X-ray as displayed (dense dark), exposed)."""
    renderer = r["threed"].renderer()
    import vtk

    m = vtk.vtkMatrix4x4()
    r["xray"].GetIJKToRASMatrix(m)
    ijk_to_ras = np.array([[m.GetElement(i, j) for j in range(4)] for i in range(4)])
    xray = r["logic"].xrays.xray(r["xray"])
    height = shot.shape[0]
    v, u = np.mgrid[6 : xray.pixels.shape[0] - 6 : step, 6 : xray.pixels.shape[1] - 6 : step]
    seen = []
    for uu, vv in zip(u.ravel(), v.ravel()):
        renderer.SetWorldPoint(*(ijk_to_ras @ [uu, vv, 0.0, 1.0])[:3], 1.0)
        renderer.WorldToDisplay()
        x, y, _ = renderer.GetDisplayPoint()
        seen.append(shot[height - 1 - round(y), round(x)])
    return np.array(seen, dtype=np.float64), -xray.pixels[v, u].ravel(), xray.mask[v, u].ravel()


def test_threed_view_detector_plane_shows_the_xray_with_its_contrast(rendered):
    """The textured detector plane in 3D is the X-ray as the slice view shows it (not a washed-out white):
    seen from behind the detector, the plane's grey follows the X-ray's pixels and spans the grey range."""
    r = rendered
    view, pose = r["threed"], r["pose"]
    camera = view.renderer().GetActiveCamera()
    detector_centre = pose[:3, 3] + r["detector"].sdd * pose[:3, 2]
    camera.SetFocalPoint(*detector_centre)
    camera.SetPosition(*(detector_centre + 900.0 * pose[:3, 2]))  # behind the detector: nothing in front of it
    camera.SetViewUp(*(-pose[:3, 1]))
    camera.SetViewAngle(30)
    view.renderer().ResetCameraClippingRange()
    shot = _grab(view, r["out"] / "detector_plane.png").astype(np.float64).mean(-1)
    seen, displayed, exposed = _plane_on_screen(r, shot)
    assert exposed.sum() > 300
    correlation = np.corrcoef(seen[exposed], displayed[exposed])[0, 1]
    low, median, high = np.percentile(seen[exposed], [5, 50, 95])
    assert correlation > 0.95, correlation
    assert high - low > 120, (low, median, high)  # the X-ray's contrast, not a few grey levels near white
    assert 60 < median < 200, (low, median, high)


def _side_view(r) -> None:
    """The 3D camera beside the C-arm beam, behind the detector (the beam, the plane and the segments in view)."""
    pose = r["pose"]
    camera = r["threed"].renderer().GetActiveCamera()
    detector_centre = pose[:3, 3] + r["detector"].sdd * pose[:3, 2]
    side = pose[:3, 0] * 0.75 - pose[:3, 1] * 0.35 + pose[:3, 2] * 0.75
    focal = 0.5 * (pose[:3, 3] + detector_centre)
    camera.SetFocalPoint(*focal)
    camera.SetPosition(*(focal + 1900 * side / np.linalg.norm(side)))
    camera.SetViewUp(*(-pose[:3, 1]))
    camera.SetViewAngle(30)
    r["threed"].renderer().ResetCameraClippingRange()


def _screen(view, slice_node, size):
    """Give a view its size in the layout (the slice node's dimensions follow the view, as in Slicer)."""
    view.render_window().SetSize(*size)
    if slice_node is not None:
        slice_node.SetDimensions(*size, 1)


def test_review_layout_at_real_size(rendered):
    """The review layout at 1280x800: the X-ray with the DRR in colour fusion (amber where the DRR is
    dense, grey elsewhere), the X-ray with the outlines (grey but for the outlines), the 3D view. Rendered
    view by view at their sizes in the layout and put together (trame-slicer renders views, not Qt layouts)."""
    from PIL import Image
    from XVRRegistrationLib.layout import (
        FUSION_COLOR,
        FUSION_VIEW,
        OUTLINE_VIEW,
        REVIEW_VIEW_SIZES,
        THREED_VIEW,
    )

    r = rendered
    assert FUSION_VIEW == "Red"
    outline_slice = r["scene"].GetNodeByID("vtkMRMLSliceNode" + OUTLINE_VIEW)
    _screen(r["red"], r["slice"], REVIEW_VIEW_SIZES[FUSION_VIEW])
    _screen(r["outline_view"], outline_slice, REVIEW_VIEW_SIZES[OUTLINE_VIEW])
    _screen(r["threed"], None, REVIEW_VIEW_SIZES[THREED_VIEW])
    try:
        r["logic"].layout.show(r["xray"], r["slice"], outline_slice, opacity=0.6)
        _side_view(r)
        fusion = _grab(r["red"], r["out"] / "review_fusion.png").astype(np.int16)
        outlined = _grab(r["outline_view"], r["out"] / "review_outlines.png").astype(np.int16)
        threed = _grab(r["threed"], r["out"] / "review_3d.png")
        assert fusion.shape[:2] == (800, 640) and outlined.shape[:2] == threed.shape[:2] == (400, 640)

        # Fusion: amber (red over blue, in the colour's proportions) on the dense part of the DRR, the X-ray's
        # grey elsewhere in the image.
        chroma_fusion = fusion.max(-1) - fusion.min(-1)
        tinted = (fusion[..., 0] - fusion[..., 2]) > 40
        assert 0.05 < tinted.mean() < 0.5, tinted.mean()
        amber = fusion[tinted]
        ratio = np.median((amber[:, 1] - amber[:, 2]) / (amber[:, 0] - amber[:, 2]))
        assert abs(ratio - FUSION_COLOR[1] / FUSION_COLOR[0]) < 0.2, ratio
        grey = (chroma_fusion < 4) & (fusion.mean(-1) > 30)  # untouched X-ray pixels (not the black background)
        assert grey.sum() > 0.5 * tinted.sum(), (grey.sum(), tinted.sum())
        # Outline view: no DRR, so grey wherever no outline is drawn; the outlines in their colours.
        outline_labels = slicer.util.arrayFromVolume(r["outlines"])[0]
        assert outline_labels.any()
        chroma = outlined.max(-1) - outlined.min(-1)
        assert np.median(chroma) < 4 and (chroma > 60).sum() > 200, (np.median(chroma), (chroma > 60).sum())

        picture = np.zeros((REVIEW_SIZE[1], REVIEW_SIZE[0], 3), np.uint8)
        picture[:, :640] = fusion
        picture[:400, 640:] = outlined
        picture[400:, 640:] = threed
        picture[:, 639:641] = picture[399:401, 640:] = 40  # the layout's splitters
        Image.fromarray(picture).save(r["out"] / "review_layout.png")

        r["logic"].display.showCheckerboard(r["xray"], r["slice"])
        board = _grab(r["red"], r["out"] / "checkerboard_slice_view.png")
        assert board.astype(np.float64).mean(-1).std() > 10
        if os.environ.get("XVR_WRITE_SCREENSHOTS"):
            Image.fromarray(picture).save(SCREENSHOTS / "review_layout.png")
            Image.fromarray(board).save(SCREENSHOTS / "checkerboard_slice_view.png")
    finally:
        _screen(r["red"], r["slice"], SLICE_SIZE)
        _screen(r["threed"], None, THREED_SIZE)
        r["logic"].display.showXray(r["xray"], r["slice"], opacity=0.45)
