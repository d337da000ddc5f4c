"""Registration settings as a file users tune (TOML or JSON), validated, and the common overrides.

One concept: the text form of :class:`~xvrcore.registration.settings.RegistrationSettings`. Its keys
are the dataclasses' field names (``stages`` is a list of :class:`Stage` tables, ``search`` a
:class:`SearchSettings` table or ``false`` for none, ``retry_searches`` a list of them); a file may
give any subset, the rest keeps its default, and a ``stages`` list replaces the whole schedule. An
unknown key is refused naming it and the valid ones; a wrong type or a value out of range names the
key and the file. :func:`settings_text` writes what :func:`read_settings_file` reads back.

:func:`tuned_settings` applies the options a user tunes most (xvr's ``--scales``, ``--n-itrs``,
``--lr-rot``, ``--lr-xyz``, ``--patience``, ``--threshold``, ``--max-n-plateaus``, ``--metric``).
"""

from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import MISSING, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from ..drr import METHODS
from .settings import RegistrationSettings, Stage

__all__ = [
    "SIMILARITY_METRICS",
    "SettingsFileError",
    "read_settings_file",
    "settings_from_dict",
    "settings_text",
    "settings_to_dict",
    "tuned_settings",
]

#: ``--metric``: the weight of multiscale NCC in every stage (the rest is gradient NCC).
SIMILARITY_METRICS = {"mncc": 1.0, "gncc": 0.0, "mix": 0.5}

# (low, high, low is exclusive) for the fields whose range is limited; every number must be finite.
_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "Stage.size": (8, 4096, False),
    "Stage.iterations": (1, None, False),
    "Stage.lr_rotation": (0, None, True),
    "Stage.lr_translation": (0, None, True),
    "Stage.similarity_weight": (0, 1, False),
    "Stage.lod_bias": (0, 16, False),
    "Stage.patience": (0, None, False),
    "Stage.max_reductions": (0, None, False),
    "SearchSettings.translation_mm": (0, None, False),
    "SearchSettings.step_mm": (0, None, True),
    "SearchSettings.batch": (1, None, False),
    "RegistrationSettings.retry_below": (-1, 1, False),
    "RegistrationSettings.patience": (0, None, False),
    "RegistrationSettings.threshold": (0, None, False),
    "RegistrationSettings.reduce_factor": (0, 1, True),
    "RegistrationSettings.max_reductions": (0, None, False),
    "RegistrationSettings.time_budget_s": (0, None, True),
}
_CHOICES = {"RegistrationSettings.method": METHODS}
_MAY_BE_EMPTY = {"RegistrationSettings.retry_searches"}  # no retries; every other list needs a value


class SettingsFileError(ValueError):
    """A settings file (or dictionary) with an unknown key, a wrong type or a value out of range."""


# ---- dictionary → settings ---------------------------------------------------------------------


def settings_from_dict(data: Any, source: str = "settings") -> RegistrationSettings:
    """:class:`RegistrationSettings` from a dictionary in the file's form (defaults for what it leaves out)."""
    return _build(RegistrationSettings, data, source, "")


def _build(cls: type, data: Any, source: str, where: str):
    if not isinstance(data, dict):
        raise SettingsFileError(f"{source}: {where or 'the settings'} must be a table of keys, got {_shown(data)}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SettingsFileError(f"{source}: unknown key {_join(where, unknown[0])!r}; valid keys"
                                f"{' of ' + where if where else ''}: {', '.join(known)}")
    hints = typing.get_type_hints(cls)
    missing = [name for name, f in known.items()
               if name not in data and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise SettingsFileError(f"{source}: {where or 'the settings'} needs {', '.join(missing)}")
    values = {name: _convert(value, hints[name], source, _join(where, name), f"{cls.__name__}.{name}")
              for name, value in data.items()}
    return cls(**values)


def _convert(value: Any, hint: Any, source: str, where: str, field_key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None or value is False:  # TOML has no null: `search = false` means none
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, source, where, field_key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SettingsFileError(f"{source}: {where} must be a list, got {_shown(value)}")
        if not value and field_key not in _MAY_BE_EMPTY:
            raise SettingsFileError(f"{source}: {where} must list at least one value")
        return tuple(_convert(v, args[0], source, f"{where}[{i}]", field_key) for i, v in enumerate(value))
    if is_dataclass(hint):
        return _build(hint, value, source, where)
    return _scalar(value, hint, source, where, field_key)


def _scalar(value: Any, hint: Any, source: str, where: str, field_key: str) -> Any:
    if hint is str:
        if not isinstance(value, str):
            raise SettingsFileError(f"{source}: {where} must be text, got {_shown(value)}")
        choices = _CHOICES.get(field_key)
        if choices is not None and value not in choices:
            raise SettingsFileError(f"{source}: {where} must be one of {', '.join(choices)}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise SettingsFileError(f"{source}: {where} must be true or false, got {_shown(value)}")
        return value
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int and not (is_number and float(value).is_integer()):
        raise SettingsFileError(f"{source}: {where} must be an integer, got {_shown(value)}")
    if hint is float and not (is_number and math.isfinite(value)):
        raise SettingsFileError(f"{source}: {where} must be a finite number, got {_shown(value)}")
    number = int(value) if hint is int else float(value)
    _check_range(number, field_key, source, where)
    return number


def _check_range(number: float, field_key: str, source: str, where: str) -> None:
    low, high, open_low = _RANGES.get(field_key, (None, None, False))
    below = low is not None and (number <= low if open_low else number < low)
    if below or (high is not None and number > high):
        bounds = [f"{'>' if open_low else '≥'} {low}" if low is not None else "", f"≤ {high}" if high is not None else ""]
        raise SettingsFileError(f"{source}: {where} must be {' and '.join(b for b in bounds if b)}, got {number}")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _shown(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__


def read_settings_file(path: str | Path) -> RegistrationSettings:
    """Settings from a ``.toml`` (Python ≥ 3.11) or ``.json`` file; errors name the file and the key."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise SettingsFileError(f"{path}: a settings file must be .toml or .json, got {suffix or 'no suffix'!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsFileError(f"{path}: settings file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsFileError(f"{path}: not a readable settings file ({exc})") from None
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsFileError(f"{path}: not valid JSON ({exc})") from None
    else:
        data = _parse_toml(text, path)
    return settings_from_dict(data, str(path))


def _parse_toml(text: str, path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise SettingsFileError(f"{path}: TOML settings need Python ≥ 3.11; write them as JSON") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsFileError(f"{path}: not valid TOML ({exc})") from None


# ---- settings → text ----------------------------------------------------------------------------


def settings_to_dict(settings: RegistrationSettings) -> dict[str, Any]:
    """The file form of ``settings``: lists for tuples, ``search = False`` for none, unset options left out."""
    return _plain(settings)


def _plain(value: Any) -> Any:
    if is_dataclass(value):
        out = {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, RegistrationSettings) and value.search is None:
            out["search"] = False
        return {key: v for key, v in out.items() if v is not None}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def settings_text(settings: RegistrationSettings, form: str = "toml") -> str:
    """``settings`` as TOML (default) or JSON text that :func:`read_settings_file` reads back unchanged."""
    data = settings_to_dict(settings)
    if form == "json":
        return json.dumps(data, indent=2) + "\n"
    if form != "toml":
        raise ValueError(f"form must be 'toml' or 'json', got {form!r}")
    return _toml(data)


def _toml(data: dict) -> str:
    tables = {key: v for key, v in data.items() if isinstance(v, dict) or _is_table_list(v)}
    lines = ["# xvrcore register settings (read back with --settings FILE)"]
    lines += [f"{key} = {_toml_value(v)}" for key, v in data.items() if key not in tables]
    for key, value in tables.items():
        for table in value if isinstance(value, list) else [value]:
            lines += ["", f"[[{key}]]" if isinstance(value, list) else f"[{key}]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for the names used here
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as a TOML value")


# ---- the common options -------------------------------------------------------------------------


def tuned_settings(settings: RegistrationSettings, *, scales: list[int] | None = None,
                   iterations: list[int] | None = None, lr_rotation: list[float] | None = None,
                   lr_translation: list[float] | None = None, patience: int | None = None,
                   threshold: float | None = None, max_plateaus: int | None = None,
                   metric: str | None = None) -> RegistrationSettings:
    """``settings`` with the options a user gave (None: unchanged).

    ``scales``: the stages' image sizes (px, coarse to fine); a new stage takes its other parameters
    from the existing stage at the same relative place in the schedule (one scale: the last stage).
    ``iterations``, ``lr_rotation`` (rad/step), ``lr_translation`` (mm/step): one value for every
    stage or one per stage. ``patience`` and ``max_plateaus`` (a stage ends at its N-th plateau, as
    in xvr: ``max_reductions = N − 1``) apply to every stage, replacing per-stage values.
    ``metric``: a key of :data:`SIMILARITY_METRICS`.
    """
    stages = settings.stages
    if scales is not None:
        stages = tuple(replace(stages[_spread(i, len(scales), len(stages))], size=int(size))
                       for i, size in enumerate(scales))
    for name, values in (("iterations", iterations), ("lr_rotation", lr_rotation), ("lr_translation", lr_translation)):
        if values is not None:
            stages = _per_stage(stages, name, values)
    if patience is not None:
        stages = tuple(replace(s, patience=None) for s in stages)
        settings = replace(settings, patience=patience)
    if max_plateaus is not None:
        if max_plateaus < 1:
            raise ValueError(f"max_plateaus must be ≥ 1, got {max_plateaus}")
        stages = tuple(replace(s, max_reductions=None) for s in stages)
        settings = replace(settings, max_reductions=max_plateaus - 1)
    if metric is not None:
        if metric not in SIMILARITY_METRICS:
            raise ValueError(f"metric must be one of {', '.join(SIMILARITY_METRICS)}, got {metric!r}")
        stages = tuple(replace(s, similarity_weight=SIMILARITY_METRICS[metric]) for s in stages)
    if threshold is not None:
        settings = replace(settings, threshold=threshold)
    return settings_from_dict(settings_to_dict(replace(settings, stages=stages)))  # validated like a file


def _spread(index: int, count: int, existing: int) -> int:
    """The existing stage at the same relative place as stage ``index`` of ``count``."""
    return existing - 1 if count == 1 else round(index * (existing - 1) / (count - 1))


def _per_stage(stages: tuple[Stage, ...], name: str, values: list) -> tuple[Stage, ...]:
    if len(values) == 1:
        values = list(values) * len(stages)
    if len(values) != len(stages):
        raise ValueError(f"{name}: give one value or one per stage ({len(stages)} stages), got {len(values)}")
    return tuple(replace(stage, **{name: value}) for stage, value in zip(stages, values, strict=True))

