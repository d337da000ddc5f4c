"""Slicer-side helpers shared by the XVR modules (the ``xvrcore`` package itself stays Slicer-free)."""
