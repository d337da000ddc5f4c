"""The options of ``xvrcore register`` and ``xvrcore train``, described once.

:data:`REGISTER_OPTIONS` and :data:`TRAIN_OPTIONS` are tables of :class:`Option`. From them
:func:`add_options` gives the command line (:mod:`xvrcore.app.cli`) its argparse arguments, and
:func:`register_command` / :func:`train_command` build the argument list of a background job (the
Slicer panels run these). So a flag, its type and its choices are spelled in one place, and every
list built here parses back (``build_parser().parse_args(command[3:])``) to the values passed.

Choices are the core's own tables (training profiles, pose presets, C-arm orientations, network
architectures and rotation parameterizations, frame modes, start methods), never copies of them.
"""

from __future__ import annotations

import argparse
import math
import numbers
import re
import sys
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..geometry.carm import ORIENTATIONS
from ..learning.network import ARCHITECTURES, PARAMETERIZATIONS
from ..learning.sampling import PRESETS, get_preset
from ..learning.training import PROFILES
from ..registration import INIT_METHODS
from ..registration.inputs import NAMINGS
from ..registration.multiview import JOINT_MODES
from ..registration.settings_file import SIMILARITY_METRICS
from ..volume.frames import FRAME_MODES
from ..volume.modality import MODALITY_CHOICES
from ..xray.pixels import FRAME_REDUCTIONS
from .option_types import (
    Bounded,
    angle,
    finite_float,
    fraction,
    non_negative_int,
    positive_float,
    positive_int,
    positive_seconds,
)

__all__ = [
    "CUSTOM_RANGES",
    "DEVICES",
    "MODALITY_OPTIONS",
    "REGISTER_OPTIONS",
    "TRAIN_OPTIONS",
    "Option",
    "add_options",
    "build_command",
    "register_command",
    "train_command",
]

DEVICES = ("auto", "cpu", "cuda")  # "auto": CUDA when available
CUSTOM_RANGES = (("alpha", "deg"), ("beta", "deg"), ("gamma", "deg"), ("x", "mm"), ("y", "mm"), ("z", "mm"))


@dataclass(frozen=True)
class Option:
    """One command-line option: its argparse ``dest`` and everything argparse and the builders need.

    ``flag`` options are switches (``store_true``); ``repeat`` ones take one value per occurrence
    (``append``); ``group`` names a set of options of which at most one may be given.
    """

    dest: str
    help: str | None = None
    type: Callable[[str], Any] | None = None
    nargs: int | str | None = None
    choices: Collection | None = None
    default: Any = None
    metavar: str | tuple[str, ...] | None = None
    required: bool = False
    flag: bool = False
    repeat: bool = False
    positional: bool = False
    group: str | None = None
    aliases: tuple[str, ...] = ()  # other spellings accepted on the command line (xvr's names)

    @property
    def name(self) -> str:
        """The command-line spelling: ``--label-names`` for ``label_names``; the dest for a positional."""
        return self.dest if self.positional else "--" + self.dest.replace("_", "-")

    def argparse_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``ArgumentParser.add_argument`` for this option."""
        if self.flag:
            return {"action": "store_true", "help": self.help}
        given = {"type": self.type, "nargs": self.nargs, "choices": self.choices, "metavar": self.metavar,
                 "action": "append" if self.repeat else None, "default": self.default}
        kwargs = {key: value for key, value in given.items() if value is not None}
        if self.required:
            kwargs["required"] = True
        return {**kwargs, "help": self.help}


def _frame(text: str) -> int | str:
    """An X-ray frame: a reduction over the frames (max, min, mean) or a frame number."""
    if text in FRAME_REDUCTIONS:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {', '.join(FRAME_REDUCTIONS)} or a frame number, got {text!r}") from None


_integer = Bounded(int)  # any integer (frame numbers count from the end when negative)


def _preset(text: str) -> str:
    """A pose preset's name, aliases ("neuro", "head") and spelling variants accepted."""
    try:
        return get_preset(text).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# The test-time optimisation a user tunes (xvr's names; their underscore spellings are accepted too).
TUNING_OPTIONS: tuple[Option, ...] = (
    Option("settings", "registration settings file, TOML or JSON (stages, similarity weights, search, retries; "
                       "--show-settings prints one); the options below override it", metavar="FILE"),
    Option("show_settings", "print the effective settings as a --settings file (TOML) and exit", flag=True),
    Option("scales", "the stages' image sizes in pixels, coarse to fine (xvr's --scales are downsampling "
                     "factors; these are sizes)", type=Bounded(int, low=8, high=4096), nargs="+", metavar="PX"),
    Option("n_itrs", "iterations per stage: one value for all stages or one per stage", type=positive_int, nargs="+",
           metavar="N", aliases=("--n_itrs", "--max-n-itrs", "--max_n_itrs")),
    Option("lr_rot", "rotation step (radians), one value or one per stage", type=positive_float, nargs="+",
           metavar="RAD", aliases=("--lr_rot",)),
    Option("lr_xyz", "translation step (mm), one value or one per stage", type=positive_float, nargs="+",
           metavar="MM", aliases=("--lr_xyz",)),
    Option("patience", "iterations without improvement before the steps drop (every stage)",
           type=non_negative_int, metavar="N"),
    Option("threshold", "relative improvement that counts as one", type=Bounded(float, low=0), metavar="T"),
    Option("max_n_plateaus", "a stage ends at its N-th plateau (every stage)", type=positive_int, metavar="N",
           aliases=("--max_n_plateaus",)),
    Option("metric", "similarity in every stage: mncc (multiscale NCC), gncc (gradient NCC) or mix (½ each); "
                     "default: each stage's weights", choices=tuple(SIMILARITY_METRICS)),
)

# The volume's modality and the vessel model (xvrcore.volume.modality, xvrcore.volume.vessels).
MODALITY_OPTIONS: tuple[Option, ...] = (
    Option("modality", "ct (HU: the whole anatomy) or mra (bright vessels only, for a DSA); default auto: the "
                       "DICOM Modality, else ct (a NIfTI/NRRD file has no modality)", choices=MODALITY_CHOICES,
           default="auto"),
    Option("vessels", "vessel segmentation (label map, non-zero = vessel) on the volume's grid: render these "
                      "vessels as contrast instead of the MRA intensity model", metavar="LABELS"),
)

REGISTER_OPTIONS: tuple[Option, ...] = (
    Option("xrays", "X-ray DICOM files, or folders of them", nargs="+", metavar="XRAY", positional=True),
    Option("volume", "CT (NIfTI, NRRD, MHA or a DICOM folder)", required=True),
    *MODALITY_OPTIONS,
    Option("labels", "label map on the volume's grid (outlines; with --structures, registration)"),
    Option("structures", "register on these labels only (needs --labels); default: the whole volume",
           type=positive_int, nargs="+", metavar="ID"),
    Option("label_names", "label names: JSON {id: name} or a Slicer colour table"),
    Option("init", "how to start (default: from the --init-pose, --landmarks or --model given, else the DICOM "
                   "positioner angles)", choices=INIT_METHODS),
    Option("init_pose", "start from a pose JSON (or a folder of <stem>.json)", metavar="POSE.json", group="start"),
    Option("landmarks", "start from 2D-3D landmarks (or a folder of <stem>.json)", metavar="L.json", group="start"),
    Option("model", "start from a trained network's pose estimate (xvrcore train)", metavar="MODEL_DIR", group="start"),
    Option("carm", "start from the paper's C-arm parameters (degrees, mm) about the --isocenter (default: the "
                   "volume centre), as xvr's register fixed", type=finite_float, nargs=6,
           metavar=("ALPHA", "BETA", "GAMMA", "X", "Y", "Z"), group="start"),
    Option("orientation", "the frame of --carm (xvrcore.geometry.carm; default PA)", choices=ORIENTATIONS),
    Option("allow_other_volume", "use a patient-specific model on a CT it was not trained on", flag=True),
    Option("isocenter", "RAS mm the C-arm turns about (default: the volume centre)",
           type=finite_float, nargs=3, metavar=("X", "Y", "Z")),
    Option("frame", f"{', '.join(FRAME_REDUCTIONS)} or a frame number (default: max over frames)", type=_frame),
    Option("mask_frame", "subtract this frame (DSA; 0-based, negative from the end)", type=_integer, metavar="N"),
    Option("pixel_spacing", "detector pixel spacing, mm", type=positive_float, nargs=2, metavar=("ROW", "COL")),
    Option("sdd", "source-detector distance", type=positive_float, metavar="MM"),
    Option("sod", "source-isocentre distance", type=positive_float, metavar="MM"),
    Option("primary_angle", "LAO+/RAO- angle", type=angle(180), metavar="DEG"),
    Option("secondary_angle", "CRA+/CAU- angle", type=angle(90), metavar="DEG"),
    Option("time_budget", "stop refining each X-ray after S seconds (the best pose so far is the result)",
           type=positive_seconds, metavar="S"),
    Option("no_retry", "no wider searches when the result's similarity says it failed (faster, less robust)",
           flag=True),
    Option("joint", "register the X-rays together as views of one static patient (xvrcore.registration.multiview)",
           flag=True, group="together"),
    Option("joint_mode", "--joint: shared or independent C-arm poses (default: auto, said in the result)",
           choices=JOINT_MODES),
    Option("track", "track every frame of one multi-frame X-ray: <stem>_track.jsonl", flag=True, group="together"),
    *TUNING_OPTIONS,
    Option("output", "folder for <stem>.json, .tfm, _overlay.png, _checkerboard.png", required=True),
    Option("overwrite", "register again inputs that already have a result", flag=True),
    Option("save_trajectory", "also write <stem>_trajectory.json: the poses the registration went through "
                              "(for xvrcore animate)", flag=True),
    Option("animate", "also write <stem>_animation.gif: the DRR over the X-ray as the pose converges (and the "
                      "trajectory)", flag=True),
    Option("name_outputs", "name each result by the X-ray's file name (stem, default), its SOP Instance UID (uid) "
                           "or a hash of it (hash); uid and hash also keep file names out of the result JSON",
           choices=NAMINGS, default="stem"),
    Option("device", "where to compute (default: %(default)s, CUDA when available)", choices=DEVICES,
           default="auto"),
    Option("cancel_file", "stop cleanly (keeping finished results) when this file appears"),
    Option("progress_json", "JSON-line progress events on stdout", flag=True),
    Option("quiet", "no progress bar or per-X-ray lines", flag=True),
)

# The network halves its input five times; below 32 pixels nothing is left to learn from.
_IMAGE_SIZE = Bounded(int, low=32)

TRAIN_OPTIONS: tuple[Option, ...] = (
    Option("volume", "CT to train on; repeat for patient-agnostic pretraining on several pre-registered CTs",
           required=True, repeat=True),
    *MODALITY_OPTIONS,
    Option("output", "run folder (checkpoints and the final model)", required=True),
    Option("preset", "pose ranges (default: %(default)s)", type=_preset, choices=PRESETS, default="pelvis"),
    *(Option(name, f"custom {name} range ({unit})", type=finite_float, nargs=2, metavar=("MIN", "MAX"))
      for name, unit in CUSTOM_RANGES),
    Option("orientation", "override the preset's orientation", choices=ORIENTATIONS),
    Option("labelmap", "label map on the CT's grid: render only --labels"),
    Option("labels", "structures of --labelmap to render", type=positive_int, nargs="+"),
    Option("init_from", "pretrained model folder (or xvr .pth) to finetune"),
    Option("frame", "finetuning frame correction: centre alignment or rigid registration to --template",
           choices=FRAME_MODES, default="center"),
    Option("template", "template CT of the pretrained model (for --frame register)"),
    Option("minutes", "time budget (default 5 when no --iterations)", type=positive_float),
    Option("iterations", "iteration budget", type=positive_int),
    Option("profile", "standard: the paper's recipe (128 px, ResNet-18, image + pose loss; for a GPU); quick: 64 px, "
                      "half width, batch 16, lr 3e-3, the pose term alone (for a CPU). The options below override it",
           choices=PROFILES, default="standard"),
    Option("batch_size", "DRRs per iteration (standard 32)", type=positive_int),
    Option("lr", "peak learning rate (standard 1e-3)", type=positive_float),
    Option("warmup", "warm-up iterations", type=non_negative_int, default=100),
    Option("pose_loss_fraction", "train the first F of the budget on the pose term alone, then on the paper's loss "
                                 "(standard 0)", type=fraction, metavar="F"),
    Option("image_size", "canonical image size in pixels (standard 128)", type=_IMAGE_SIZE, aliases=("--height",)),
    Option("sdd", "source-to-detector distance of the training camera (default: the preset's)",
           type=positive_float, metavar="MM"),
    Option("pixel_spacing", "detector pixel spacing of the training camera (default: the preset's field of view / "
                            "--image-size)", type=positive_float, metavar="MM", aliases=("--delx",)),
    Option("architecture", "network (default: %(default)s)", choices=ARCHITECTURES, default="resnet18"),
    Option("width", "channels of the first ResNet stage (standard 64)", type=positive_int),
    Option("parameterization", "rotation output of the network (default: %(default)s)", choices=PARAMETERIZATIONS,
           default="quaternion_adjugate"),
    Option("device", "where to train (default: %(default)s, CUDA when available)", choices=DEVICES, default="auto"),
    Option("threads", "CPU threads (default: all cores; use fewer when cores are busy)", type=positive_int),
    Option("seed", "random seed", type=non_negative_int, default=0),
    Option("validate_every", "iterations between validations (0: none)", type=non_negative_int, default=200),
    Option("checkpoint_every", "iterations between checkpoints", type=positive_int, default=500),
    Option("resume", "continue the run in --output from its last checkpoint", flag=True),
    Option("cancel_file", "stop cleanly when this file appears (default: OUTPUT/CANCEL)"),
    Option("progress_json", "machine-readable progress events on stdout", flag=True),
    Option("quiet", "no progress bar", flag=True),
)


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    """Add ``options`` to ``parser`` (options sharing a ``group`` become mutually exclusive)."""
    groups: dict[str, Any] = {}
    for option in options:
        target = parser
        if option.group is not None:
            if option.group not in groups:
                groups[option.group] = parser.add_mutually_exclusive_group()
            target = groups[option.group]
        if option.positional:
            target.add_argument(option.dest, **option.argparse_kwargs())
        else:
            target.add_argument(option.name, *option.aliases, dest=option.dest, **option.argparse_kwargs())


def _is_negative_number(token: str) -> bool:
    # argparse's own test: any other token that starts with "-" is taken for an option (e.g. "-1e-05").
    return re.fullmatch(r"-\d+|-\d*\.\d+", token) is not None


def _number_token(value: numbers.Real) -> str:
    """``repr`` of the float (exact round trip); an exact decimal where argparse would misread the repr."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    text = repr(number)
    if text.startswith("-") and not _is_negative_number(text):
        text = format(Decimal(number), "f")  # "-1e-05" looks like an option; its exact decimal does not
    return text


def _text(option: Option, value: Any) -> str:
    """The text of one value: numbers for a float option, and non-integral numbers, as :func:`_number_token`."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    is_float = option.type is float or getattr(option.type, "kind", None) is float
    if real and (is_float or not isinstance(value, numbers.Integral)):
        return _number_token(value)
    return str(value)


def _token(option: Option, value: Any) -> str:
    """One value as the parser reads it back: floats by ``repr``, paths and names as text; checked."""
    try:
        text = _text(option, value)
        parsed = option.type(text) if option.type is not None else text
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        raise ValueError(f"{option.dest}: invalid value {value!r} ({exc})") from None
    if option.choices is not None and parsed not in option.choices:
        raise ValueError(f"{option.dest}: {value!r} is not one of {', '.join(map(str, option.choices))}")
    return text


def _as_list(value: Any) -> list:
    """A sequence as a list; one value (a path or a name is one value) as a list of one."""
    return list(value) if isinstance(value, Iterable) and not isinstance(value, (str, Path)) else [value]


def _values(option: Option, value: Any) -> list[str]:
    """The tokens after the option's name: one value, a fixed-length tuple or a non-empty list."""
    if option.nargs is None:
        return [_token(option, value)]
    many = _as_list(value)
    if isinstance(option.nargs, int) and len(many) != option.nargs:
        raise ValueError(f"{option.dest}: expected {option.nargs} values, got {value!r}")
    if not many:
        raise ValueError(f"{option.dest}: expected at least one value")
    return [_token(option, v) for v in many]


def _option_tokens(option: Option, value: Any) -> list[str]:
    """The option's name and values (a repeated option: name and value for each of its values)."""
    if option.flag:
        return [option.name]
    if option.positional:
        return _values(option, value)
    if option.repeat:
        each = _as_list(value)
        if not each:
            raise ValueError(f"{option.dest}: expected at least one value")
        return [token for v in each for token in (option.name, *_values(option, v))]
    return [option.name, *_values(option, value)]


def build_command(command: str, table: Iterable[Option], values: dict[str, Any], python: str | None = None) -> list[str]:
    """``[python, "-m", "xvrcore", command, ...]`` for ``values`` keyed by the ``dest`` of ``table``'s options.

    ``None`` and ``False`` are left out. Raises ``ValueError`` naming an unknown keyword, a missing
    required option, a value the option refuses (type, choices, count) or two options of one group.
    """
    table = tuple(table)
    known = {option.dest: option for option in table}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) of xvrcore {command}: {', '.join(unknown)}")
    given = {dest: v for dest, v in values.items() if v is not None and v is not False}
    missing = [o.dest for o in table if o.required and o.dest not in given]
    if missing:
        raise ValueError(f"xvrcore {command} needs {', '.join(missing)}")
    groups: dict[str, list[str]] = {}
    for option in table:
        if option.group is not None and option.dest in given:
            groups.setdefault(option.group, []).append(option.dest)
    clash = next((dests for dests in groups.values() if len(dests) > 1), None)
    if clash:
        raise ValueError(f"xvrcore {command}: give only one of {', '.join(clash)}")
    arguments = [token for option in table if option.dest in given
                 for token in _option_tokens(option, given[option.dest])]
    return [python or sys.executable, "-m", "xvrcore", command, *arguments]


def register_command(xrays: Iterable[str | Path] | str | Path, *, python: str | None = None, **options: Any) -> list[str]:
    """The ``xvrcore register`` command line for ``xrays`` (DICOM files or folders).

    ``options`` are the argparse ``dest`` names of :data:`REGISTER_OPTIONS` (``volume``, ``output``,
    ``init_pose``, ``pixel_spacing=(row, col)``, ``progress_json=True`` …). Example::

        register_command(["a.dcm"], volume="ct.nrrd", output="out", landmarks="lm.json", frame=3,
                         sdd=1000.0, progress_json=True, quiet=True)
        # [sys.executable, "-m", "xvrcore", "register", "a.dcm", "--volume", "ct.nrrd", "--landmarks",
        #  "lm.json", "--frame", "3", "--sdd", "1000.0", "--output", "out", "--progress-json", "--quiet"]
    """
    if "xrays" in options:
        raise ValueError("pass the X-rays as the first argument, not as xrays=")
    paths = [xrays] if isinstance(xrays, (str, Path)) else list(xrays)
    if not paths:
        raise ValueError("xvrcore register needs at least one X-ray")
    return build_command("register", REGISTER_OPTIONS, {"xrays": paths, **options}, python)


def train_command(*, python: str | None = None, **options: Any) -> list[str]:
    """The ``xvrcore train`` command line.

    ``options`` are the argparse ``dest`` names of :data:`TRAIN_OPTIONS`: ``volume`` (one path or a
    list of them), ``output``, ``preset``, ``alpha`` … ``z`` as ``(min, max)``, ``profile`` …. Example::

        train_command(volume="ct.nii.gz", output="run", profile="quick", minutes=2.5, progress_json=True)
        # [sys.executable, "-m", "xvrcore", "train", "--volume", "ct.nii.gz", "--output", "run",
        #  "--minutes", "2.5", "--profile", "quick", "--progress-json"]
    """
    return build_command("train", TRAIN_OPTIONS, options, python)
