"""The COCO annotation file of a split: where it lies, its json read and checked, its ids coerced."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from wps_sam.errors import DataError

_REQUIRED_KEYS = ("images", "annotations", "categories")


def find_annotation_file(root: Path, split: str) -> Path:
    """The json of ``split``: ``annotations/<split>/<split>.json``, else ``annotations/<split>.json``."""
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a folder")
    candidates = [root / "annotations" / split / f"{split}.json", root / "annotations" / f"{split}.json"]
    for path in candidates:
        if path.is_file():
            return path
    tried = " or ".join(str(p) for p in candidates)
    raise DataError(f"no annotation file for split '{split}': expected {tried}")


def read_annotation_json(path: Path) -> dict[str, Any]:
    """The annotation file's json, checked to hold ``images``, ``annotations`` and ``categories`` lists."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the annotation file ({e})") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4300 digits, deep nesting
        raise DataError(f"{path}: invalid JSON ({e})") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a COCO json object at the top level, got {type(data).__name__}")
    missing = [k for k in _REQUIRED_KEYS if not isinstance(data.get(k), list)]
    if missing:
        raise DataError(f"{path}: missing or non-list required key(s) {', '.join(map(repr, missing))}")
    return data


def as_int(value: Any) -> int | None:
    """A json id as an int (an integral float too), or None for anything else."""
    if type(value) is int:  # the common case, first: loading runs this per annotation
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value) if float(value).is_integer() else None
