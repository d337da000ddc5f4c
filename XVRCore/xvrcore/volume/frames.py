"""Frame correction for models trained on another volume (xvr paper, Methods M.4).

A network predicts poses in the centred frame of the volume(s) it was trained on (for a
patient-agnostic model: the pretraining template). To use it on a new CT, the prediction is mapped
into the new CT's frame: by a rigid 3D/3D registration of the new CT to the template (bones, as
for the pelvis and skull), or by aligning the two volumes' centres (as for vessel-only 3D DSAs,
where registration has little to hold on to).

:func:`frame_correction` returns the 4×4 ``C`` of :func:`xvrcore.learning.network.to_world`:
``world_pose = translate(new_centre) · C · centred_prediction``.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from ..conventions import LPS_TO_RAS
from .grid import Volume

__all__ = ["FRAME_MODES", "apply", "frame_correction", "register_rigid"]

FRAME_MODES = ("center", "register")
_F = torch.diag(torch.tensor([*LPS_TO_RAS, 1.0], dtype=torch.float64))  # LPS <-> RAS (its own inverse)


def _translation(offset) -> torch.Tensor:
    m = torch.eye(4, dtype=torch.float64)
    m[:3, 3] = torch.as_tensor(np.asarray(offset, dtype=np.float64))
    return m


def frame_correction(new_center, template_center, template_to_new=None) -> torch.Tensor:
    """``C`` mapping template-centred coordinates to new-CT-centred coordinates (4×4, float64).

    ``template_to_new`` maps template RAS points onto the corresponding new-CT RAS points (what
    :func:`register_rigid` returns); None means centre alignment, for which ``C`` is the identity.
    """
    if template_to_new is None:
        return torch.eye(4, dtype=torch.float64)
    middle = torch.as_tensor(template_to_new, dtype=torch.float64)
    return _translation(-np.asarray(new_center, dtype=np.float64)) @ middle @ _translation(template_center)


def _prepare(volume: Volume, spacing: float) -> sitk.Image:
    """Float image clipped to the CT window that matters for bone, resampled to ``spacing`` mm."""
    image = sitk.Cast(volume.to_sitk(), sitk.sitkFloat32)
    image = sitk.Clamp(image, sitk.sitkFloat32, -1000.0, 2000.0)
    old = np.array(image.GetSpacing())
    new_size = [max(8, round(n * s / spacing)) for n, s in zip(image.GetSize(), old, strict=True)]
    smooth = sitk.SmoothingRecursiveGaussian(image, float(spacing) / 2)
    return sitk.Resample(smooth, new_size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                         [spacing] * 3, image.GetDirection(), -1000.0, sitk.sitkFloat32)


def register_rigid(template: Volume, moving: Volume, spacing: float = 4.0, seed: int = 1) -> torch.Tensor:
    """Rigid transform (4×4, RAS) taking template points to the matching points of ``moving``.

    Mattes mutual information, a geometric-centre initialisation, three resolution levels, on
    copies resampled to ``spacing`` mm (seconds even for 512² CTs).
    """
    fixed, mov = _prepare(template, spacing), _prepare(moving, spacing)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=48)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.25, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=4.0, minStep=1e-3, numberOfIterations=300,
                                                 relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    initial = sitk.CenteredTransformInitializer(fixed, mov, sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg.SetInitialTransform(initial, inPlace=False)
    result = reg.Execute(fixed, mov)
    return _itk_to_ras(result)


def _itk_to_ras(transform: sitk.Transform) -> torch.Tensor:
    """4×4 RAS matrix of an ITK rigid transform (which maps LPS points: ``A (p − c) + t + c``)."""
    if isinstance(transform, sitk.CompositeTransform):
        transform = transform.GetNthTransform(transform.GetNumberOfTransforms() - 1)
    rigid = sitk.Euler3DTransform(transform) if not isinstance(transform, sitk.Euler3DTransform) else transform
    a = torch.tensor(rigid.GetMatrix(), dtype=torch.float64).reshape(3, 3)
    c = torch.tensor(rigid.GetCenter(), dtype=torch.float64)
    t = torch.tensor(rigid.GetTranslation(), dtype=torch.float64)
    lps = torch.eye(4, dtype=torch.float64)
    lps[:3, :3] = a
    lps[:3, 3] = t + c - a @ c
    return _F @ lps @ _F


def apply(matrix, points) -> torch.Tensor:
    """A 4×4 applied to ``(N, 3)`` points (float64)."""
    m = torch.as_tensor(matrix, dtype=torch.float64)
    pts = torch.as_tensor(np.asarray(points, dtype=np.float64))
    return pts @ m[:3, :3].T + m[:3, 3]
