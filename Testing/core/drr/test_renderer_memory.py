"""Memory is bounded: a 128×128 batch of 32 renders (forward and backward) in under 2 GB extra RAM
on the 512×512×150 pelvis CT, even from the full-resolution level."""

import json
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import json, sys, torch
    from xvrcore.volume.attenuation import to_attenuation
    from xvrcore.geometry.carm import carm_pose
    from xvrcore.geometry import Detector
    from xvrcore.drr import DRRVolume, render
    from xvrcore.volume import load_volume

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) / 1024  # MiB
        raise KeyError(key)

    torch.set_num_threads(2)
    ct = load_volume(sys.argv[1])
    vol = DRRVolume.from_volume(to_attenuation(ct))
    k = Detector(1020.0, 128, 128, 2.1764375, 2.1764375).intrinsics()
    g = torch.Generator().manual_seed(0)
    params = torch.zeros(32, 6)
    params[:, 0] = torch.rand(32, generator=g) * 40 - 20
    params[:, 1] = torch.rand(32, generator=g) * 20 - 10
    params[:, 4] = 850.0
    iso = torch.as_tensor(ct.center)
    level = int(sys.argv[2])
    render(vol, carm_pose(params[:1], "AP", iso).float(), k, level=level)  # build caches (setup)
    with open("/proc/self/clear_refs", "w") as fh:  # reset the peak-RSS counter (Linux)
        fh.write("5")
    base = status("VmRSS")
    params.requires_grad_(True)
    img = render(vol, carm_pose(params, "AP", iso).float(), k, level=level)
    img.mean().backward()
    assert torch.isfinite(params.grad).all()
    print(json.dumps({"extra_mb": status("VmHWM") - base, "shape": list(img.shape)}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak RSS from /proc (Linux)")
@pytest.mark.parametrize("level", [0, 1])
def test_batch_of_32_fits_in_2_gb(pelvis_ct_path, level):
    out = subprocess.run([sys.executable, "-c", CHILD, str(pelvis_ct_path), str(level)],
                         capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["shape"] == [32, 1, 128, 128]
    assert result["extra_mb"] < 2048, result
