"""The CT fingerprint that ties a model to its CT."""

import numpy as np
from xvrcore.volume import Volume, volume_fingerprint


def test_volume_fingerprint_sees_voxels_and_geometry():
    data = np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    base = volume_fingerprint(Volume(data, affine))
    assert base == volume_fingerprint(Volume(data.astype(np.float64), affine.astype(np.float32)))
    changed = data.copy()
    changed[3, 3, 3] += 1
    assert volume_fingerprint(Volume(changed, affine)) != base
    shifted = affine.copy()
    shifted[0, 3] = 1.0
    assert volume_fingerprint(Volume(data, shifted)) != base
