"""Competitor DRR renderers for side-by-side benchmarks (DiffDRR 0.6.1, nanodrr 0.1.7).

Everything here is expressed in **DiffDRR's own convention**, which is the shared convention of
this file (see ``/work/shared/notes/xvr-upstream.md`` §7):

* World frame: "centred RAS" -- the CT's torchio (RAS+, mm) affine translated so that the volume
  centre ``image.get_center()`` is the origin (``diffdrr.data.read(..., orientation="AP",
  center_volume=True)``).
* Pose: a ``(B, 4, 4)`` camera-to-world matrix (``diffdrr.pose.RigidTransform`` semantics), e.g.
  ``diffdrr.pose.convert(rot, xyz, parameterization="euler_angles", convention="ZXY")`` which is
  ``[R | R @ xyz]`` with ``R = Rz(rot[0]) @ Rx(rot[1]) @ Ry(rot[2])`` (radians).
* Detector: ``sdd`` mm, ``height == width`` px, ``delx == dely`` mm/px, ``x0 = y0 = 0``,
  orientation ``"AP"``, ``reverse_x_axis=False``.  Output ``(B, H, W)``; row 0 is camera +y, column
  0 is camera -x (for AP with rot 0 and xyz (0, 850, 0): row 0 = superior, column 0 = patient left).

nanodrr <-> DiffDRR mapping (derived from the two packages' sources, verified by
``verify_alignment``):

* nanodrr's camera is a Hartley-Zisserman pinhole: pixel centre ``(u, v) = (j + 1/2, i + 1/2)``
  maps to the camera point ``sdd * K^-1 (u, v, 1) = ((u - W/2) delx, (v - H/2) dely, sdd)``, i.e.
  camera +y points *down* the image.  DiffDRR puts pixel ``(i, j)`` at
  ``((j - W/2 + 1/2) delx, -(i - H/2 + 1/2) dely, sdd)`` (``reverse_x_axis=False``).  So
  ``p_diffdrr = F @ p_nano`` with ``F = diag(1, -1, 1)``.
* nanodrr's world frame is the *uncentred* torchio RAS frame (``Subject.world_to_voxel`` is the
  inverse of ``image.affine``), DiffDRR's is centred, so ``world_nano = world_diffdrr + iso`` with
  ``iso = image.get_center()`` (``Subject.isocenter``).
* DiffDRR: ``world = P @ reorient_AP @ p_diffdrr`` with ``reorient_AP = [[1,0,0],[0,0,-1],[0,1,0]]``.
* Hence nanodrr's ``rt_inv`` (camera-to-world) for a DiffDRR pose ``P`` is
  ``rt_inv = T(iso) @ P @ M`` with ``M = reorient_AP @ F = [[1,0,0],[0,0,-1],[0,-1,0]]`` (det -1).
  nanodrr's own ``make_rt_inv(orientation="AP")`` uses ``[[-1,0,0],[0,0,-1],[0,-1,0]]`` (det +1),
  which is DiffDRR's ``reverse_x_axis=True`` (radiological, left-right mirrored) image; we do not
  use it because the shared convention is ``reverse_x_axis=False``.
* ``nanodrr.geometry.convert(rot, xyz, "euler", "ZXY", degrees=False)`` builds the same
  ``[R | R @ xyz]`` matrix as DiffDRR's ``convert`` (roma's upper-case = intrinsic ZXY).

HU -> attenuation models (package defaults, ``bone_attenuation_multiplier=1.0``):

* DiffDRR ``transform_hu_to_density``: HU <= -800 -> min soft-tissue HU; -800 < HU <= 350 kept;
  HU > 350 times ``bone_attenuation_multiplier``; then min-max normalised to [0, 1] (unitless).
  DRR = sum(density * step_mm).
* nanodrr ``hu_to_mu``: clamp HU >= -1000; mu = mu_w (1 + HU/1000) for HU <= 0, mu_w + (mu_b - mu_w)
  HU/hu_bone for HU > 0 (mu_w = 0.0192/mm, mu_b = 0.0573/mm, hu_bone = 1000, ~70 keV); clamp >= 0.
  DRR = sum(mu * step_mm) (line integral, no exp).  The intensity scales differ; compare with NCC.

Only the packages' public APIs are used.
"""

from __future__ import annotations

import math
import os
import time
from importlib import metadata
from pathlib import Path

import torch


def _default_ct() -> str:
    """The shared pelvis CT: ``$XVR_SHARED_DATA`` or ``shared/data`` beside the repository."""
    root = os.environ.get("XVR_SHARED_DATA") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
    return str(Path(root) / "open" / "ct" / "pelvis_vhf" / "pelvis_ct_vhf_1mm.nii.gz")


DEFAULT_CT = _default_ct()

# Camera (DiffDRR, reverse_x_axis=False) -> world for orientation "AP", composed with the
# nanodrr(HZ) -> DiffDRR camera flip F = diag(1, -1, 1).  See module docstring.
_NANO_CAM_TO_DIFFDRR_AP = torch.tensor(
    [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, -1.0, 0.0],
        [0.0, -1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def make_poses(rot, xyz, batch_size: int = 1, degrees: bool = False) -> torch.Tensor:
    """DiffDRR-convention camera-to-world matrices ``(B, 4, 4)`` float32 from euler ZXY + xyz.

    Uses DiffDRR's own ``convert``; ``rot``/``xyz`` are length-3 sequences (one pose repeated
    ``batch_size`` times) or ``(B, 3)`` arrays.
    """
    from diffdrr.pose import convert

    rot = torch.as_tensor(rot, dtype=torch.float32).reshape(-1, 3)
    xyz = torch.as_tensor(xyz, dtype=torch.float32).reshape(-1, 3)
    if rot.shape[0] == 1 and batch_size > 1:
        rot, xyz = rot.expand(batch_size, 3), xyz.expand(batch_size, 3)
    return convert(rot, xyz, parameterization="euler_angles", convention="ZXY", degrees=degrees).matrix


class _Competitor:
    package = ""
    renderer = ""

    def describe(self) -> dict:
        raise NotImplementedError

    def render(self, poses: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def render_with_grad(self, rot: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _DiffDRRBase(_Competitor):
    package = "diffdrr"
    _renderer = ""

    def __init__(self, ct_path: str = DEFAULT_CT, sdd: float = 1020.0, height: int = 128,
                 delx: float = 2.1764375, device: str = "cpu", **method_options):
        from diffdrr.data import read
        from diffdrr.drr import DRR

        self.device = torch.device(device)
        self.sdd, self.height, self.delx = float(sdd), int(height), float(delx)
        # Options for the DRR constructor vs. per-call renderer kwargs (Trilinear's n_points etc.).
        self.forward_kwargs = {k: method_options.pop(k) for k in list(method_options)
                               if k in ("n_points", "alphamin", "alphamax", "align_corners")}
        self.method_options = dict(method_options)
        subject = read(ct_path, orientation="AP", bone_attenuation_multiplier=1.0, center_volume=True)
        self.drr = DRR(subject, sdd=self.sdd, height=self.height, delx=self.delx, width=self.height,
                       dely=self.delx, x0=0.0, y0=0.0, reverse_x_axis=False, renderer=self._renderer,
                       **method_options).to(self.device)
        self.volume_shape = tuple(self.drr.density.shape)
        del subject

    def render(self, poses: torch.Tensor) -> torch.Tensor:
        from diffdrr.pose import RigidTransform

        poses = torch.as_tensor(poses, dtype=torch.float32, device=self.device).reshape(-1, 4, 4)
        with torch.no_grad():
            img = self.drr(RigidTransform(poses), **self.forward_kwargs)
        return img[:, 0]

    def render_with_grad(self, rot: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
        img = self.drr(rot.reshape(-1, 3), xyz.reshape(-1, 3), parameterization="euler_angles",
                       convention="ZXY", **self.forward_kwargs)
        return img[:, 0]

    def describe(self) -> dict:
        return {
            "package": self.package,
            "version": _version("diffdrr"),
            "renderer": self._renderer,
            "backend": "pure PyTorch (grid_sample)",
            "hu_to_density": "DiffDRR transform_hu_to_density (piecewise, min-max to [0,1]), "
                             "bone_attenuation_multiplier=1.0",
            "voxel_shift": getattr(self.drr.renderer, "voxel_shift", None),
            **self._sampling(),
            "constructor_options": self.method_options,
        }


class DiffDRRTrilinear(_DiffDRRBase):
    """DiffDRR ``renderer="trilinear"``: ``n_points`` (default 500) uniform samples over the
    *global* (min over all rays of the batch, max over all rays) ray/volume intersection interval,
    trilinear ``grid_sample``, rectangle rule."""

    _renderer = "trilinear"

    def _sampling(self) -> dict:
        n = self.forward_kwargs.get("n_points", 500)
        return {"n_points": n, "sampling": f"{n} uniform points per ray over the batch-global "
                                           "[alphamin, alphamax] (trilinear grid_sample)"}


class DiffDRRSiddon(_DiffDRRBase):
    """DiffDRR ``renderer="siddon"``: exact voxel-plane intersections (sum(dims)+3 per ray),
    midpoint lookup with ``grid_sample`` mode ``"nearest"`` (default), weighted by segment length."""

    _renderer = "siddon"

    def _sampling(self) -> dict:
        n = sum(d + 1 for d in self.volume_shape)
        return {"n_points": n, "sampling": f"Siddon: all {n} voxel-plane crossings per ray, "
                                           f"mode={getattr(self.drr.renderer, 'mode', '?')!r}"}


class NanoDRR(_Competitor):
    """nanodrr with its CPU path (``backend="torch"``: the reference pure-PyTorch ``grid_sample``
    ray marcher; the fused Triton/Metal kernels need CUDA/MPS).  Default quality: ``n_samples=500``
    midpoint samples per ray, each ray clipped to the volume box individually, trilinear.

    ``method_options``: ``n_samples`` (default 500), ``backend`` (default ``"auto"``, which is
    ``"torch"`` on CPU), ``orthographic`` (False), and HU->mu kwargs (``mu_water``, ``mu_bone``,
    ``hu_bone``, ``convert_to_mu``).
    """

    package = "nanodrr"

    def __init__(self, ct_path: str = DEFAULT_CT, sdd: float = 1020.0, height: int = 128,
                 delx: float = 2.1764375, device: str = "cpu", **method_options):
        from nanodrr.data import Subject
        from nanodrr.drr import DRR

        self.device = torch.device(device)
        self.sdd, self.height, self.delx = float(sdd), int(height), float(delx)
        opts = dict(method_options)
        self.n_samples = int(opts.pop("n_samples", 500))
        self.backend = opts.pop("backend", "auto")
        orthographic = bool(opts.pop("orthographic", False))
        self.method_options = dict(method_options)
        self.subject = Subject.from_filepath(ct_path, **opts).to(self.device)
        _ = self.subject.image  # build (and cache) the HU -> mu volume once, outside the timing
        self.drr = DRR.from_carm_intrinsics(sdd=self.sdd, delx=self.delx, dely=self.delx, x0=0.0, y0=0.0,
                                            height=self.height, width=self.height,
                                            orthographic=orthographic, dtype=torch.float32,
                                            device=self.device)
        iso = self.subject.isocenter.to(torch.float32)
        t_iso = torch.eye(4)
        t_iso[:3, 3] = iso.cpu()
        self._pre = t_iso.to(self.device)  # centred-RAS -> scanner RAS
        self._post = _NANO_CAM_TO_DIFFDRR_AP.to(self.device)

    def rt_inv_from_diffdrr(self, poses: torch.Tensor) -> torch.Tensor:
        """nanodrr camera-to-world ``rt_inv`` for DiffDRR-convention poses ``(B, 4, 4)``."""
        return self._pre @ poses @ self._post

    def render(self, poses: torch.Tensor) -> torch.Tensor:
        poses = torch.as_tensor(poses, dtype=torch.float32, device=self.device).reshape(-1, 4, 4)
        with torch.no_grad():
            img = self.drr(self.subject, self.rt_inv_from_diffdrr(poses), n_samples=self.n_samples,
                           backend=self.backend)
        return img[:, 0]

    def render_with_grad(self, rot: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
        from nanodrr.geometry import convert

        pose = convert(rot.reshape(-1, 3), xyz.reshape(-1, 3), "euler", convention="ZXY", degrees=False)
        img = self.drr(self.subject, self.rt_inv_from_diffdrr(pose), n_samples=self.n_samples,
                       backend=self.backend)
        return img[:, 0]

    def describe(self) -> dict:
        backend = self.backend
        if backend == "auto":
            backend = {"cuda": "triton (if eligible, else torch)", "mps": "metal (if eligible, else torch)"}.get(
                self.device.type, "torch")
        return {
            "package": self.package,
            "version": _version("nanodrr"),
            "renderer": "ray marching (trilinear grid_sample)",
            "backend": backend,
            "hu_to_density": f"nanodrr hu_to_mu (bilinear air-water/water-bone, mu_water="
                             f"{self.subject.mu_water}, mu_bone={self.subject.mu_bone}, "
                             f"hu_bone={self.subject.hu_bone}) [1/mm]",
            "n_points": self.n_samples,
            "sampling": f"{self.n_samples} midpoint samples per ray, each ray clipped to the volume box",
            "constructor_options": self.method_options,
        }


COMPETITORS = {
    "diffdrr_trilinear": DiffDRRTrilinear,
    "diffdrr_siddon": DiffDRRSiddon,
    "nanodrr": NanoDRR,
}


def ncc(a: torch.Tensor, b: torch.Tensor) -> float:
    """Global normalised cross-correlation of two images (any shape), in [-1, 1]."""
    a = a.detach().double().flatten()
    b = b.detach().double().flatten()
    a = a - a.mean()
    b = b - b.mean()
    return float((a @ b) / (a.norm() * b.norm() + 1e-12))


def grad_ncc(a: torch.Tensor, b: torch.Tensor) -> float:
    """NCC of the finite-difference gradient images (both axes stacked); far more sensitive to
    mirroring/misregistration than the global NCC of smooth DRRs."""
    a, b = a.detach().double(), b.detach().double()
    ga = torch.cat([a.diff(dim=-1).flatten(), a.diff(dim=-2).flatten()])
    gb = torch.cat([b.diff(dim=-1).flatten(), b.diff(dim=-2).flatten()])
    return ncc(ga, gb)


def verify_marker(ct_path: str = DEFAULT_CT, sdd: float = 1020.0, height: int = 128,
                  delx: float = 2.1764375, n_threads: int = 2, tmpdir: str = "/tmp") -> dict:
    """Absolute-orientation check: a CT-shaped volume of air with one bright 5x5x5-voxel cube at an
    off-centre voxel (patient right, posterior, superior of the centre).  Each renderer's brightest
    pixel must land where DiffDRR's own ``perspective_projection`` puts the cube's world centre.
    Also checks the AP rot=0 layout of the notes (section 7): patient right -> last columns,
    superior -> top rows."""
    import os

    import torchio as tio

    torch.set_num_threads(n_threads)
    img = tio.ScalarImage(ct_path)
    data = torch.full_like(img.data, -1000)
    data[0, 0, 0, 0] = 0  # DiffDRR's HU->density needs at least one soft-tissue voxel
    ijk = (180, 330, 120)  # voxel index of the marker centre (i, j, k) in the file's array order
    data[0, ijk[0] - 2:ijk[0] + 3, ijk[1] - 2:ijk[1] + 3, ijk[2] - 2:ijk[2] + 3] = 1500
    path = os.path.join(tmpdir, "xvr_bench_marker.nii.gz")
    tio.ScalarImage(tensor=data, affine=img.affine).save(path)
    world = img.affine @ [*ijk, 1.0]
    marker_centred_ras = torch.tensor(world[:3] - img.get_center(), dtype=torch.float32)

    d = math.pi / 180
    poses = {"AP": ((0.0, 0.0, 0.0), (0.0, 850.0, 0.0)),
             "oblique": ((30 * d, 20 * d, 5 * d), (10.0, 800.0, -20.0))}
    rs = {"diffdrr_trilinear": DiffDRRTrilinear(path, sdd, height, delx),
          "diffdrr_siddon": DiffDRRSiddon(path, sdd, height, delx),
          "nanodrr": NanoDRR(path, sdd, height, delx)}
    out = {"marker_centred_ras_mm": marker_centred_ras.tolist()}
    for pname, (rot, xyz) in poses.items():
        P = make_poses(rot, xyz)
        from diffdrr.pose import RigidTransform

        uv = rs["diffdrr_trilinear"].drr.perspective_projection(RigidTransform(P), marker_centred_ras[None, None])
        # perspective_projection returns (x=u, y=v) with pixel centres at (j + 1/2, i + 1/2)
        u, v = uv[0, 0].tolist()
        entry = {"expected_row_col": (v - 0.5, u - 0.5)}
        for name, r in rs.items():
            im = r.render(P)[0]
            i, j = divmod(int(im.argmax()), im.shape[-1])
            # intensity-weighted centroid of the marker blob
            w = (im - im.min()).clamp(min=0)
            w = w * (w > 0.5 * w.max())
            ii, jj = torch.meshgrid(torch.arange(im.shape[0]), torch.arange(im.shape[1]), indexing="ij")
            entry[name] = {"argmax_row_col": (i, j),
                           "centroid_row_col": (float((w * ii).sum() / w.sum()), float((w * jj).sum() / w.sum()))}
        out[pname] = entry
    return out


def verify_alignment(ct_path: str = DEFAULT_CT, sdd: float = 1020.0, height: int = 128,
                     delx: float = 2.1764375, n_threads: int = 2) -> dict:
    """Render three poses with DiffDRR-trilinear, DiffDRR-Siddon and nanodrr; report NCCs between
    them, NCCs against flipped images (to detect mirroring), and intensity scales."""
    torch.set_num_threads(n_threads)
    d = math.pi / 180
    cases = {
        "AP rot=(0,0,0) xyz=(0,850,0)": ((0.0, 0.0, 0.0), (0.0, 850.0, 0.0)),
        "lateral rot=(90,0,0) xyz=(0,850,0)": ((90 * d, 0.0, 0.0), (0.0, 850.0, 0.0)),
        "oblique rot=(30,20,5) xyz=(10,800,-20)": ((30 * d, 20 * d, 5 * d), (10.0, 800.0, -20.0)),
    }
    tri = DiffDRRTrilinear(ct_path, sdd, height, delx)
    sid = DiffDRRSiddon(ct_path, sdd, height, delx)
    nano = NanoDRR(ct_path, sdd, height, delx)
    out = {}
    for name, (rot, xyz) in cases.items():
        P = make_poses(rot, xyz)
        a, s, n = tri.render(P)[0], sid.render(P)[0], nano.render(P)[0]
        # Same pose through nanodrr's own convert (render_with_grad path) must give the same image.
        n2 = nano.render_with_grad(torch.tensor([rot]), torch.tensor([xyz]))[0].detach()
        out[name] = {
            "ncc_trilinear_vs_nanodrr": ncc(a, n),
            "ncc_trilinear_vs_siddon": ncc(a, s),
            "ncc_siddon_vs_nanodrr": ncc(s, n),
            "ncc_nanodrr_render_vs_render_with_grad": ncc(n, n2),
            "ncc_trilinear_vs_nanodrr_flipLR": ncc(a, n.flip(-1)),
            "ncc_trilinear_vs_nanodrr_flipUD": ncc(a, n.flip(-2)),
            "ncc_trilinear_vs_siddon_flipLR": ncc(a, s.flip(-1)),
            "ncc_trilinear_vs_siddon_flipUD": ncc(a, s.flip(-2)),
            "gradncc_trilinear_vs_nanodrr": grad_ncc(a, n),
            "gradncc_trilinear_vs_siddon": grad_ncc(a, s),
            "gradncc_trilinear_vs_nanodrr_flipLR": grad_ncc(a, n.flip(-1)),
            "gradncc_trilinear_vs_nanodrr_flipUD": grad_ncc(a, n.flip(-2)),
            "max_trilinear": float(a.max()), "max_siddon": float(s.max()), "max_nanodrr": float(n.max()),
        }
    return out


def bench(competitor: str, ct_path: str = DEFAULT_CT, sdd: float = 1020.0, height: int = 128,
          delx: float = 2.1764375, batch_size: int = 1, mode: str = "forward", min_seconds: float = 3.0,
          warmup: int = 1, n_threads: int = 2, rot=(0.0, 0.0, 0.0), xyz=(0.0, 850.0, 0.0),
          method_options: dict | None = None, device: str = "cpu", mark_baseline=None) -> dict:
    """One benchmark point, meant to run in a fresh process via ``harness.run_isolated``.

    ``rot``/``xyz``: one pose (length 3, repeated ``batch_size`` times) or one per image ``(B, 3)``.
    ``mode``: ``"forward"`` (``render``, no grad) or ``"forward_backward"`` (``render_with_grad`` on
    leaf rot/xyz with requires_grad, then ``img.mean().backward()``).  ``mark_baseline`` (injected by
    the harness) is called after the volume is loaded and the poses are built, so the reported
    ``extra_peak_mb`` is the memory of rendering only.  Pass ``min_seconds=0, warmup=0`` for a single
    call (memory probes).
    """
    import sys
    from pathlib import Path

    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from harness import measure_throughput  # sibling module (pure Python)

    torch.set_num_threads(int(n_threads))
    cls = COMPETITORS[competitor]
    t0 = time.perf_counter()
    r = cls(ct_path, sdd, height, delx, device=device, **(method_options or {}))
    setup_s = time.perf_counter() - t0
    B = int(batch_size)
    if mode == "forward":
        poses = make_poses(rot, xyz, B).to(device)

        def fn():
            return r.render(poses)
    elif mode == "forward_backward":
        rot_t = torch.as_tensor(rot, dtype=torch.float32).reshape(-1, 3).expand(B, 3).clone().to(device)
        xyz_t = torch.as_tensor(xyz, dtype=torch.float32).reshape(-1, 3).expand(B, 3).clone().to(device)
        rot_t.requires_grad_(True)
        xyz_t.requires_grad_(True)

        def fn():
            rot_t.grad = None
            xyz_t.grad = None
            img = r.render_with_grad(rot_t, xyz_t)
            img.mean().backward()
            return img
    else:
        raise ValueError(f"mode must be 'forward' or 'forward_backward', not {mode!r}")
    if mark_baseline is not None:
        mark_baseline()
    res = measure_throughput(fn, B, min_seconds=min_seconds, warmup=warmup)
    res.update(competitor=competitor, mode=mode, batch_size=B, height=int(height), setup_s=setup_s,
               n_threads=torch.get_num_threads(), torch_version=torch.__version__, describe=r.describe())
    return res
