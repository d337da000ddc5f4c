"""Training-run state on disk: safetensors + JSON that keep the types of keys and tuples."""

import torch
from xvrcore.learning.run_state import load_state, save_state


def test_training_state_round_trip_keeps_types(tmp_path):
    opt = torch.optim.Adam([torch.nn.Parameter(torch.randn(3, 2))], lr=1e-3)
    opt.param_groups[0]["params"][0].grad = torch.ones(3, 2)
    opt.step()
    state = {"optimizer": opt.state_dict(), "iteration": 7, "history": [{"mtre_mm": 1.5}], "pair": (1, "a")}
    save_state(tmp_path, state)
    back = load_state(tmp_path)
    assert back["iteration"] == 7 and back["pair"] == (1, "a") and back["history"] == [{"mtre_mm": 1.5}]
    assert list(back["optimizer"]["state"]) == [0]  # integer keys stay integers
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    opt2 = torch.optim.Adam([torch.nn.Parameter(torch.randn(3, 2))], lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
