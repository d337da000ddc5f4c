"""XVRCore: hidden helper module that makes the ``xvrcore`` package importable inside Slicer.

Slicer appends the folder of every scripted module it registers to ``sys.path``. The Slicer-free core
library ``xvrcore`` lives next to this file (and is installed next to it), so registering this otherwise
empty module is what lets XVRTraining and XVRRegistration ``import xvrcore``: from the source tree (with
the extension folders added as additional module paths) and from an installed extension alike.
Plain pytest gets the same import through ``pythonpath = ["XVRCore"]`` in pyproject.toml.

Keep this file tiny and free of heavy imports: Slicer loads it at startup.
"""

from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule


class XVRCore(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "XVRCore"
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Registration")]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerXVR developers"]
        self.parent.helpText = _("Hidden module that provides the xvrcore Python package to the XVR modules.")
        self.parent.acknowledgementText = _("Part of the SlicerXVR extension.")
        self.parent.hidden = True
