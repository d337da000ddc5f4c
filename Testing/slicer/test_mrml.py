"""XVRCoreLib's MRML helpers (volumes, xray_plane, poses, views, markups, scene) against real MRML scenes
(the ``slicer-core`` wheel: Slicer's own C++ data model and IO).

Volumes keep xvrcore's exact affine; the X-ray sits where the renderer's rays hit the detector; transform
nodes carry camera → world in the direction Slicer saves and loads; outlines lie on projected segments;
landmarks placed on the X-ray come back as pixels; a scene survives a .mrb round trip.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
torch = pytest.importorskip("torch")

from slicertest_utils import TORSO, new_scene, true_pose
from xvrcore.drr import DRRVolume, structure_masks
from xvrcore.geometry.camera import Detector, Intrinsics, backproject, project
from xvrcore.io.itk_transform import read_pose_transform, write_pose_transform
from xvrcore.registration import solve_pnp
from xvrcore.volume import load_volume, volume_from_array
from xvrcore.volume.attenuation import to_attenuation
from xvrcore.volume.labels import structure_volumes
from XVRCoreLib import markups, poses, views, volumes, vtkdata, xray_plane
from XVRCoreLib.scene import REFERENCE_ROLES, load_scene_mrb, module_parameter, save_scene_mrb

KEPT = {5: "liver", 52: "aorta", 31: "vertebra"}  # TotalSegmentator ids in the crop


def _kept_labels(labels):
    data = np.where(np.isin(labels.data, list(KEPT)), labels.data, 0).astype(np.int16)
    return labels.with_data(data)


def _ijk_to_ras(node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return vtkdata.array_from_vtk_matrix(m)


# ---- volumes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("relative", [TORSO / "torso_ct_3mm_crop30.nii.gz", "open/ct/head_skull_dbdicom/head_ct.nii.gz"])
def test_ct_loaded_by_slicer_matches_xvrcore(scene, shared_data, relative):
    """Slicer's reader and xvrcore's give the same voxels at the same RAS positions (LPS→RAS alike)."""
    path = shared_data / relative
    node = volumes.load_volume_node(scene, path)
    ours = load_volume(path)
    np.testing.assert_allclose(_ijk_to_ras(node), ours.affine, atol=1e-4)
    back = volumes.volume_from_node(node)
    np.testing.assert_allclose(back.affine, ours.affine, atol=1e-4)
    np.testing.assert_array_equal(back.data, ours.data)


def test_volume_round_trip_is_exact_and_follows_parent_transforms(scene, torso_crop):
    ct, _ = torso_crop
    node = volumes.volume_node_from_volume(scene, ct, name="CT")
    back = volumes.volume_from_node(node)
    np.testing.assert_array_equal(back.affine, ct.affine)
    np.testing.assert_array_equal(back.data, ct.data)
    moved = np.eye(4)
    moved[:3, 3] = [10.0, -5.0, 2.0]
    transform = poses.pose_transform_node(scene, moved, name="shift")
    node.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(volumes.volume_from_node(node).affine, moved @ ct.affine)


def test_segmentation_round_trip_keeps_labels_names_and_colours(scene, torso_crop):
    ct, labels = torso_crop
    kept = _kept_labels(labels)
    colors = {5: (200, 100, 50), 52: (220, 30, 30), 31: (240, 240, 200)}
    ct_node = volumes.volume_node_from_volume(scene, ct, name="CT")
    segmentation = volumes.segmentation_from_labelmap(scene, kept, KEPT, colors)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 3
    exported, names, got_colors = volumes.segmentation_labelmap(segmentation, ct_node)
    np.testing.assert_allclose(exported.affine, ct.affine, atol=1e-6)
    by_name = {name: label for label, name in names.items()}
    for original, name in KEPT.items():
        np.testing.assert_array_equal(exported.data == by_name[name], kept.data == original)
        assert got_colors[by_name[name]] == colors[original]


# ---- the X-ray on its detector plane ------------------------------------------------------------------------


@pytest.mark.parametrize("mirrored", [True, False])
def test_xray_pixel_centres_lie_where_the_rays_hit_the_detector(scene, mirrored):
    detector = Detector(1100.0, 60, 90, 1.3, 1.7, principal_offset=(6.0, -4.0), mirrored=mirrored)
    k = detector.intrinsics()
    pose = true_pose((10.0, -20.0, 35.0), 35.0, -15.0, roll=7.0)
    image = np.arange(60 * 90, dtype=np.float32).reshape(60, 90)
    node = xray_plane.xray_volume_node(scene, image, pose.numpy(), k, detector.sdd, name="X-ray")
    m = _ijk_to_ras(node)
    assert np.linalg.det(m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0)) == pytest.approx(1.0)
    pixels = torch.tensor([[0.0, 0.0], [89.0, 0.0], [0.0, 59.0], [44.0, 30.0], [k.cx, k.cy]], dtype=torch.float64)
    source, directions = backproject(pose, k, pixels)
    d_cam = torch.stack([(pixels[:, 0] - k.cx) / k.fx, (pixels[:, 1] - k.cy) / k.fy, torch.ones(5, dtype=torch.float64)], 1)
    expected = source[0] + directions[0] * (detector.sdd * d_cam.norm(dim=1))[:, None]  # depth sdd along +z
    ijk = np.c_[pixels.numpy(), np.zeros(5), np.ones(5)]
    np.testing.assert_allclose((ijk @ m.T)[:, :3], expected.numpy(), atol=1e-6)
    # The voxels are the image: row 0 of the array is the first image row.
    values = slicer.util.arrayFromVolume(node)
    np.testing.assert_array_equal(values[0], image)
    # Each pixel centre projects back onto itself.
    uv, depth = project(torch.as_tensor((ijk @ m.T)[:, :3]), torch.linalg.inv(pose), k)
    np.testing.assert_allclose(uv[0].numpy(), pixels.numpy(), atol=1e-6)
    np.testing.assert_allclose(depth[0].numpy() / d_cam[:, 2].numpy(), detector.sdd)
    # Intrinsics and distance survive as attributes (the panel re-derives the plane from them).
    assert xray_plane.xray_intrinsics(node) == k and xray_plane.xray_depth(node) == detector.sdd


def test_slice_view_aligned_to_the_xray_shows_first_row_on_top(scene):
    detector = Detector(1000.0, 40, 64, 2.0, 2.0)
    k = detector.intrinsics()
    pose = true_pose((0.0, 0.0, 0.0), -40.0, 25.0)
    node = xray_plane.xray_volume_node(scene, np.zeros((40, 64), np.float32), pose.numpy(), k, detector.sdd)
    slice_node = scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    slice_node.SetLayoutName("Red")
    slice_node.SetDimensions(300, 200, 1)
    slice_node.SetOrientationToAxial()
    views.align_slice_to_xray(slice_node, node)
    s = vtkdata.array_from_vtk_matrix(slice_node.GetSliceToRAS())
    m = _ijk_to_ras(node)
    columns, rows = m[:3, 0] / np.linalg.norm(m[:3, 0]), m[:3, 1] / np.linalg.norm(m[:3, 1])
    np.testing.assert_allclose(s[:3, 0], columns, atol=1e-9)  # screen right = increasing column
    np.testing.assert_allclose(s[:3, 1], -rows, atol=1e-9)  # screen up = decreasing row
    np.testing.assert_allclose(s[:3, 3], (m @ [31.5, 19.5, 0, 1])[:3], atol=1e-9)  # image centre in the middle
    fov = slice_node.GetFieldOfView()
    assert fov[0] >= 64 * 2.0 and fov[1] >= 40 * 2.0 and fov[1] / fov[0] == pytest.approx(200 / 300)


# ---- poses as transform nodes --------------------------------------------------------------------------------


def test_transform_node_maps_camera_to_world(scene):
    pose = true_pose((5.0, 7.0, -3.0), 30.0, 10.0).numpy()
    node = poses.pose_transform_node(scene, pose)
    to_parent = node.GetTransformToParent()
    # The source (camera origin) lands at the pose's translation; a point 1 m down the beam along +z.
    np.testing.assert_allclose(to_parent.TransformPoint((0.0, 0.0, 0.0)), pose[:3, 3], atol=1e-9)
    np.testing.assert_allclose(to_parent.TransformPoint((0.0, 0.0, 1000.0)), pose[:3, 3] + 1000 * pose[:3, 2], atol=1e-9)
    np.testing.assert_allclose(poses.pose_from_transform_node(node), pose, atol=1e-12)
    with pytest.raises(ValueError):
        poses.set_pose(node, np.diag([1.0, 1.0, -1.0, 1.0]))  # a reflection is not a C-arm pose


@pytest.mark.parametrize("suffix", [".h5", ".tfm"])
def test_transforms_saved_by_slicer_read_back_in_xvrcore_and_the_reverse(scene, tmp_path, suffix):
    pose = true_pose((5.0, 7.0, -3.0), -25.0, 15.0).numpy()
    node = poses.pose_transform_node(scene, pose)
    saved = poses.save_transform_node(node, tmp_path / f"pose{suffix}")
    np.testing.assert_allclose(read_pose_transform(saved), pose, atol=1e-9)
    # ... and the .tfm that `xvrcore register` writes loads as the same node.
    ours = write_pose_transform(tmp_path / f"ours{suffix}", pose)
    loaded = poses.load_transform_node(scene, ours)
    np.testing.assert_allclose(poses.pose_from_transform_node(loaded), pose, atol=1e-9)


def test_frustum_under_the_pose_transform_reaches_the_detector_corners(scene):
    detector = Detector(1000.0, 50, 70, 2.0, 2.0)
    k = detector.intrinsics()
    pose = true_pose((0.0, 0.0, 0.0), 10.0, 5.0)
    transform = poses.pose_transform_node(scene, pose.numpy())
    model = xray_plane.frustum_model_node(scene, k, detector.sdd, transform)
    from xvrcore.geometry.camera import frustum_corners

    points = slicer.util.arrayFromModelPoints(model)
    world = points @ pose.numpy()[:3, :3].T + pose.numpy()[:3, 3]
    np.testing.assert_allclose(world, frustum_corners(pose, k, detector.sdd)[0].numpy(), atol=1e-6)


# ---- outlines and landmarks --------------------------------------------------------------------------------


def test_outline_pixels_lie_on_the_projected_segment(scene, torso_crop):
    ct, labels = torso_crop
    ct_node = volumes.volume_node_from_volume(scene, ct, name="CT")
    segmentation = volumes.segmentation_from_labelmap(scene, _kept_labels(labels), KEPT)
    exported, names, _ = volumes.segmentation_labelmap(segmentation, ct_node)
    detector = Detector(1000.0, 96, 128, 1.5, 1.5)
    k = detector.intrinsics()
    pose = true_pose(ct.center, 15.0, -10.0)
    structures = {label: DRRVolume.from_volume(v) for label, v in structure_volumes(exported, sorted(names)).items()}
    masks = structure_masks(structures, pose.numpy(), k)
    outlines = views.outline_labels(masks)
    node = xray_plane.xray_volume_node(scene, outlines, pose.numpy(), k, detector.sdd, class_name="vtkMRMLLabelMapVolumeNode")
    stored = slicer.util.arrayFromVolume(node)[0]
    np.testing.assert_array_equal(stored, outlines)
    for label, name in names.items():
        rows, cols = np.nonzero(stored == label)
        voxels = exported.ijk_to_ras(np.argwhere(exported.data == label)[:, ::-1].astype(np.float64))
        uv = project(torch.as_tensor(voxels), torch.linalg.inv(pose), k)[0][0].numpy()
        assert rows.size > 10, name
        # Every outline pixel is within ~a voxel's footprint of a projected voxel centre of its segment ...
        grid = np.zeros(stored.shape, bool)
        inside = (uv[:, 0] > -0.5) & (uv[:, 0] < k.width - 0.5) & (uv[:, 1] > -0.5) & (uv[:, 1] < k.height - 0.5)
        grid[np.round(uv[inside, 1]).astype(int), np.round(uv[inside, 0]).astype(int)] = True
        near = np.zeros_like(grid)
        for dr in range(-2, 3):
            for dc in range(-2, 3):
                near |= np.roll(np.roll(grid, dr, 0), dc, 1)
        assert near[rows, cols].mean() > 0.97, name
        # ... and the outline spans the projected segment.
        assert abs(cols.min() - uv[inside, 0].min()) < 3 and abs(cols.max() - uv[inside, 0].max()) < 3, name
        assert abs(rows.min() - uv[inside, 1].min()) < 3 and abs(rows.max() - uv[inside, 1].max()) < 3, name


def test_landmarks_placed_on_the_xray_become_pixels_and_recover_the_pose(scene, torso_crop):
    ct, _ = torso_crop
    detector = Detector(1000.0, 120, 120, 1.6, 1.6)
    k = detector.intrinsics()
    truth = true_pose(ct.center, 25.0, -12.0)
    rng = np.random.default_rng(3)
    points_3d = ct.center + rng.uniform(-60, 60, size=(7, 3))
    pixels = project(torch.as_tensor(points_3d), torch.linalg.inv(truth), k)[0][0].numpy()
    # The X-ray node is shown at a rough start pose; the user clicks the points on it in a slice view.
    start = true_pose(ct.center, 20.0, -5.0, roll=0.0, offset=(0.0, 0.0))
    node = xray_plane.xray_volume_node(scene, np.zeros((120, 120), np.float32), start.numpy(), k, detector.sdd)
    m = _ijk_to_ras(node)
    on_xray = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "X-ray points")
    in_ct = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "CT points")
    order = [3, 0, 6, 1, 5, 2, 4]
    for i, (u, v) in enumerate(pixels):
        on_xray.AddControlPoint(*(m @ [u, v, 0.0, 1.0])[:3].tolist(), f"L{i}")
    for i in order:  # placed in another order: paired by label
        in_ct.AddControlPoint(*points_3d[i].tolist(), f"L{i}")
    p2, p3, names = markups.landmarks_from_markups(on_xray, in_ct, start.numpy(), k)
    np.testing.assert_allclose(p2, pixels, atol=1e-6)
    np.testing.assert_allclose(p3, points_3d, atol=1e-6)
    assert names == [f"L{i}" for i in range(7)]
    fit = solve_pnp(p2, p3, k)
    np.testing.assert_allclose(fit.camera_to_world, truth.numpy(), atol=1e-4)


# ---- scenes ---------------------------------------------------------------------------------------------------


def test_scene_survives_an_mrb_round_trip(scene, torso_crop, tmp_path):
    ct, labels = torso_crop
    volumes.volume_node_from_volume(scene, ct, name="CT")
    volumes.segmentation_from_labelmap(scene, _kept_labels(labels), KEPT, name="Structures")
    detector = Detector(1000.0, 48, 64, 2.0, 2.0)
    k = detector.intrinsics()
    pose = true_pose(ct.center, 10.0, 5.0).numpy()
    transform = poses.pose_transform_node(scene, pose, name="X-ray pose")
    image = np.random.default_rng(0).random((48, 64)).astype(np.float32)
    xray = xray_plane.xray_volume_node(scene, image, pose, k, detector.sdd, name="X-ray", attributes={"Role": "xray"})
    xray.SetNodeReferenceID(REFERENCE_ROLES["pose"], transform.GetID())
    frustum = xray_plane.frustum_model_node(scene, k, detector.sdd, transform)
    xray.SetNodeReferenceID(REFERENCE_ROLES["frustum"], frustum.GetID())
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "CT points")
    points.AddControlPoint(1.0, 2.0, 3.0, "P")
    parameters = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "XVRTraining")
    parameters.SetAttribute("ModuleName", "XVRTraining")
    parameters.SetParameter("trainedModel", str(tmp_path / "model"))

    bundle = save_scene_mrb(scene, tmp_path / "scene.mrb")
    other = new_scene(tmp_path / "cache2")
    load_scene_mrb(other, bundle)

    def named(name):
        nodes = other.GetNodesByName(name)
        assert nodes.GetNumberOfItems() == 1, name
        return nodes.GetItemAsObject(0)

    ct2, xray2 = named("CT"), named("X-ray")
    np.testing.assert_allclose(_ijk_to_ras(ct2), ct.affine, atol=1e-4)
    np.testing.assert_array_equal(volumes.volume_from_node(ct2).data, ct.data)
    np.testing.assert_allclose(_ijk_to_ras(xray2), _ijk_to_ras(xray), atol=1e-4)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(xray2)[0], image)
    assert xray_plane.xray_intrinsics(xray2) == k and xray2.GetAttribute("XVR.Role") == "xray"
    pose2 = xray2.GetNodeReference(REFERENCE_ROLES["pose"])
    np.testing.assert_allclose(poses.pose_from_transform_node(pose2), pose, atol=1e-9)
    frustum2 = xray2.GetNodeReference(REFERENCE_ROLES["frustum"])
    assert frustum2.GetParentTransformNode().GetID() == pose2.GetID()
    assert named("Structures").GetSegmentation().GetNumberOfSegments() == 3
    assert markups.markups_points_world(named("CT points"))[0].tolist() == [[1.0, 2.0, 3.0]]
    assert module_parameter(other, "XVRTraining", "trainedModel") == str(tmp_path / "model")


def test_xray_volume_node_refuses_an_image_of_another_size(scene):
    k = Intrinsics(-500.0, 500.0, 31.5, 19.5, 64, 40)
    with pytest.raises(ValueError, match="does not match"):
        xray_plane.xray_volume_node(scene, np.zeros((64, 40)), np.eye(4), k, 1000.0)


def test_attenuation_volume_from_a_node_renders(scene, torso_crop):
    """The CT node is a valid input of the renderer (what the panel's DRR overlay uses)."""
    ct, _ = torso_crop
    node = volumes.volume_node_from_volume(scene, ct, name="CT")
    volume = DRRVolume.from_volume(to_attenuation(volumes.volume_from_node(node)))
    k = Intrinsics(-400.0, 400.0, 15.5, 15.5, 32, 32)
    from xvrcore.drr import render

    with torch.no_grad():
        image = render(volume, true_pose(ct.center, 0.0, 0.0).float(), k)
    assert image.shape == (1, 1, 32, 32) and float(image.max()) > 0
    assert volume_from_array(ct.data, ct.affine).same_grid(volumes.volume_from_node(node))


def test_an_xray_node_written_as_dicom_reads_back_with_its_geometry_mask_and_angles(scene, tmp_path):
    """What a scene's X-ray node holds is what xvrcore's reader gets from the DICOM written from it (the
    registration of a scene whose DICOM moved): intrinsics with the principal point off centre, any
    exposure mask, the header's angles and distance, the pixels up to the reader's offset."""
    from xvrcore.xray import read_xray
    from XVRCoreLib.scene import set_attributes
    from XVRCoreLib.xray_dicom import write_xray_node_dicom

    detector = Detector(1100.0, 50, 70, 0.6, 0.5, principal_offset=(3.0, -2.4))
    k = detector.intrinsics()
    rows, cols = np.mgrid[:50, :70]
    mask = (rows - 24.0) ** 2 + (cols - 36.0) ** 2 < 22.0**2  # a round field with a blade and a shadow:
    mask[:, :6] = False  # no shutter tag can say it
    mask[20:32, 30:42] = False
    image = (np.random.default_rng(1).random((50, 70)) * 3.0 + rows / 25.0).astype(np.float32)
    node = xray_plane.xray_volume_node(scene, image, np.eye(4), k, detector.sdd, name="IM 1",
                                       attributes={"Role": "xray", "Modality": "XA"})
    xray_plane.set_xray_mask(node, mask)
    set_attributes(node, {"Positioner": {"primary_angle": -31.5, "secondary_angle": 12.25, "sod": 742.0,
                                         "patient_position": "HFS"}})
    np.testing.assert_array_equal(xray_plane.xray_mask(node), mask)
    assert xray_plane.xray_detector(node).intrinsics() == pytest.approx(k)

    back = read_xray(write_xray_node_dicom(node, tmp_path / "IM 1.dcm"))
    for name in ("fx", "fy", "cx", "cy"):
        assert getattr(back.intrinsics, name) == pytest.approx(getattr(k, name), rel=1e-9), name
    assert (back.intrinsics.width, back.intrinsics.height) == (70, 50)
    assert back.detector.sdd == pytest.approx(1100.0)
    np.testing.assert_array_equal(back.mask, mask)
    assert (back.primary_angle, back.secondary_angle, back.sod) == pytest.approx((-31.5, 12.25, 742.0))
    assert back.patient_position == "HFS"
    offset = back.pixels[mask] - image[mask]
    assert np.ptp(offset) < 1e-3 * np.ptp(image[mask])  # one offset, 16-bit steps

    set_attributes(node, {"Positioner": None})  # a header without angles stays without
    assert read_xray(write_xray_node_dicom(node, tmp_path / "no angles.dcm")).primary_angle is None
