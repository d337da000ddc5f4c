"""The fingerprint that ties a model to the CT it was trained on: a SHA-256 of the volume's voxels and grid."""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["volume_fingerprint"]


def volume_fingerprint(volume) -> str:
    """Hex SHA-256 of a volume's voxels (as little-endian float32, C order), shape and affine.

    ``volume``: anything with ``data`` (a ``(K, J, I)`` array) and ``affine`` (4×4), e.g. a
    :class:`~xvrcore.volume.Volume`. The affine is rounded to 1e-4 mm so that float32/float64 round
    trips of the same file agree.
    """
    digest = hashlib.sha256(b"xvrcore-volume-v1")
    data = np.ascontiguousarray(volume.data, dtype="<f4")
    digest.update(repr(tuple(data.shape)).encode())
    digest.update(np.round(np.asarray(volume.affine, dtype=np.float64), 4).astype("<f8").tobytes())
    digest.update(memoryview(data).cast("B"))
    return digest.hexdigest()
