"""Random C-arm poses for training pose-regression networks (xvr paper, Methods M.3, Table S2).

Each parameter of the paper's C-arm pose ``(α, β, γ, x, y, z)`` (degrees, mm; see
:mod:`xvrcore.geometry.carm`) is drawn from its own uniform range, and the six numbers map to our
``camera_to_world`` about the volume centre with :func:`xvrcore.geometry.carm.carm_pose`.

Presets are the paper's Table S2 ranges with the canonical detector the reference implementation
trained each anatomy with (128 px images; DeepFluoro's 1020 mm / 278.6 mm field of view for the
pelvis, Ljubljana's for the neurovasculature, the skull study's for the skull). In Table S2 the
pelvis and skull ranges have ``y < 0``: the source is posterior, which is the ``"PA"`` orientation;
the neurovascular ranges have ``y > 0`` and ``"AP"``.

All randomness comes from explicit ``torch.Generator`` objects; :func:`keyed_generator` derives
one from a seed and any integer keys (e.g. the iteration and the rank), so a batch can be
regenerated exactly after a restart without saving any random state.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace

import torch

from ..geometry.carm import carm_parameters, carm_pose

__all__ = [
    "PRESETS",
    "PoseRanges",
    "Preset",
    "get_preset",
    "keyed_generator",
    "recover_parameters",
    "sample_parameters",
    "sample_poses",
    "with_orientation",
]

_NAMES = ("alpha", "beta", "gamma", "x", "y", "z")


@dataclass(frozen=True)
class PoseRanges:
    """Uniform ranges (min, max) of the paper's C-arm parameters: degrees and mm."""

    alpha: tuple[float, float]
    beta: tuple[float, float]
    gamma: tuple[float, float]
    x: tuple[float, float]
    y: tuple[float, float]
    z: tuple[float, float]
    orientation: str = "PA"

    def __post_init__(self) -> None:
        if self.orientation.upper() not in ("AP", "PA"):
            raise ValueError(f"orientation must be 'AP' or 'PA', got {self.orientation!r}")
        object.__setattr__(self, "orientation", self.orientation.upper())
        for name in _NAMES:
            lo, hi = (float(v) for v in getattr(self, name))
            # Table S2 writes the pelvis depth as "-450 … -1000": accept either order.
            object.__setattr__(self, name, (min(lo, hi), max(lo, hi)))
        if not -90.0 < self.beta[0] <= self.beta[1] < 90.0:
            raise ValueError(f"beta must stay inside (-90°, 90°) (the ZXY Euler singularity), got {self.beta}")

    def bounds(self) -> torch.Tensor:
        """``(2, 6)`` float64: minima and maxima in the order α, β, γ, x, y, z."""
        return torch.tensor([[getattr(self, n)[i] for n in _NAMES] for i in (0, 1)], dtype=torch.float64)

    def middle(self) -> torch.Tensor:
        """``(6,)`` float64 centre of the ranges (the "average" pose)."""
        return self.bounds().mean(0)

    def to_dict(self) -> dict:
        return {**{n: list(getattr(self, n)) for n in _NAMES}, "orientation": self.orientation}

    @classmethod
    def from_dict(cls, data: dict) -> PoseRanges:
        return cls(**{n: tuple(data[n]) for n in _NAMES}, orientation=data.get("orientation", "PA"))

    def contains(self, params: torch.Tensor, atol: float = 1e-6) -> torch.Tensor:
        """Whether parameters ``(..., 6)`` lie in the ranges (angles compared modulo 360°)."""
        lo, hi = self.bounds().to(params)
        p = params.clone()
        # Angles come back from matrices in (-180°, 180°]; move them into each range if they can be.
        p[..., :3] = lo[:3] + torch.remainder(p[..., :3] - lo[:3], 360.0)
        return ((p >= lo - atol) & (p <= hi + atol)).all(-1)


@dataclass(frozen=True)
class Preset:
    """Pose ranges plus the canonical detector the reference implementation used with them."""

    name: str
    ranges: PoseRanges
    sdd: float  # source-to-detector distance, mm
    field_of_view: float  # detector side, mm (square)
    description: str = field(default="", compare=False)

    def pixel_spacing(self, image_size: int) -> float:
        return self.field_of_view / image_size

    def to_dict(self) -> dict:
        return {**asdict(self), "ranges": self.ranges.to_dict()}


PRESETS: dict[str, Preset] = {
    "pelvis": Preset(
        "pelvis",
        PoseRanges((-45, 45), (-45, 45), (-15, 15), (-150, 150), (-1000, -450), (-150, 150), "PA"),
        sdd=1020.0,
        field_of_view=128 * 2.1764375,  # DeepFluoro: 1436 px × 0.194 mm
        description="Table S2 pelvis (DeepFluoro / CTPelvic1K); source posterior",
    ),
    "neurovasculature": Preset(
        "neurovasculature",
        PoseRanges((-45, 90), (-5, 5), (-5, 5), (-25, 25), (700, 800), (-25, 25), "AP"),
        sdd=1250.0,
        field_of_view=128 * 2.31,
        description="Table S2 neurovasculature (Ljubljana / NITRC MRA)",
    ),
    "skull": Preset(
        "skull",
        PoseRanges((-125, 125), (-45, 45), (-15, 15), (-200, 200), (-1000, -500), (-200, 200), "PA"),
        sdd=1000.0,
        field_of_view=128 * 2.0,
        description="Table S2 skull (Brigham / TotalSegmentator); source posterior",
    ),
}


def get_preset(name: str) -> Preset:
    key = name.lower().replace("-", "").replace("_", "")
    aliases = {"neuro": "neurovasculature", "vessels": "neurovasculature", "head": "skull"}
    key = aliases.get(key, key)
    if key not in PRESETS:
        raise ValueError(f"unknown pose preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[key]


def keyed_generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded from ``(seed, *keys)`` by hashing, so nearby keys give unrelated streams."""
    digest = hashlib.sha256(repr((int(seed), *map(int, keys))).encode()).digest()
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return gen


def sample_parameters(ranges: PoseRanges, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, 6)`` float64 parameters ``(α, β, γ, x, y, z)``, each uniform in its range."""
    lo, hi = ranges.bounds()
    u = torch.rand(n, 6, generator=generator, dtype=torch.float64)
    return lo + u * (hi - lo)


def sample_poses(
    ranges: PoseRanges, n: int, generator: torch.Generator | None = None, isocenter=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``camera_to_world`` poses ``(n, 4, 4)`` (float64) and their parameters ``(n, 6)``.

    ``isocenter``: RAS position (mm) about which the paper's parameters are defined, normally the
    volume centre (``Volume.center``).
    """
    params = sample_parameters(ranges, n, generator)
    return carm_pose(params, ranges.orientation, isocenter), params


def recover_parameters(camera_to_world: torch.Tensor, ranges: PoseRanges, isocenter=None) -> torch.Tensor:
    """The paper's parameters of poses, with angles shifted by 360° into ``ranges`` where possible."""
    params = carm_parameters(camera_to_world, ranges.orientation, isocenter)
    lo = ranges.bounds()[0].to(params)
    params[..., :3] = lo[:3] + torch.remainder(params[..., :3] - lo[:3], 360.0)
    return params


def with_orientation(ranges: PoseRanges, orientation: str) -> PoseRanges:
    """The same ranges read in another orientation (no conversion: a different set of poses)."""
    return replace(ranges, orientation=orientation)
