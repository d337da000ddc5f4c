"""Joint multi-view registration: N X-rays of one static patient refined together, one patient pose for all.

A single view pins the pose across its beam but hardly along it (depth; paper, Fig. S3); a second
view at another angle sees that depth across its own beam. :func:`register_jointly` therefore moves
the CT once for every view: each view's camera is ``correction @ start`` (``start``: the view's
C-arm pose, usually its DICOM header), ``correction`` a rigid transform about the volume centre
(:func:`~xvrcore.registration.linescan.rigid_about`, the CT scouts' shared correction), refined by
the weighted mean of the views' similarities (:func:`~xvrcore.metrics.similarity.registration_similarity`,
each view with its own intrinsics, exposure mask and polarity: a :class:`~.problem.Problem` per view).

**Start.** ``start="single"`` (default): each view is first registered on its own
(:func:`~xvrcore.registration.optimizer.register`); each result implies a correction, and the start
is their *depth-aware consensus* (:func:`consensus_correction`): the rotation is the weighted mean,
the translation the one closest to every view's correction *across its beam*, so a view's poorly
known depth never pulls. ``start="header"``: the views' start poses as they are.

**Poor views** are down-weighted (``poor_weight``), never allowed to drag the others
(:func:`assess_views`): a view whose single-view registration failed or ends below ``poor_fraction``
of the best view's similarity, or (shared mode) whose correction disagrees with the consensus of
the others by more than ``consensus_mm`` across its beam (the lower-similarity view of a clashing
pair goes first). With a header start, the views are judged by their similarity after a first
joint pass, and the pass is repeated with the new weights.

**Modes** (:data:`JOINT_MODES`; the result says which and why):

* ``"shared"``: the views' relative C-arm geometry is trusted (a biplane system, or one C-arm's
  encoders): 6 parameters for all views.
* ``"independent"``: each view's C-arm pose may be off too (a mobile C-arm with unreliable
  angles): each view also gets its own C-arm correction, applied to its start before the patient's
  (rotation about the centre, translation in its camera axes,
  :func:`~xvrcore.registration.pose_update.updated_pose`), held near the shared
  patient pose by a Gaussian prior (``carm_sigma_deg``, ``carm_sigma_mm``; a 1σ deviation costs
  ``prior_weight`` of similarity). The patient pose stays shared, so the others still pin a
  view's depth within the prior.
* ``"auto"``: independent when a view's start is not its C-arm's own reading (a pose file,
  landmarks, a network) or the well-registered views' single-view rotations disagree by more than
  ``consensus_deg`` (their relative angles are wrong), else shared.

The stages are :class:`~.settings.Stage` s run by Adam with plateau drops, as in
:mod:`~xvrcore.registration.optimizer` (its plateau rule is reused).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from ..drr import DRRVolume
from ..geometry.camera import Intrinsics
from ..geometry.rotations import invert_rigid, matrix_to_axis_angle
from ..metrics.quality import CHANCE_SIMILARITY
from .checks import UnregistrableInput
from .linescan import pose_change, rigid_about
from .optimizer import _Plateau, register
from .pose_update import updated_pose
from .problem import Clock, Problem
from .settings import RegistrationResult, RegistrationSettings, Stage, StageLog

__all__ = ["JOINT_MODES", "JOINT_STAGES", "JointResult", "JointSettings", "JointView", "assess_views",
           "consensus_correction", "register_jointly", "view_results"]

JOINT_MODES = ("auto", "shared", "independent")

# Started near the answer (the consensus of the single-view results): no search, the two finer stages
# of the single-view schedule with smaller steps (the correction's axes are the world's, not a camera's).
JOINT_STAGES = (
    Stage(80, 60, 5e-3, 1.0, 0.5),
    Stage(128, 60, 2e-3, 0.5, 0.5, lod_bias=3.0),
    Stage(160, 30, 1e-3, 0.2, 0.5, patience=3, max_reductions=1),
)
JOINT_REFINEMENT = RegistrationSettings(stages=JOINT_STAGES, search=None, retry_searches=())


@dataclass(frozen=True)
class JointView:
    """One X-ray ``(H, W)`` (dense = high) with its intrinsics, exposure mask and C-arm pose ``start`` (4, 4)."""

    xray: torch.Tensor
    intrinsics: Intrinsics
    start: torch.Tensor
    mask: torch.Tensor | None = None
    from_header: bool = True  # the start is the C-arm's own reading (its relative geometry can be trusted)
    name: str = ""


@dataclass(frozen=True)
class JointSettings:
    single: RegistrationSettings = field(default_factory=RegistrationSettings)  # each view's own (start="single")
    joint: RegistrationSettings = field(default_factory=lambda: JOINT_REFINEMENT)
    start: str = "single"  # "single" or "header"
    mode: str = "auto"  # JOINT_MODES
    # Below this fraction of the best view's similarity a view is poor (and always below chance level). A
    # lateral pelvis view scores far lower than its AP partner even when right: 0.38-0.70 against 0.73-0.83,
    # registered to 0.3-1.5 mm on their own (benchmarks/bench_joint.py, 128²); what matters is that it is not
    # noise. A wrong view that scores well meets the consensus test instead.
    poor_fraction: float = 0.4
    poor_weight: float = 0.05  # a poor view's weight (a good view's: 1)
    consensus_mm: float = 10.0  # shared mode: a view farther from the others' consensus (across its beam) is poor
    consensus_deg: float = 3.0  # auto mode: good views whose rotations disagree by more → independent
    # Independent mode's prior on each view's own C-arm correction: a mobile C-arm's angle readings may be
    # degrees off, its isocentric geometry (SID, SOD) hardly. On a biplane pair (64², one header 4.5° off)
    # 10°/2 mm/0.05 took both views to < 0.5 mm mTRE; 2°/5 mm/0.01 left the badly read view at 1 mm.
    carm_sigma_deg: float = 10.0
    carm_sigma_mm: float = 2.0
    prior_weight: float = 0.05


@dataclass
class JointResult:
    correction: torch.Tensor  # (4, 4): each view's camera = correction @ start (@ its own correction, independent)
    camera_to_world: list[torch.Tensor]  # per view, (4, 4) float64
    similarity: list[float]  # per view, at the finest joint stage
    initial_similarity: list[float]  # per view, at its start pose
    weights: list[float]
    reasons: list[str | None]  # why a view was down-weighted (None: it was not)
    mode: str
    mode_reason: str
    objective: float  # the weighted mean similarity (less the prior) at the result
    rotation_deg: float  # the CT's motion (correction⁻¹): its angle and how far it moves the centre
    translation_mm: float
    singles: list[RegistrationResult | None] | None = None  # the single-view results (start="single")
    stages: list[StageLog] = field(default_factory=list)
    seconds: float = 0.0


def _shift(correction: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """How far ``correction`` moves the centre (mm): its translation about the centre (``rigid_about``)."""
    return correction[:3, :3] @ center + correction[:3, 3] - center


def _across(beam: torch.Tensor) -> torch.Tensor:
    """``(3, 3)``: the projection onto the plane across ``beam`` (what a view sees of a shift)."""
    b = beam / beam.norm()
    return torch.eye(3, dtype=torch.float64) - torch.outer(b, b)


def consensus_correction(corrections: Sequence[torch.Tensor], beams: Sequence[torch.Tensor],
                         weights: Sequence[float], center: torch.Tensor) -> torch.Tensor:
    """The correction agreeing best with every view's across its beam (module docstring), ``(4, 4)``.

    ``corrections``: the views' own corrections; ``beams``: their beam directions (world); a tiny pull
    to the weighted mean shift keeps the solution unique when the beams are parallel (one view).
    """
    w = torch.as_tensor(list(weights), dtype=torch.float64)
    w = w / w.sum()
    rotation = sum(wi * matrix_to_axis_angle(c[:3, :3]) for wi, c in zip(w, corrections, strict=True))
    shifts = [_shift(c, center) for c in corrections]
    mean = sum(wi * s for wi, s in zip(w, shifts, strict=True))
    normal = 1e-3 * torch.eye(3, dtype=torch.float64) + sum(wi * _across(b) for wi, b in zip(w, beams, strict=True))
    right = 1e-3 * mean + sum(wi * _across(b) @ s for wi, b, s in zip(w, beams, shifts, strict=True))
    return rigid_about(rotation, torch.linalg.solve(normal, right), center)


def _disagreement(correction: torch.Tensor, consensus: torch.Tensor, beam: torch.Tensor, center) -> float:
    """How far a view's correction is from the consensus across its beam, mm."""
    return float((_across(beam) @ (_shift(correction, center) - _shift(consensus, center))).norm())


def assess_views(similarities: Sequence[float], settings: JointSettings, corrections=None, beams=None,
                 center=None) -> tuple[list[float], list[str | None]]:
    """Each view's weight and, for a down-weighted one, why (module docstring). ``corrections`` and
    ``beams`` (the single-view results') add the consensus test; without them only similarity counts."""
    best = max((s for s in similarities if math.isfinite(s)), default=math.nan)
    floor = max(CHANCE_SIMILARITY, settings.poor_fraction * best)
    reasons: list[str | None] = [None] * len(similarities)
    for i, s in enumerate(similarities):
        if not (math.isfinite(s) and s >= floor):
            reasons[i] = f"similarity {s:.3f} below {floor:.3f} ({settings.poor_fraction:g} of the best view's)"
    while corrections is not None and sum(r is None for r in reasons) > 2:
        good = [i for i, r in enumerate(reasons) if r is None]
        far = {}
        for i in good:  # each good view against the consensus of the other good ones
            others = [j for j in good if j != i]
            consensus = consensus_correction([corrections[j] for j in others], [beams[j] for j in others],
                                             [1.0] * len(others), center)
            far[i] = _disagreement(corrections[i], consensus, beams[i], center)
        worst = max(far, key=far.get)
        if far[worst] <= settings.consensus_mm:
            break
        reasons[worst] = f"{far[worst]:.1f} mm from the other views' consensus (more than {settings.consensus_mm:g})"
    if corrections is not None and sum(r is None for r in reasons) == 2:
        _settle_pair(similarities, settings, corrections, beams, center, reasons)
    return [1.0 if r is None else settings.poor_weight for r in reasons], reasons


def _settle_pair(similarities, settings, corrections, beams, center, reasons) -> None:
    """Two good views that disagree: the one with the lower similarity is the poor one."""
    a, b = [i for i, r in enumerate(reasons) if r is None]
    consensus = consensus_correction([corrections[a], corrections[b]], [beams[a], beams[b]], [1.0, 1.0], center)
    apart = max(_disagreement(corrections[i], consensus, beams[i], center) for i in (a, b))
    if apart > settings.consensus_mm / 2:  # each view is half the clash from the pair's consensus
        worse = a if similarities[a] < similarities[b] else b
        reasons[worse] = (f"{2 * apart:.1f} mm from the other view across its beam (more than "
                          f"{settings.consensus_mm:g}), and the lower similarity")


def _choose_mode(views: Sequence[JointView], settings: JointSettings, corrections, reasons) -> tuple[str, str]:
    """The mode and why (module docstring)."""
    if settings.mode != "auto":
        return settings.mode, "asked for"
    guessed = [v.name or str(i) for i, v in enumerate(views) if not v.from_header]
    if guessed:
        return "independent", f"the start of {', '.join(guessed)} is no C-arm reading, so the relative geometry is unknown"
    good = [c for c, r in zip(corrections or [], reasons, strict=False) if r is None]
    spread = max((math.degrees(float(matrix_to_axis_angle(a[:3, :3] @ b[:3, :3].T).norm()))
                  for a in good for b in good), default=0.0)
    if spread > settings.consensus_deg:
        return "independent", (f"the views' own registrations disagree on the patient's rotation by {spread:.1f}° "
                               f"(more than {settings.consensus_deg:g}°): their relative C-arm angles are off")
    how = f"; the views' own registrations agree within {spread:.1f}°" if good else ""
    return "shared", f"every start is a C-arm reading (DICOM header): their relative geometry is trusted{how}"


class _JointPose(torch.nn.Module):
    """The shared correction (and, independent, one correction per view): the views' poses and the prior."""

    def __init__(self, starts: torch.Tensor, base: torch.Tensor, center: torch.Tensor, independent: bool) -> None:
        super().__init__()
        self.starts, self.base, self.center, self.independent = starts, base, center, independent
        zeros = torch.zeros(3, dtype=torch.float64, device=starts.device)
        self.rotation, self.translation = torch.nn.Parameter(zeros.clone()), torch.nn.Parameter(zeros.clone())
        n = len(starts) if independent else 0
        self.view_rotation = torch.nn.Parameter(zeros.new_zeros(n, 3))
        self.view_translation = torch.nn.Parameter(zeros.new_zeros(n, 3))

    def correction(self) -> torch.Tensor:
        return rigid_about(self.rotation, self.translation, self.center) @ self.base

    def forward(self) -> torch.Tensor:
        if not self.independent:
            return self.correction() @ self.starts
        # a view's own error is its C-arm's (about the isocentre, in its camera axes): before the patient's
        own = torch.stack([updated_pose(p, self.center, r, t)
                           for p, r, t in zip(self.starts, self.view_rotation, self.view_translation, strict=True)])
        return self.correction() @ own

    def prior(self, settings: JointSettings) -> torch.Tensor:
        """The prior's cost: ``prior_weight`` × the views' mean squared deviation in σ (0 when shared)."""
        if not self.independent:
            return self.rotation.new_zeros(())
        r = self.view_rotation.norm(dim=1) / math.radians(settings.carm_sigma_deg)
        t = self.view_translation.norm(dim=1) / settings.carm_sigma_mm
        return settings.prior_weight * (r.square() + t.square()).mean()

    def groups(self, stage: Stage) -> list[dict]:
        return [{"params": [self.rotation, self.view_rotation], "lr": stage.lr_rotation},
                {"params": [self.translation, self.view_translation], "lr": stage.lr_translation}]


def _objective(problems: Sequence[Problem], poses: torch.Tensor, weights: torch.Tensor, stage: Stage) -> torch.Tensor:
    """The weighted mean of the views' similarities at ``stage`` (differentiable)."""
    values = [p.score(pose, stage)[0] for p, pose in zip(problems, poses, strict=True)]
    return (torch.stack(values) * weights).sum() / weights.sum()


def _run_stage(problems, model: _JointPose, weights, stage: Stage, clock: Clock, settings: JointSettings,
               progress) -> tuple[float, int]:
    """Adam on one stage; the model is left at the stage's best parameters. Returns (best, iterations)."""
    refine = settings.joint
    optimizer = torch.optim.Adam(model.groups(stage), maximize=True)
    plateau = _Plateau(refine.threshold, refine.patience if stage.patience is None else stage.patience,
                       refine.max_reductions if stage.max_reductions is None else stage.max_reductions)
    best, best_state, iteration = -math.inf, None, 0
    for iteration in range(1, stage.iterations + 1):
        optimizer.zero_grad()
        value = _objective(problems, model(), weights, stage) - model.prior(settings)
        value.backward()
        v = float(value.detach())
        if v > best:
            best, best_state = v, {k: t.detach().clone() for k, t in model.state_dict().items()}
        optimizer.step()
        if progress is not None:
            progress({"stage": stage.size, "iteration": iteration, "iterations": stage.iterations, "similarity": v})
        verdict = plateau.update(v)
        if verdict == "stop" or clock.stopped():
            break
        if verdict == "reduce":
            for group in optimizer.param_groups:
                group["lr"] *= refine.reduce_factor
    if best_state is not None:
        model.load_state_dict(best_state)
    return best, iteration


def _refine(problems, views, base, weights, mode, settings: JointSettings, clock, progress):
    """The joint stages from the correction ``base``; returns the model and the stage logs."""
    center = problems[0].center  # on the volume's device, as the model
    starts = torch.stack([v.start for v in views]).to(center.device)
    model = _JointPose(starts, base.to(center.device), center, mode == "independent")
    w = torch.as_tensor(weights, dtype=torch.float64, device=center.device)
    logs = []
    for stage in settings.joint.stages:
        if clock.stopped():
            break
        t0 = time.perf_counter()
        best, iterations = _run_stage(problems, model, w, stage, clock, settings, progress)
        logs.append(StageLog((stage.size, stage.size), iterations, best, time.perf_counter() - t0))
    return model, logs


def _single(volume, view: JointView, center, settings: RegistrationSettings, should_stop) -> RegistrationResult | None:
    """The view registered on its own; None if it cannot be (no contrast, a start that misses the CT)."""
    try:
        return register(volume, view.xray, view.intrinsics, view.start, mask=view.mask, center=center,
                        settings=settings, should_stop=should_stop)
    except UnregistrableInput:
        return None


def _single_start(volume, views, center, settings: JointSettings, singles, should_stop):
    """The single-view results, the weights and reasons, the mode and why, and the consensus start."""
    if singles is None:
        singles = [_single(volume, v, center, settings.single, should_stop) for v in views]
    singles = list(singles)
    corrections = [torch.eye(4, dtype=torch.float64) if r is None else r.camera_to_world.cpu() @ invert_rigid(v.start)
                   for r, v in zip(singles, views, strict=True)]
    beams = [(c @ v.start)[:3, 2] for c, v in zip(corrections, views, strict=True)]
    sims = [math.nan if r is None else r.similarity for r in singles]
    weights, reasons = assess_views(sims, settings)
    mode, why = _choose_mode(views, settings, corrections, reasons)
    if mode == "shared":  # a view whose own result contradicts the others' is poor too
        weights, reasons = assess_views(sims, settings, corrections, beams, center)
    reasons = [r if s is not None else "its own registration failed (no contrast, or the start misses the CT)"
               for r, s in zip(reasons, singles, strict=True)]
    base = consensus_correction(corrections, beams, weights, center)
    return singles, weights, reasons, mode, why, base


def register_jointly(volume: DRRVolume, views: Sequence[JointView], *, center: torch.Tensor | None = None,
                     settings: JointSettings = JointSettings(), progress: Callable[[dict], None] | None = None,
                     should_stop: Callable[[], bool] | None = None,
                     singles: Sequence[RegistrationResult | None] | None = None) -> JointResult:
    """One patient pose refined with every view (see the module docstring for the start, weights and modes).

    ``singles``: the views' single-view results if they exist already (None: a view that could not be
    registered); by default each view is registered first (``start="single"``).
    """
    if not views:
        raise ValueError("register_jointly needs at least one view")
    if settings.mode not in JOINT_MODES or settings.start not in ("single", "header"):
        raise ValueError(f"unknown joint mode {settings.mode!r} or start {settings.start!r}")
    clock = Clock.start(settings.joint, should_stop)
    device = volume.device
    center = (volume.center if center is None else torch.as_tensor(center, dtype=torch.float64)).cpu().double()
    views = [replace(v, start=torch.as_tensor(v.start, dtype=torch.float64).reshape(4, 4).cpu()) for v in views]
    problems = [Problem(volume, torch.as_tensor(v.xray, dtype=volume.dtype, device=device), v.intrinsics,
                        None if v.mask is None else torch.as_tensor(v.mask, device=device), center.to(device),
                        settings.joint.method) for v in views]
    if settings.start == "single":
        singles, weights, reasons, mode, why, base = _single_start(volume, views, center, settings, singles,
                                                                    should_stop)
    else:
        singles, weights, reasons, base = None, [1.0] * len(views), [None] * len(views), torch.eye(4, dtype=torch.float64)
        mode, why = _choose_mode(views, settings, None, reasons)
    model, logs = _refine(problems, views, base, weights, mode, settings, clock, progress)
    if settings.start == "header":  # judged at the joint pose, and refined again without the poor views' pull
        sims = [p.similarity(pose, settings.joint.stages[-1]) for p, pose in zip(problems, model().detach(), strict=True)]
        weights, reasons = assess_views(sims, settings)
        if any(r is not None for r in reasons):
            model, logs = _refine(problems, views, model.correction().detach(), weights, mode, settings, clock, progress)
    return _result(problems, views, model, weights, reasons, mode, why, singles, logs, settings, clock)


def _result(problems, views, model, weights, reasons, mode, why, singles, logs, settings, clock) -> JointResult:
    finest = settings.joint.stages[-1]
    with torch.no_grad():
        poses = model().detach()
        objective = float(_objective(problems, poses, poses.new_tensor(weights), finest)
                          - model.prior(settings))
    similarity = [p.similarity(pose, finest) for p, pose in zip(problems, poses, strict=True)]
    initial = [p.similarity(v.start.to(poses.device), finest) for p, v in zip(problems, views, strict=True)]
    correction = model.correction().detach().cpu()
    rotation, translation = pose_change(correction, problems[0].center.cpu())
    return JointResult(correction, list(poses.cpu()), similarity, initial, list(weights), list(reasons), mode, why,
                       objective, rotation, translation, singles, logs, clock.elapsed())


def view_results(result: JointResult, views: Sequence[JointView]) -> list[RegistrationResult]:
    """Each view's part of the joint result as a single-view :class:`RegistrationResult` (for its result files)."""
    return [RegistrationResult(pose, view.start.clone(), sim, start_sim, list(result.stages), result.seconds)
            for pose, view, sim, start_sim in zip(result.camera_to_world, views, result.similarity,
                                                  result.initial_similarity, strict=True)]
