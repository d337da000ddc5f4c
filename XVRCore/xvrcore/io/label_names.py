"""Names and colours of label-map structures: a JSON ``{"1": "spleen", ...}`` or a Slicer colour table."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["read_label_names"]


def read_label_names(path: str | Path) -> tuple[dict[int, str], dict[int, tuple[int, int, int]]]:
    """Names (and colours) of labels: a JSON ``{"1": "spleen", ...}`` or a Slicer colour table (``id name r g b a``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the label names ({exc.strerror or exc})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
            return {int(k): str(v) for k, v in data.items()}, {}
        except (json.JSONDecodeError, AttributeError, ValueError) as exc:
            raise ValueError(f"{path}: expected a JSON object {{\"label id\": \"name\"}} ({exc})") from None
    names, colors = {}, {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            label = int(parts[0])
        except ValueError:
            raise ValueError(f"{path}: expected lines 'id name r g b a' (a Slicer colour table), got {line!r}") from None
        if len(parts) > 1:
            names[label] = parts[1]
        if len(parts) >= 5:
            colors[label] = tuple(int(v) for v in parts[2:5])
    return names, colors
