"""The batch table's rows, kept in the scene: one per X-ray with a result or a failure, read from the X-ray
nodes' attributes, so a saved and reloaded scene has the same rows. Never touches widgets.

* ``XVR.Quality`` (JSON: similarity, P(<1 mm), passed) and ``XVR.Result`` are set when a result is
  applied (:class:`.results.Results`); ``XVR.Failure`` holds the message of a failed registration
  (cleared by the next result); ``XVR.Checked`` = ``"true"`` once the user marked the X-ray checked.
* Status: ``failed``, ``check`` (the quality check did not pass) or ``pass``.
* Sorting (:data:`SORT_KEYS`): by name (A–Z), by status (failed, then check, then pass), by similarity or
  by quality (P(<1 mm)); the measures worst first, so what needs a look comes first.
* **Next to check** (:func:`nextToCheck`): the X-rays not marked checked, lowest quality first (failed,
  then check, then pass; within each, lowest P(<1 mm), then lowest similarity, then name), starting
  after the current X-ray in that order and wrapping around, so pressing it again walks through all
  of them. Lowest quality first rather than in import order: the likely failures are seen first,
  whatever the time left for checking.
"""

import json
import math

__all__ = ["CHECKED_ATTRIBUTE", "FAILURE_ATTRIBUTE", "SORT_KEYS", "batchRows", "markChecked", "nextToCheck",
           "recordFailure", "sortedRows"]

FAILURE_ATTRIBUTE = "XVR.Failure"
CHECKED_ATTRIBUTE = "XVR.Checked"
SORT_KEYS = ("name", "status", "similarity", "quality")
_STATUS_RANK = {"failed": 0, "check": 1, "pass": 2}


def _number(value) -> float:
    """A measure for sorting: a missing one (NaN, a failure) sorts first, as the worst."""
    value = float(value) if value is not None else math.nan
    return -math.inf if math.isnan(value) else value


def _row(node) -> dict | None:
    failure = node.GetAttribute(FAILURE_ATTRIBUTE)
    quality = node.GetAttribute("XVR.Quality")
    if not failure and not quality:
        return None
    values = json.loads(quality) if quality and not failure else {}
    status = "failed" if failure else ("pass" if values.get("passed") else "check")
    return {"id": node.GetID(), "name": node.GetName(), "status": status,
            "similarity": float(values.get("similarity", math.nan)),
            "p_submillimetre": float(values.get("p_submillimetre", math.nan)),
            "checked": node.GetAttribute(CHECKED_ATTRIBUTE) == "true",
            "message": failure or ("adjusted by hand" if node.GetAttribute("XVR.ManuallyAdjusted") == "true" else "")}


def batchRows(scene) -> list:
    """One row per X-ray with a result or a failure, in scene order (see the module docstring)."""
    from .nodes import xrayNodes

    return [row for row in (_row(node) for node in xrayNodes(scene)) if row is not None]


def _urgency(row) -> tuple:
    return (_STATUS_RANK[row["status"]], _number(row["p_submillimetre"]), _number(row["similarity"]), row["name"])


def sortedRows(rows, key: str = "name") -> list:
    """``rows`` sorted by one of :data:`SORT_KEYS` (ties: by name)."""
    if key == "name":
        return sorted(rows, key=lambda r: (r["name"].lower(), r["id"]))
    if key == "status":
        return sorted(rows, key=lambda r: (_STATUS_RANK[r["status"]], r["name"].lower()))
    if key == "similarity":
        return sorted(rows, key=lambda r: (_number(r["similarity"]), r["name"].lower()))
    if key == "quality":
        return sorted(rows, key=lambda r: (_number(r["p_submillimetre"]), r["name"].lower()))
    raise ValueError(f"unknown sort key {key!r} (one of {', '.join(SORT_KEYS)})")


def nextToCheck(rows, currentId=None):
    """The id of the next X-ray to check after ``currentId`` (see the module docstring), or None if all are."""
    order = sorted((r for r in rows if not r["checked"] or r["id"] == currentId), key=_urgency)
    ids = [r["id"] for r in order]
    if currentId in ids:
        position = ids.index(currentId)
        ids = ids[position + 1:] + ids[:position]  # after the current one, wrapping; never the current one
    unchecked = {r["id"] for r in rows if not r["checked"]}
    return next((i for i in ids if i in unchecked), None)


def recordFailure(xrayNode, message: str) -> None:
    """Keep a failed registration's message on its X-ray (its row shows it until a result arrives)."""
    lines = [line.strip() for line in str(message or "").splitlines() if line.strip()]
    xrayNode.SetAttribute(FAILURE_ATTRIBUTE, lines[0] if lines else "failed")


def markChecked(xrayNode, checked: bool = True) -> None:
    if checked:
        xrayNode.SetAttribute(CHECKED_ATTRIBUTE, "true")
    else:
        xrayNode.RemoveAttribute(CHECKED_ATTRIBUTE)
