"""xvrcore: the Slicer-free core of SlicerXVR — registering intraoperative X-rays to a preoperative CT/MRA.

The conventions every part shares (world, camera, intrinsics, mirrored views, the result JSON) are in
:mod:`xvrcore.conventions`. The subpackages are layers, lowest first, and each imports only from the
layers below it (README, "Layout"):

``geometry`` → ``io`` → ``volume`` → ``metrics`` → ``drr`` → ``xray`` → ``learning`` → ``registration`` → ``app``

The main API is importable from here; ``import xvrcore`` itself stays cheap (no torch) and loads a
name's subpackage on first use::

    from xvrcore import load_volume, to_attenuation, DRRVolume, read_xray, register, pose_from_xray

Nothing here imports Slicer, VTK or Qt.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> the module that defines it (loaded on first access).
_API = {
    "Detector": "xvrcore.geometry",
    "Intrinsics": "xvrcore.geometry",
    "CameraPose": "xvrcore.geometry",
    "camera_pose": "xvrcore.geometry",
    "carm_pose": "xvrcore.geometry",
    "pose_from_xray": "xvrcore.geometry",
    "read_pose_json": "xvrcore.io",
    "write_pose_json": "xvrcore.io",
    "read_pose_transform": "xvrcore.io",
    "write_pose_transform": "xvrcore.io",
    "Volume": "xvrcore.volume",
    "load_volume": "xvrcore.volume",
    "load_labelmap": "xvrcore.volume",
    "to_attenuation": "xvrcore.volume",
    "DRRVolume": "xvrcore.drr",
    "render": "xvrcore.drr",
    "read_xray": "xvrcore.xray",
    "XrayImage": "xvrcore.xray",
    "RegistrationSettings": "xvrcore.registration",
    "register": "xvrcore.registration",
    "PipelineSettings": "xvrcore.registration",
    "register_inputs": "xvrcore.registration",
    "solve_pnp": "xvrcore.registration",
}

__all__ = ["__version__", *_API]  # noqa: PLE0604 (the keys of _API are strings)


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xvrcore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
