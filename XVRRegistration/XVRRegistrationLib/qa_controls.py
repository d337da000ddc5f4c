"""The QA controls of the registration panel: the pose nudged in clinical terms (LAO/RAO, CRA/CAU, in-plane
rotation, pan, magnification), undo, back to the registered pose, and their keyboard shortcuts.

Qt code only (``qt`` imported inside the methods); the pose arithmetic is :mod:`.qa_poses`, the undo stack
and the registered pose :mod:`.pose_review` (the logic's ``review``). The shortcuts belong to the module
panel's widget (``qt.QShortcut``, active while the panel is shown in Slicer's window: enabled on enter,
disabled on exit); each one clicks its button, so it does exactly what the button does and nothing
while the button is disabled. Every button's tooltip names its shortcut (:data:`SHORTCUTS`).
"""

import slicer
from slicer.i18n import tr as _

from .panel import PanelSection

__all__ = ["QA_BUTTONS", "SHORTCUTS", "QAControls", "shortcutHelp"]

# button -> (qa_poses move, sign, the parameter holding the step)
QA_BUTTONS = {
    "laoButton": ("lao", 1, "nudgeRotation"), "raoButton": ("lao", -1, "nudgeRotation"),
    "cranialButton": ("cranial", 1, "nudgeRotation"), "caudalButton": ("cranial", -1, "nudgeRotation"),
    "rotateZPlusButton": ("roll", 1, "nudgeRotation"), "rotateZMinusButton": ("roll", -1, "nudgeRotation"),
    "panLeftButton": ("panRight", -1, "nudgeTranslation"), "panRightButton": ("panRight", 1, "nudgeTranslation"),
    "panUpButton": ("panDown", -1, "nudgeTranslation"), "panDownButton": ("panDown", 1, "nudgeTranslation"),
    "magnifyPlusButton": ("magnify", 1, "nudgeDepth"), "magnifyMinusButton": ("magnify", -1, "nudgeDepth"),
}

# button -> key sequence (Alt: Slicer's own shortcuts use Ctrl, its menus Alt+letter of File/Edit/View/Help)
SHORTCUTS = {
    "panLeftButton": "Alt+Left", "panRightButton": "Alt+Right", "panUpButton": "Alt+Up", "panDownButton": "Alt+Down",
    "raoButton": "Alt+Shift+Left", "laoButton": "Alt+Shift+Right",
    "caudalButton": "Alt+Shift+Down", "cranialButton": "Alt+Shift+Up",
    "rotateZMinusButton": "Alt+[", "rotateZPlusButton": "Alt+]",
    "magnifyMinusButton": "Alt+-", "magnifyPlusButton": "Alt+=",
    "undoPoseButton": "Alt+Z", "registeredPoseButton": "Alt+B",
    "markCheckedButton": "Alt+K", "nextToCheckButton": "Alt+N",
}


def shortcutHelp(ui) -> str:
    """One line per shortcut: "Alt+Left: Pan left" (for the module's help)."""
    return "\n".join(f"{keys}: {getattr(ui, name).text}" for name, keys in SHORTCUTS.items())


class QAControls(PanelSection):
    """Wires the QA buttons and shortcuts to the logic's pose review; shows the X-ray again after each change."""

    def __init__(self, ui, logic, parameterNode, log, show, shortcutParent) -> None:
        PanelSection.__init__(self, ui, logic, parameterNode, log)
        self._show = show  # shows an X-ray with its overlays (XraySection.show)
        self._shortcutParent = shortcutParent  # the module panel's widget
        self.shortcuts = {}  # button name -> qt.QShortcut

    def connect(self) -> None:
        import qt

        for name, (move, sign, step) in QA_BUTTONS.items():
            getattr(self.ui, name).connect("clicked()", lambda m=move, s=sign, k=step: self.onMove(m, s, k))
        self.ui.undoPoseButton.connect("clicked()", self.onUndo)
        self.ui.registeredPoseButton.connect("clicked()", self.onBackToRegistered)
        for name, keys in SHORTCUTS.items():
            button = getattr(self.ui, name)
            shortcut = qt.QShortcut(qt.QKeySequence(keys), self._shortcutParent)
            shortcut.connect("activated()", button.click)
            self.shortcuts[name] = shortcut
            button.toolTip = f"{button.toolTip} ({keys})"

    def setShortcutsEnabled(self, enabled: bool) -> None:
        for shortcut in self.shortcuts.values():
            shortcut.setEnabled(bool(enabled))

    def _xray(self):
        p = self._parameterNode()
        xray = p.xrayVolume if p is not None else None
        return xray if xray is not None and self.logic.xrays.isXray(xray) and self.logic.poses.poseNode(xray) else None

    def updateButtons(self, running: bool = False) -> None:
        """Moves need an X-ray with a pose; undo a pose to go back to; "registered" a result."""
        xray = None if running else self._xray()
        for name in QA_BUTTONS:
            getattr(self.ui, name).enabled = xray is not None
        self.ui.undoPoseButton.enabled = xray is not None and self.logic.review.canUndo(xray)
        self.ui.registeredPoseButton.enabled = xray is not None and self.logic.review.registeredPose(xray) is not None

    def _changed(self, xray) -> None:
        self._show(xray)
        self.updateButtons()

    def onMove(self, move, sign, stepParameter) -> None:
        xray = self._xray()
        if xray is None:
            return
        p = self._parameterNode()
        with slicer.util.tryWithErrorDisplay(_("Failed to move the pose."), waitCursor=True):
            self.logic.review.move(xray, move, sign * float(getattr(p, stepParameter)), p.inputVolume)
            self._changed(xray)

    def onUndo(self) -> None:
        xray = self._xray()
        if xray is not None and self.logic.review.undo(xray):
            self._changed(xray)

    def onBackToRegistered(self) -> None:
        xray = self._xray()
        if xray is not None and self.logic.review.backToRegistered(xray):
            self._changed(xray)
