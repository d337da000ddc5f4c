"""Command-line interface: ``xvrcore demo``, ``render``, ``register``, ``animate``, ``evaluate``, ``train``, ``model``.

The options of ``register`` and ``train`` are the tables of :mod:`xvrcore.app.commands` (which also
builds their command lines for background jobs); the other sub-commands are spelled here.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import replace
from pathlib import Path

from .. import __version__
from ..io.atomic import EXIT_DISK_FULL, is_disk_full
from .animate import add_animate
from .commands import MODALITY_OPTIONS, REGISTER_OPTIONS, TRAIN_OPTIONS, add_options
from .option_types import Bounded, finite_float, non_negative_int, positive_float, positive_int, width_height

__all__ = ["build_parser", "main"]

_DETECTOR_PIXELS = Bounded(int, low=16, high=4096)
_EXPECTED_ERRORS: tuple[type[Exception], ...] = (ValueError, FileNotFoundError, OSError)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    summary = run_demo(args.output, args.ct, size=args.size, method=args.method, progress=not args.quiet,
                       register_xray=not args.no_registration)
    out = Path(args.output).resolve()
    print(f"wrote {len(summary['files'])} files to {out}:")
    for path in summary["files"]:
        print(f"  {Path(path).resolve().relative_to(out)}")
    if "registration" in summary:
        reg = summary["registration"]
        print(f"registered the simulated X-ray from its DICOM header: mTRE {reg['initial_mtre_mm']:.1f} mm at the start, "
              f"{reg['final_mtre_mm']:.2f} mm after refinement (quality: {'pass' if reg['quality']['passed'] else 'CHECK'}, "
              f"P(<1 mm) = {reg['quality']['p_submillimetre']:.2f})")
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in summary["timings_s"].items())
    print(f"timings: {timings}")
    return 0


def _render(args: argparse.Namespace) -> int:
    import torch

    from ..drr import DRRVolume, render
    from ..geometry.camera import Detector
    from ..geometry.carm import carm_pose
    from ..io.images import save_png, to_uint8
    from ..io.pose_json import camera_pose, load_pose_file, write_pose_json
    from ..volume.vessels import load_rendered_volume

    size = width_height(args.size, "--size")
    loaded = load_rendered_volume(args.volume, args.modality, args.vessels, args.bone_multiplier)
    if loaded.warning:
        print(f"xvrcore render: warning: {loaded.warning}", file=sys.stderr)
    ct = loaded.volume
    volume = DRRVolume.from_volume(loaded.attenuation)
    if args.pose:
        # The image size: --size, else the file's image_size, else the one centred on the principal point.
        read = load_pose_file(args.pose, size, principal_point_size=True)
        print(f"{Path(args.pose).name}: {read.describe()}")
        intrinsics, c2w = read.pose.intrinsics, torch.as_tensor(read.pose.camera_to_world)
    else:
        width, height = size or (256, 256)
        det = Detector(args.sdd, height, width, args.spacing, args.spacing)
        intrinsics = det.intrinsics()
        c2w = carm_pose(torch.tensor(args.carm, dtype=torch.float64), args.orientation, torch.as_tensor(ct.center))
    drr = render(volume, c2w.float(), intrinsics, method=args.method)[0, 0].numpy()
    out = Path(args.output)
    save_png(out, to_uint8(drr))
    if not args.pose:
        write_pose_json(out.with_suffix(".json"), camera_pose(intrinsics, c2w, volume=Path(args.volume).name,
                                                             modality=loaded.record["modality"]))
    print(f"wrote {out}")
    return 0


class _RegisterProgress:
    """The progress bar and the per-input lines of ``xvrcore register`` (pipeline events in)."""

    def __init__(self, show_bar: bool, verbose: bool) -> None:
        from tqdm import tqdm

        self.tqdm, self.show_bar, self.verbose = tqdm, show_bar, verbose
        self.bar = None

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "warning":  # a choice made for the user (also in the result JSON)
            return self.tqdm.write(f"xvrcore register: warning: {event['message']}", file=sys.stderr)
        if kind == "run_start":
            self.bar = self.tqdm(total=event["total"], desc="xvrcore register", unit="X-ray", disable=not self.show_bar,
                                 bar_format="{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}]")
            return
        if self.bar is None:
            return
        if kind == "progress":
            self.bar.n = event["fraction"] * event["total"]
        elif kind in ("input_done", "input_skipped", "input_failed"):
            self.bar.n = event["index"] + 1
            if kind == "input_failed":
                self.tqdm.write(f"xvrcore register: error: {event['error']}", file=sys.stderr)
            elif self.verbose and kind == "input_done":
                self.tqdm.write(f"{event['input']}: similarity {event['similarity']:.3f} ({event['seconds']:.1f} s)")
            elif self.verbose:
                self.tqdm.write(f"{event['input']}: already registered, skipped")
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


_START_FILES = {"pose": "init_pose", "landmarks": "landmarks", "model": "model", "carm": "carm"}  # method: its option


def _start_method(args: argparse.Namespace) -> str:
    """``--init``, else the method of the start given (--init-pose, --landmarks, --model, --carm), else dicom."""
    implied = next((method for method, dest in _START_FILES.items() if getattr(args, dest)), None)
    if args.init is not None and implied is not None and args.init != implied:
        raise ValueError(f"--init {args.init} contradicts --{_START_FILES[implied].replace('_', '-')}")
    method = args.init or implied or "dicom"
    if method == "carm" and args.carm is None:
        raise ValueError("--init carm needs the C-arm parameters: --carm ALPHA BETA GAMMA X Y Z")
    if args.orientation is not None and method != "carm":
        raise ValueError("--orientation is the frame of --carm; it has no meaning without it")
    return method


def _register(args: argparse.Namespace) -> int:
    import signal

    import torch

    from ..io.events import CancelToken
    from ..registration import PipelineSettings, register_inputs
    from ..xray import GeometryOverrides
    from .register_settings import effective_settings, show_settings

    if args.show_settings:
        return show_settings(args)
    settings = effective_settings(args)
    overrides = GeometryOverrides(
        pixel_spacing=tuple(args.pixel_spacing) if args.pixel_spacing else None, sdd=args.sdd, sod=args.sod,
        primary_angle=args.primary_angle, secondary_angle=args.secondary_angle,
    )
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    options = PipelineSettings(
        volume=args.volume, output=args.output, labels=args.labels, structures=args.structures,
        label_names=args.label_names, volume_mode=args.modality, vessels=args.vessels,
        init=_start_method(args), name_outputs=args.name_outputs,
        model=args.model, allow_other_volume=args.allow_other_volume,
        init_pose=args.init_pose, landmarks=args.landmarks, isocenter=args.isocenter, frame=args.frame,
        carm=args.carm, carm_orientation=args.orientation or "PA", save_trajectory=args.save_trajectory, animate=args.animate,
        mask_frame=args.mask_frame, overrides=overrides, device=device, overwrite=args.overwrite, settings=settings,
    )
    if args.joint or args.track:  # several views together, or every frame of a run (xvrcore.app.joint)
        from .joint import run_together
        return run_together(args, options)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    token = CancelToken(args.cancel_file, handle_signals=True)  # Ctrl-C: finish cleanly, keep results
    progress = _RegisterProgress(show_bar=not (args.quiet or args.progress_json), verbose=not args.quiet)
    try:
        summary = register_inputs(args.xrays, options, progress=progress, emit_events=args.progress_json,
                                  should_stop=token)
    finally:
        progress.close()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    print(f"{summary.text()} → {Path(args.output).resolve()}")
    return summary.exit_code


def _training_config(args: argparse.Namespace):
    from ..learning.training import TrainSettings, profile_settings

    ranges = None
    custom = {name: getattr(args, name) for name in ("alpha", "beta", "gamma", "x", "y", "z")}
    if any(v is not None for v in custom.values()):
        from ..learning.sampling import get_preset

        base = get_preset(args.preset).ranges.to_dict() if args.preset else {}
        missing = [n for n, v in custom.items() if v is None and n not in base]
        if missing:
            raise ValueError(f"custom ranges without a preset need all six parameters; missing {', '.join(missing)}")
        ranges = {**base, **{n: list(v) for n, v in custom.items() if v is not None}}
        ranges.setdefault("orientation", args.orientation or "PA")
    given = {name: getattr(args, name) for name in ("batch_size", "lr", "pose_loss_fraction", "image_size", "width")}
    profile = profile_settings(args.profile, **given)
    return TrainSettings(
        volumes=args.volume, output=args.output, preset=args.preset, ranges=ranges, orientation=args.orientation,
        modality=args.modality, vessels=args.vessels,
        labelmap=args.labelmap, labels=args.labels, init_from=args.init_from, frame=args.frame, template=args.template,
        iterations=args.iterations, minutes=args.minutes if args.minutes is not None or args.iterations else 5.0,
        warmup_iterations=args.warmup, architecture=args.architecture, parameterization=args.parameterization,
        sdd=args.sdd, pixel_spacing=args.pixel_spacing,
        device=args.device, threads=args.threads, seed=args.seed, validate_every=args.validate_every,
        checkpoint_every=args.checkpoint_every, resume=args.resume,
        progress_bar=not (args.progress_json or args.quiet), **profile,
    )


def _train(args: argparse.Namespace) -> int:
    from ..io.events import EXIT_CANCELLED, CancelToken, emit
    from ..learning.training import train

    config = _training_config(args)
    cancel_file = Path(args.cancel_file or Path(args.output) / "CANCEL")
    cancel_file.unlink(missing_ok=True)  # a request from before this run started is stale
    token = CancelToken(cancel_file, handle_signals=True)
    progress = (lambda event: emit(**event)) if args.progress_json else None
    result = train(config, progress=progress, should_stop=token)
    if not args.progress_json:
        summary = result.validation or {}
        extra = f", validation mTRE {summary['mtre_mm']:.1f} mm" if "mtre_mm" in summary else ""
        print(f"{result.status} after {result.iterations} iterations ({result.elapsed_s:.0f} s){extra}; model in {result.model_dir}")
    return EXIT_CANCELLED if result.status == "cancelled" else 0


def _add_register(sub, show_settings: bool = False) -> None:
    register = sub.add_parser("register", help="register X-ray/DSA DICOMs to a CT or MRA (one result per X-ray)")
    options = REGISTER_OPTIONS
    if show_settings:
        options = tuple(replace(o, required=False, nargs="*" if o.positional else o.nargs) for o in options)
    add_options(register, options)
    register.set_defaults(func=_register)


def _add_train(sub) -> None:
    train = sub.add_parser("train", help="train a pose-regression model on DRRs of a CT")
    add_options(train, TRAIN_OPTIONS)
    train.set_defaults(func=_train)


def _model_pull(args: argparse.Namespace) -> int:
    from ..learning.hub import pull

    print(pull(args.repo, revision=args.revision, file=args.file, cache_dir=args.cache_dir))
    return 0


def _model_import(args: argparse.Namespace) -> int:
    from ..learning.xvr_import import import_xvr

    print(f"wrote {import_xvr(args.checkpoint, args.out_dir)}")
    return 0


def _model_info(args: argparse.Namespace) -> int:
    import json

    from ..learning.model_files import load_model

    meta = load_model(args.model).metadata
    keys = ("architecture", "pose", "camera", "input", "volume", "modality", "sampling", "training", "source", "software")
    print(json.dumps({k: meta[k] for k in keys if k in meta}, indent=1))
    return 0


def _add_model(sub) -> None:
    model = sub.add_parser("model", help="pretrained models: pull, import, inspect")
    msub = model.add_subparsers(dest="model_command", required=True)
    pull = msub.add_parser("pull", help="download a model from Hugging Face (cached; works offline once cached)")
    pull.add_argument("repo", help="owner/name on Hugging Face, or a local copy of such a repository")
    pull.add_argument("--revision", help="branch, tag or commit")
    pull.add_argument("--file", help="sub-folder or file (e.g. an xvr .pth, converted on the fly) in the repository")
    pull.add_argument("--cache-dir", help="Hugging Face cache folder (default: the hub's)")
    pull.set_defaults(func=_model_pull)
    imp = msub.add_parser("import-xvr", help="convert an xvr .pth checkpoint (restricted unpickling) to a model folder")
    imp.add_argument("checkpoint")
    imp.add_argument("out_dir")
    imp.set_defaults(func=_model_import)
    info = msub.add_parser("info", help="print a model's metadata")
    info.add_argument("model")
    info.set_defaults(func=_model_info)


def _evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .evaluate import EvaluationSettings, run_evaluation, table

    config = EvaluationSettings(volume=args.volume, output=args.output, preset=args.preset, n=args.n, labels=args.labels,
                              structures=tuple(args.structures or ()), seed=args.seed, pixels=args.pixels,
                              modality=args.modality, vessels=args.vessels)
    with tqdm(total=args.n, desc="xvrcore evaluate", unit="X-ray", disable=args.quiet) as bar:
        def progress(done: int, total: int, record: dict) -> None:
            final = record["perturbed"]["final"]["mtre_mm"], record["header"]["final"]["mtre_mm"]
            bar.set_postfix_str(f"last mTRE {final[0]:.2f} / {final[1]:.2f} mm (perturbed / header start)")
            bar.update(1)

        summary = run_evaluation(config, progress=progress)
    print(table(summary))
    print(f"results, table and plot in {Path(args.output).resolve()}")
    return 0


def _add_evaluate(sub) -> None:
    from .evaluate import PRESETS

    ev = sub.add_parser("evaluate", help="accuracy harness: synthetic X-ray DICOMs of a CT, registered and scored")
    ev.add_argument("--volume", required=True, help="CT (NIfTI, NRRD, MHA or a DICOM folder)")
    add_options(ev, MODALITY_OPTIONS)
    ev.add_argument("--labels", help="label map: register on --structures only")
    ev.add_argument("--structures", type=positive_int, nargs="*")
    ev.add_argument("--preset", choices=PRESETS, default="pelvis")
    ev.add_argument("--n", type=positive_int, default=20, help="number of synthetic X-rays (default: %(default)s)")
    ev.add_argument("--pixels", type=_DETECTOR_PIXELS, help="detector pixels per side (default: the preset's)")
    ev.add_argument("--seed", type=non_negative_int, default=0)
    ev.add_argument("--output", required=True, help="output folder (re-running resumes)")
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(func=_evaluate)


def _add_demo(sub) -> None:
    from ..drr import METHODS

    demo = sub.add_parser("demo", help="render frontal and lateral DRRs of the shipped pelvis CT")
    demo.add_argument("--output", default="demo_output", help="output folder (default: %(default)s)")
    demo.add_argument("--ct", help="CT to use instead of the shipped pelvis CT")
    demo.add_argument("--size", type=_DETECTOR_PIXELS, default=384, help="detector columns (default: %(default)s)")
    demo.add_argument("--method", choices=METHODS, default="trilinear")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.add_argument("--no-registration", action="store_true", help="only the DRR views (no X-ray registration)")
    demo.set_defaults(func=_demo)


def _add_render(sub) -> None:
    from ..drr import METHODS
    from ..geometry.carm import ORIENTATIONS

    render = sub.add_parser("render", help="render one DRR of a volume at a pose")
    render.add_argument("--volume", required=True, help="CT (NIfTI, NRRD, MHA or a DICOM folder)")
    add_options(render, MODALITY_OPTIONS)
    where = render.add_mutually_exclusive_group(required=True)
    where.add_argument("--pose", help="pose JSON in the shared result format")
    where.add_argument("--carm", type=finite_float, nargs=6, metavar=("ALPHA", "BETA", "GAMMA", "X", "Y", "Z"),
                       help="the paper's C-arm parameters (degrees, mm) about the volume centre")
    render.add_argument("--orientation", choices=ORIENTATIONS, default="PA")
    render.add_argument("--sdd", type=positive_float, default=1020.0, help="source-to-detector distance, mm")
    render.add_argument("--size", type=_DETECTOR_PIXELS, nargs="+", metavar="PIXELS",
                        help="image size: one number (square) or WIDTH HEIGHT (default: with --carm 256; with --pose "
                             "the file's image_size, else the size centred on its principal point; a pose file "
                             "declaring another size is refused)")
    render.add_argument("--spacing", type=positive_float, default=1.4, help="detector pixel spacing, mm")
    render.add_argument("--method", choices=METHODS, default="trilinear")
    render.add_argument("--bone-multiplier", type=Bounded(float, low=0), default=1.0,
                        help="scale of bone attenuation over soft tissue (default: %(default)s)")
    render.add_argument("--output", required=True, help="PNG to write (a pose JSON is written beside it)")
    render.set_defaults(func=_render)


def build_parser(show_settings: bool = False) -> argparse.ArgumentParser:
    """The ``xvrcore`` parser: one sub-command per job, each with its handler as ``func``
    (``show_settings``: register's inputs, volume and output are optional)."""
    parser = argparse.ArgumentParser(prog="xvrcore", description="X-ray to CT/MRA registration core (SlicerXVR).")
    parser.add_argument("--version", action="version", version=f"xvrcore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_demo, _add_render, _add_register, add_animate, _add_evaluate, _add_train, _add_model):
        if add is _add_register:
            add(sub, show_settings)
        else:
            add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``xvrcore`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code (2: a clear error,
    3: the disk is full, 130: interrupted)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    # --show-settings needs no inputs: register's required options are relaxed for it.
    args = build_parser(show_settings="--show-settings" in argv).parse_args(argv)
    try:
        with warnings.catch_warnings():  # a warning is one line, like an error (no source line)
            warnings.showwarning = lambda message, *_, **__: print(
                f"xvrcore {args.command}: warning: {message}", file=sys.stderr)
            return args.func(args)
    except _EXPECTED_ERRORS as exc:
        if is_disk_full(exc):
            return _disk_full(args.command, exc)
        print(f"xvrcore {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xvrcore {args.command}: interrupted", file=sys.stderr)
        return 130


def _disk_full(command: str, exc: BaseException) -> int:
    filename = getattr(exc, "filename", None)
    where = f" while writing {filename}" if filename else ""
    print(f"xvrcore {command}: error: the disk is full{where}; free space and run again "
          "(results finished before are kept)", file=sys.stderr)
    return EXIT_DISK_FULL

if __name__ == "__main__":
    sys.exit(main())
