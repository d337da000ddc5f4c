"""Pose-regression network: a ResNet encoder and two linear heads (xvr paper, Methods M.3).

The encoder is a ResNet-18/34 written in plain torch with GroupNorm (batch statistics would
differ between training batches and single intraoperative images) and one input channel. Its
modules carry timm's names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0`` …,
under ``backbone.``) and the heads are ``xyz_regression`` and ``rot_regression``, so the
reference implementation's state dicts load unchanged (:mod:`xvrcore.learning.xvr_import`).

Decoding (:class:`PoseSpec`): the rotation head's vector becomes ``R`` through one of the
reference's parameterisations, the translation head's ``t = offset + scale · output`` (xvr:
offset 0, scale ``unit_conversion_factor``; ours: the middle and half-width of the sampled
ranges, so an untrained network already points at the anatomy), and the pose is the paper's
``[R | R t]`` re-expressed in our camera convention for the model's AP/PA orientation
(:func:`xvrcore.geometry.carm.carm_pose`). The result is a ``camera_to_world`` in the *centred* frame of
the volume (origin at its centre, RAS axes); :func:`to_world` places it in the CT's RAS frame,
after an optional frame correction for models trained on another volume (finetuning, M.4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..geometry.carm import carm_pose
from ..geometry.rotations import (
    axis_angle_to_matrix,
    euler_to_matrix,
    make_rigid,
    matrix_to_axis_angle,
    matrix_to_euler,
    matrix_to_quaternion,
    quaternion_to_matrix,
    rotation_6d_to_matrix,
    rotation_9d_to_matrix,
)

__all__ = [
    "ARCHITECTURES",
    "PARAMETERIZATIONS",
    "ArchitectureSpec",
    "BasicBlock",
    "InputSpec",
    "PoseModel",
    "PoseRegressor",
    "PoseSpec",
    "ResNet",
    "decode_pose",
    "decode_rotation",
    "encode_rotation",
    "from_world",
    "minmax",
    "prepare_input",
    "to_world",
]

ARCHITECTURES = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
PARAMETERIZATIONS = {
    "axis_angle": 3,
    "euler_angles": 3,
    "quaternion": 4,
    "rotation_6d": 6,
    "rotation_9d": 9,
    "rotation_10d": 10,
    "quaternion_adjugate": 10,
}


# ---- encoder ---------------------------------------------------------------------------------------


def _norm(channels: int) -> nn.GroupNorm:
    # timm's "groupnorm" is GroupNorm(32 groups); narrower test networks use one channel per group.
    return nn.GroupNorm(min(32, channels), channels)


class BasicBlock(nn.Module):
    """timm's ResNet BasicBlock (two 3×3 convolutions and a residual)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = _norm(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _norm(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), _norm(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act2(y + shortcut)


class ResNet(nn.Module):
    """ResNet encoder returning the globally average-pooled feature vector ``(B, 8·width)``."""

    def __init__(self, depths=(2, 2, 2, 2), width: int = 64, in_chans: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, 7, 2, 3, bias=False)
        self.bn1 = _norm(width)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = width
        for index, depth in enumerate(depths):
            planes = width * 2**index
            blocks = [BasicBlock(inplanes if b == 0 else planes, planes, 2 if (b == 0 and index > 0) else 1) for b in range(depth)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            inplanes = planes
        self.num_features = inplanes
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.GroupNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():  # each residual branch starts as identity (timm's zero_init_last)
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean((-1, -2))


class PoseRegressor(nn.Module):
    """Encoder + heads: ``(B, 1, H, W)`` → rotation parameters ``(B, N)`` and translation ``(B, 3)``."""

    def __init__(self, architecture: str = "resnet18", parameterization: str = "quaternion_adjugate", width: int = 64) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}")
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"unknown rotation parameterization {parameterization!r}; choose one of {sorted(PARAMETERIZATIONS)}")
        self.backbone = ResNet(ARCHITECTURES[architecture], width)
        self.xyz_regression = nn.Linear(self.backbone.num_features, 3)
        self.rot_regression = nn.Linear(self.backbone.num_features, PARAMETERIZATIONS[parameterization])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        return self.rot_regression(features), self.xyz_regression(features)


# ---- rotation parameterisations (the reference's maths; pytorch3d conventions) -----------------------


def _symmetric_from_10(vec: torch.Tensor) -> torch.Tensor:
    """Symmetric ``(..., 4, 4)`` from its upper triangle in row-major order."""
    i, j = torch.triu_indices(4, 4, device=vec.device)
    a = vec.new_zeros(*vec.shape[:-1], 4, 4)
    a[..., i, j] = vec
    a[..., j, i] = vec
    return a


def _upper_10(a: torch.Tensor) -> torch.Tensor:
    i, j = torch.triu_indices(4, 4, device=a.device)
    return a[..., i, j]


def decode_rotation(vec: torch.Tensor, parameterization: str, convention: str = "ZXY") -> torch.Tensor:
    """Rotation matrices ``(B, 3, 3)`` from a head's output ``(B, N)``."""
    if parameterization == "quaternion_adjugate":
        # A ≈ q qᵀ (Peretroukhin et al.): its row of largest norm is q times a scalar.
        a = _symmetric_from_10(vec)
        norms = a.norm(dim=-1)
        best = norms.argmax(-1)
        row = torch.gather(a, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
        return quaternion_to_matrix(row / norms.amax(-1, keepdim=True))
    if parameterization == "rotation_10d":
        # q = eigenvector of the smallest eigenvalue of the symmetric data matrix (Peretroukhin 2020).
        return quaternion_to_matrix(torch.linalg.eigh(_symmetric_from_10(vec)).eigenvectors[..., 0])
    if parameterization == "quaternion":
        return quaternion_to_matrix(vec)
    if parameterization == "rotation_6d":
        # pytorch3d's Gram–Schmidt puts the two vectors in the matrix *rows*; ours in the columns.
        return rotation_6d_to_matrix(vec).transpose(-1, -2)
    if parameterization == "rotation_9d":
        return rotation_9d_to_matrix(vec)
    if parameterization == "axis_angle":
        return axis_angle_to_matrix(vec)
    if parameterization == "euler_angles":
        return euler_to_matrix(vec, convention)
    raise ValueError(f"unsupported rotation parameterization {parameterization!r}")


def encode_rotation(rot: torch.Tensor, parameterization: str, convention: str = "ZXY") -> torch.Tensor:
    """A head output ``(B, N)`` that decodes to ``rot`` ``(B, 3, 3)`` (starts the rotation head at a chosen pose)."""
    if parameterization == "quaternion_adjugate":
        q = matrix_to_quaternion(rot)
        return _upper_10(q[..., :, None] * q[..., None, :])
    if parameterization == "rotation_10d":
        q = matrix_to_quaternion(rot)
        return _upper_10(-(q[..., :, None] * q[..., None, :]))
    if parameterization == "quaternion":
        return matrix_to_quaternion(rot)
    if parameterization == "rotation_6d":
        return rot[..., :2, :].reshape(*rot.shape[:-2], 6)
    if parameterization == "rotation_9d":
        return rot.reshape(*rot.shape[:-2], 9)
    if parameterization == "axis_angle":
        return matrix_to_axis_angle(rot)
    if parameterization == "euler_angles":
        return matrix_to_euler(rot, convention)
    raise ValueError(f"unsupported rotation parameterization {parameterization!r}")


# ---- pose decoding ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoseSpec:
    """How head outputs become a pose (stored in every model's metadata)."""

    parameterization: str = "quaternion_adjugate"
    convention: str = "ZXY"  # only for euler_angles
    orientation: str = "PA"
    translation_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # mm
    translation_scale: float = 1.0  # mm per unit of head output

    def to_dict(self) -> dict:
        return {**asdict(self), "translation_offset": list(self.translation_offset)}

    @classmethod
    def from_dict(cls, data: dict) -> PoseSpec:
        return cls(**{**data, "translation_offset": tuple(data["translation_offset"])})


def _orientation_change(orientation: str, dtype, device) -> torch.Tensor:
    """Fixed 4×4 from our camera axes to the paper's (``carm_pose`` at zero parameters)."""
    return carm_pose(torch.zeros(6, dtype=torch.float64), orientation).to(dtype=dtype, device=device)


def decode_pose(rot_params: torch.Tensor, xyz: torch.Tensor, spec: PoseSpec) -> torch.Tensor:
    """Centred ``camera_to_world`` ``(B, 4, 4)`` from head outputs ``(B, N)`` and ``(B, 3)``."""
    rot = decode_rotation(rot_params, spec.parameterization, spec.convention)
    offset = torch.tensor(spec.translation_offset, dtype=xyz.dtype, device=xyz.device)
    t = offset + spec.translation_scale * xyz
    paper = make_rigid(rot, (rot @ t[..., None])[..., 0])
    return paper @ _orientation_change(spec.orientation, xyz.dtype, xyz.device)


def to_world(centred_pose: torch.Tensor, center, correction: torch.Tensor | None = None) -> torch.Tensor:
    """RAS ``camera_to_world`` ``(..., 4, 4)`` = translate(center) · correction · centred pose ``(..., 4, 4)``.

    ``center``: ``(3,)`` RAS mm. ``correction`` (4×4, centred coordinates) maps the frame the network
    predicts in (e.g. a pretraining template) onto this volume's centred frame; identity when it is
    this volume.
    """
    dtype, device = centred_pose.dtype, centred_pose.device
    shift = torch.eye(4, dtype=dtype, device=device)
    shift[:3, 3] = torch.as_tensor(center, dtype=dtype, device=device)
    if correction is not None:
        shift = shift @ torch.as_tensor(correction, dtype=dtype, device=device)
    return shift @ centred_pose


def from_world(camera_to_world: torch.Tensor, center, correction: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of :func:`to_world`: the centred pose the network should predict."""
    eye = torch.eye(4, dtype=camera_to_world.dtype, device=camera_to_world.device)
    placed = to_world(eye, center, correction)
    return torch.linalg.inv(placed) @ camera_to_world


# ---- input normalisation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """Per-image min–max to [0, 1], then ``(x − mean) / std`` (the reference's 0.15 / 0.1)."""

    mean: float = 0.15
    std: float = 0.1

    def to_dict(self) -> dict:
        return {"scaling": "minmax", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> InputSpec:
        if data.get("scaling", "minmax") != "minmax":
            raise ValueError(f"unsupported input scaling {data.get('scaling')!r}")
        return cls(float(data["mean"]), float(data["std"]))


def minmax(images: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Scale each image ``(B, C, H, W)`` to [0, 1] over its masked pixels; 0 outside the mask."""
    if mask is None:
        lo = images.amin((-1, -2), keepdim=True)
        hi = images.amax((-1, -2), keepdim=True)
        return (images - lo) / (hi - lo + eps)
    m = mask.to(torch.bool).expand_as(images)
    big = torch.finfo(images.dtype).max
    lo = torch.where(m, images, torch.full_like(images, big)).amin((-1, -2), keepdim=True)
    hi = torch.where(m, images, torch.full_like(images, -big)).amax((-1, -2), keepdim=True)
    scaled = ((images - lo) / (hi - lo + eps)).clamp(0, 1)
    return torch.where(m, scaled, torch.zeros_like(scaled))


def prepare_input(scaled: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Network input from images already scaled to [0, 1] (and augmented, when training)."""
    return (scaled - spec.mean) / spec.std


class PoseModel(nn.Module):
    """The regressor with its decoding: ``(B, 1, H, W)`` normalised images → centred poses ``(B, 4, 4)``."""

    def __init__(self, regressor: PoseRegressor, spec: PoseSpec) -> None:
        super().__init__()
        self.regressor = regressor
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rot, xyz = self.regressor(x)
        # Poses are decoded in float32 even under autocast: bfloat16 would round 700 mm to ±2 mm.
        with torch.autocast(x.device.type, enabled=False):
            return decode_pose(rot.float(), xyz.float(), self.spec)

    def start_at(self, rotation: torch.Tensor) -> None:
        """Bias the heads so an untrained network predicts ``rotation`` and the offset translation."""
        with torch.no_grad():
            head = self.regressor.rot_regression
            head.bias.copy_(encode_rotation(rotation.to(head.bias.dtype), self.spec.parameterization, self.spec.convention))
            head.weight.mul_(0.01)
            self.regressor.xyz_regression.bias.zero_()
            self.regressor.xyz_regression.weight.mul_(0.01)


@dataclass(frozen=True)
class ArchitectureSpec:
    """Which encoder a model uses (stored in every model's metadata): ResNet-18/34 of ``width`` channels, GroupNorm."""

    name: str = "resnet18"
    width: int = 64
    norm: str = "groupnorm"
    in_channels: int = 1
    extra: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        return {"name": self.name, "width": self.width, "norm": self.norm, "in_channels": self.in_channels}

    @classmethod
    def from_dict(cls, data: dict) -> ArchitectureSpec:
        spec = cls(data["name"], int(data.get("width", 64)), data.get("norm", "groupnorm"), int(data.get("in_channels", 1)))
        if spec.norm != "groupnorm" or spec.in_channels != 1 or spec.name not in ARCHITECTURES:
            raise ValueError(f"unsupported network {data}: expected resnet18/34, groupnorm, 1 input channel")
        return spec

    def build(self, pose: PoseSpec) -> PoseModel:
        return PoseModel(PoseRegressor(self.name, pose.parameterization, self.width), pose)
