"""Parts of the training panel beside the template's widget: the device advice (no GPU: the Quick network and
what to expect of it), the 3D preview of sampled C-arm poses, and "keep temporary files".

Each reacts to the parameter node through the widget's one observer (``update``), never through signals of
bound widgets. The widget owns the parameter node; these get it from ``parameterNode()``.
"""

from slicer.i18n import tr as _

from .device_advice import adviceText, suggestedSetup

__all__ = ["PREVIEW_POSES", "DeviceChoice", "PosePreview", "TrainingPanelExtras"]

PREVIEW_POSES = 50  # enough to see the spread of the ranges, few enough to tell the lines apart


class DeviceChoice:
    """The advice label and the "use the suggested network" button (device and profile in the parameter node)."""

    def __init__(self, ui, parameterNode) -> None:
        from XVRCoreLib.slicersupport import cuda_available

        self.ui = ui
        self.parameterNode = parameterNode
        self.cuda = cuda_available()
        self.suggested = suggestedSetup(self.cuda)
        ui.deviceAdviceLabel.text = adviceText(self.cuda)
        ui.useSuggestedProfileButton.text = (
            _("Use the suggested network") if self.suggested is None
            else _("Use the Standard network on the GPU") if self.cuda else _("Use the Quick (CPU) network"))
        ui.useSuggestedProfileButton.connect("clicked(bool)", self.onUseSuggested)

    def onUseSuggested(self) -> None:
        p = self.parameterNode()
        if p is None or self.suggested is None:
            return
        p.device = type(p.device)(self.suggested["device"])
        p.profile = type(p.profile)(self.suggested["profile"])

    def update(self, p) -> None:
        inUse = self.suggested is not None and (p.device.value, p.profile.value) == (
            self.suggested["device"], self.suggested["profile"])
        self.ui.useSuggestedProfileButton.enabled = self.suggested is not None and not inUse


class PosePreview:
    """N C-arm poses sampled from the current ranges, shown in 3D while the checkbox is checked."""

    def __init__(self, ui, logic, parameterNode, scene) -> None:
        self.ui = ui
        self.logic = logic
        self.parameterNode = parameterNode
        self.scene = scene
        self.count = PREVIEW_POSES
        self._shownKey = None  # what the shown poses were sampled from
        ui.posePreviewCheckBox.connect("toggled(bool)", self.onToggled)

    def onToggled(self, checked) -> None:
        if checked:
            self.update(self.parameterNode())
        else:
            self.remove()

    def _key(self, p):
        """What the poses depend on: the ranges (the paper's), orientation, SID, the volume centre."""
        from XVRCoreLib.pose_preview import volume_center

        if p is None or not p.inputVolume or p.inputVolume.GetImageData() is None:
            return None
        ranges = self.logic.customRanges(p)
        return (tuple((name, *values) for name, values in sorted(ranges.items())), p.orientation.value,
                float(p.sid), tuple(volume_center(p.inputVolume)))

    def update(self, p) -> None:
        """Sample and show the poses again if what they depend on changed (nothing while unchecked)."""
        if not self.ui.posePreviewCheckBox.checked:
            return
        try:
            key = self._key(p)
        except (ImportError, ValueError):  # dependencies not installed yet, or a range being edited
            key = None
        if key != self._shownKey:
            self._shownKey = key
            self._show(key)

    def _show(self, key) -> None:
        from XVRCoreLib import pose_preview as preview

        if key is not None:
            ranges, orientation, sid, center = key
            try:
                paper = {name: (low, high) for name, low, high in ranges}
                poses = preview.sampled_poses(paper, orientation, center, self.count)
            except ValueError:  # ranges the sampler refuses (e.g. CRA/CAU at ±90°): nothing to show
                poses = None
            if poses is not None:
                preview.show_pose_preview(self.scene, preview.pose_glyph_polydata(poses, sid))
                return
        preview.remove_pose_preview(self.scene)

    def remove(self) -> None:
        from XVRCoreLib.pose_preview import remove_pose_preview

        self._shownKey = None
        remove_pose_preview(self.scene)

    def sceneClosing(self) -> None:
        """The scene is closed: the preview goes with it, and the checkbox is unchecked."""
        self.ui.posePreviewCheckBox.checked = False
        self.remove()


class TrainingPanelExtras:
    """The three parts, set up on the panel's ``ui`` (after the .ui is loaded) and updated together."""

    def __init__(self, ui, logic, parameterNode, scene) -> None:
        from XVRCoreLib.job_files import bind_keep_checkbox

        bind_keep_checkbox(ui.keepTemporaryFilesCheckBox)  # one setting, shared with XVR Registration
        self.device = DeviceChoice(ui, parameterNode)
        self.preview = PosePreview(ui, logic, parameterNode, scene)

    def update(self, p) -> None:
        if p is None:
            return
        self.device.update(p)
        self.preview.update(p)

    def sceneClosing(self) -> None:
        self.preview.sceneClosing()
