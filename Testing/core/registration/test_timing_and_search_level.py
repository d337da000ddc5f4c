"""The time estimate said before a registration, and the grid search's CT level."""

from dataclasses import replace

import pytest
import torch
from xvrcore.registration import SearchSettings, Stage
from xvrcore.registration.problem import Problem
from xvrcore.registration.search import best_candidate
from xvrcore.registration.timing import estimate_seconds


def test_the_estimate_grows_with_the_detector_and_falls_with_the_device():
    small, large = estimate_seconds(256, 256), estimate_seconds(1024, 1024)
    assert large.median_s > small.median_s and large.p90_s > small.p90_s > small.median_s
    assert estimate_seconds(512, 512, "cuda:0").median_s < estimate_seconds(512, 512, "cpu").median_s
    assert estimate_seconds(512, 512, threads=1).median_s > estimate_seconds(512, 512, threads=2).median_s
    assert small.text().startswith("about ") and "per X-ray" in small.text()
    with pytest.raises(ValueError, match="at least one pixel"):
        estimate_seconds(0, 512)


class _Recording(Problem):
    """A problem that records the CT level bias of every render (and scores every DRR alike)."""

    def score(self, poses, stage):
        self.levels.append(stage.lod_bias)
        return torch.zeros(poses.reshape(-1, 4, 4).shape[0])


@pytest.mark.parametrize("lod_bias, expected", [(2.5, 2.5), (None, 1.25)])
def test_the_search_scores_its_candidates_at_its_own_ct_level(lod_bias, expected):
    problem = _Recording(None, torch.zeros(8, 8), None, None, torch.zeros(3, dtype=torch.float64))
    object.__setattr__(problem, "levels", levels := [])  # a frozen dataclass: the record is added as Python allows
    search = replace(SearchSettings(translation_mm=10.0, step_mm=10.0), lod_bias=lod_bias)
    best_candidate(problem, torch.eye(4, dtype=torch.float64), search, Stage(40, 1, 0.1, 1.0, lod_bias=1.25))
    assert levels and set(levels) == {expected}
