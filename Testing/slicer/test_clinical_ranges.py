"""XVRCoreLib.clinical_ranges: training ranges in LAO/RAO, CRA/CAU, roll, SOD, table offsets ↔ the paper's."""

from __future__ import annotations

import itertools

import pytest
import torch


@pytest.fixture(scope="module")
def clinical(registration_module):
    from XVRCoreLib import clinical_ranges

    return clinical_ranges


def test_round_trip_clinical_to_paper_to_clinical(clinical):
    ranges = clinical.ClinicalRanges((-30, 60), (-20, 25), (-10, 5), (500, 900), (-40, 70), (-15, 35), sid=1100)
    for orientation in ("PA", "AP"):
        back = clinical.from_paper(clinical.to_paper(ranges, orientation), orientation, sid=1100)
        assert back == ranges


def test_known_preset_values(clinical):
    from xvrcore.learning.sampling import PRESETS

    pelvis = PRESETS["pelvis"]
    got = clinical.from_paper(pelvis.ranges.to_dict(), pelvis.ranges.orientation, sid=pelvis.sdd)
    assert got.primary == (-45, 45) and got.secondary == (-45, 45) and got.roll == (-15, 15)
    assert got.sod == (450, 1000) and got.lateral == (-150, 150) and got.longitudinal == (-150, 150)
    assert got.sid == 1020.0
    neuro = PRESETS["neurovasculature"]  # AP frame: α −45…90 is LAO 135° … 270° (RAO 90°), y 700…800 the SOD
    got = clinical.from_paper(neuro.ranges.to_dict(), neuro.ranges.orientation)
    assert got.primary == (135, 270) and got.secondary == (-5, 5) and got.sod == (700, 800)
    assert clinical.angle_text(got.primary[1], got.secondary[0]) == "RAO 90° / CAU 5°"


def test_same_clinical_pose_in_both_frames_and_dicom_meaning(clinical):
    """A clinical pose gives one camera in the PA and the AP frame, and LAO/CRA mean what DICOM says."""
    from xvrcore.geometry.carm import carm_pose
    from xvrcore.geometry.positioner import pose_from_positioner

    for primary, secondary, roll, lateral, longitudinal in itertools.product((-60, 35), (-20, 15), (0, 12), (0, 30),
                                                                             (0, -25)):
        point = clinical.ClinicalRanges(*((v, v) for v in (primary, secondary, roll, 800, lateral, longitudinal)))
        poses = []
        for orientation in ("PA", "AP"):
            paper = clinical.to_paper(point, orientation)
            params = torch.tensor([paper[n][0] for n in clinical.PAPER_NAMES], dtype=torch.float64)
            poses.append(carm_pose(params, orientation))
        torch.testing.assert_close(poses[0], poses[1])
        if roll == lateral == longitudinal == 0:  # the nominal positioner pose: DICOM's LAO+/CRA+
            beam = pose_from_positioner(primary, secondary, 800.0, torch.zeros(3))[:3, 2]
            torch.testing.assert_close(poses[0][:3, 2], beam)


def test_bad_orientation_is_refused(clinical):
    with pytest.raises(ValueError, match="orientation"):
        clinical.to_paper(clinical.ClinicalRanges(*[(0, 1)] * 6), "LR")
