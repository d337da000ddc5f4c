"""What the panel tests do as a user or a background process would (shared by the test files; the same as
test_panels' own helpers, which came first). Nothing here imports slicer at the top: the ``slicer`` package
imports every module of this folder when it is first imported (its ``extend_path``), so a test module that
imported another one at the top could meet it half-initialized.
"""

from __future__ import annotations

import json
import sys
import time

__all__ = ["fake_registration_result", "fake_training", "import_xrays", "poll_until_finished"]


def import_xrays(panel, synthetic_xrays, names=("view_a", "view_b")) -> dict:
    """Import X-rays as the Import button does; {name: X-ray node}."""
    import slicer

    panel.xraySection._import([str(synthetic_xrays[name][0]) for name in names])
    return {name: node for name in names for node in panel.logic.xrays.xrayNodes(slicer.mrmlScene)
            if node.GetName() == name}


def poll_until_finished(panel, deadline_s: float = 120.0) -> None:
    """Poll the panel's job as its timer would until the job ends."""
    deadline = time.monotonic() + deadline_s
    while panel._job.running:
        panel.onPoll()
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.05)


def fake_training(folder, code: str):
    """A TrainingJob whose process is a tiny script (the panel's handling of its end is what is tested)."""
    from XVRTrainingLib.job import TrainingJob

    return TrainingJob([sys.executable, "-c", code], folder / "run").start()


def fake_registration_result(xray, camera_to_world, folder, **extra):
    """A RegistrationJob whose process reports one finished X-ray (stem ``view_a``) with the pose
    ``camera_to_world`` and ``extra`` entries of its result JSON (e.g. ``quality``)."""
    from xvrcore.geometry.pose import camera_pose
    from xvrcore.io.events import PREFIX
    from xvrcore.io.pose_json import write_pose_json
    from XVRCoreLib.xray_plane import xray_intrinsics
    from XVRRegistrationLib.job import RegistrationJob

    folder.mkdir(parents=True, exist_ok=True)
    result = write_pose_json(folder / "view_a.json", camera_pose(xray_intrinsics(xray), camera_to_world, **extra))
    done = {"event": "input_done", "stem": "view_a", "sop_instance_uid": None, "json": str(result)}
    code = f"print({PREFIX + json.dumps(done)!r})"
    return RegistrationJob([[sys.executable, "-c", code]], folder / "job", [{"view_a": (xray, None)}]).start()
