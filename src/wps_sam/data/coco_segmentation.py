"""COCO segmentations (polygons, RLE) checked and cleaned before pycocotools sees them.

pycocotools trusts its input: malformed run lengths overflow its buffers and absurdly long polygon
outlines exhaust memory. Everything here decides what is safe to rasterise, and says why not.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from wps_sam.data.coco_json import as_int
from wps_sam.data.images import pixel_limit

# pycocotools rasterises a polygon along its outline at 5x resolution: bound the work and memory.
_MAX_POLYGON_PERIMETER = 2_000_000.0
_SHORT_OUTLINE = 64  # values up to which an outline is checked in plain Python


def clean_segmentation(seg: Any) -> tuple[list | dict | None, bool, str | None]:
    """(segmentation, is_polygon, problem): what pycocotools can rasterise safely, and what was wrong.

    A problem with a segmentation left means that a piece of it was dropped (a repair); with ``None``
    left, the mask is unusable and the annotation is skipped. No segmentation at all is no problem.
    """
    if seg is None or (isinstance(seg, (list, dict)) and len(seg) == 0):
        return None, False, None
    if isinstance(seg, dict):
        problem = _rle_problem(seg)
        if problem:
            return None, False, f"malformed RLE segmentation ({problem})"
        return {"size": [int(seg["size"][0]), int(seg["size"][1])], "counts": seg["counts"]}, False, None
    if not isinstance(seg, list):
        return None, False, f"segmentation of type {type(seg).__name__}"
    if isinstance(seg[0], (int, float)):
        seg = [seg]  # some exporters write one flat polygon
    if all(isinstance(s, dict) for s in seg):  # a list of RLEs: merge into one
        pieces = [clean_segmentation(s) for s in seg]
        problem = next(
            (note or "malformed RLE segmentation (an empty piece)" for r, _, note in pieces if r is None),
            None,
        )
        if problem is None and len({tuple(r["size"]) for r, _, _ in pieces}) > 1:
            problem = "malformed RLE segmentation (pieces of different sizes)"
        if problem:
            return None, False, problem
        merged = mask_utils.merge([segmentation_rle(r, False, *r["size"]) for r, _, _ in pieces])
        return {"size": merged["size"], "counts": merged["counts"].decode("ascii")}, False, None
    polygons = [p for p in seg if _is_polygon(p)]
    if len(polygons) == len(seg):
        return polygons, True, None
    if polygons:
        return polygons, True, f"{len(seg) - len(polygons)} degenerate polygon(s) dropped"
    return None, False, f"degenerate polygon segmentation ({len(seg)} polygon(s), none usable)"


def _rle_problem(seg: dict) -> str | None:
    """Why the RLE ``seg`` is unsafe to hand to pycocotools, or None.

    pycocotools trusts its input: counts that do not add up to height x width overflow its buffers,
    and a compressed string that ends mid-number is read past its end. So everything is checked first.
    """
    size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(as_int(v) for v in size)):
        return f"size {size!r} is not [height, width]"
    height, width = int(size[0]), int(size[1])
    if height <= 0 or width <= 0 or height * width > pixel_limit():
        return f"size {size!r} out of range"
    if isinstance(counts, str):
        values = _decode_rle_string(counts)
        if values is None:
            return "counts is not a valid compressed RLE string"
    elif isinstance(counts, list) and counts and all(type(c) is int for c in counts):
        values = counts
    else:
        return "counts must be a compressed string or a list of integers"
    if any(not 0 <= c < 2**32 for c in values) or sum(values) != height * width:
        return f"counts do not add up to {height}x{width} pixels"
    return None


def _decode_rle_string(counts: str) -> list[int] | None:
    """The run lengths of a COCO compressed RLE string (as pycocotools' ``rleFrString``), or None."""
    values: list[int] = []
    position = 0
    while position < len(counts):
        x, k, more = 0, 0, True
        while more:
            if position >= len(counts) or k > 12:
                return None
            c = ord(counts[position]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << 5 * k
            more = bool(c & 0x20)
            position += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << 5 * k
        if len(values) > 2:
            x += values[-2]
        values.append(x)
    return values


def _is_polygon(p: Any) -> bool:
    """A flat list of at least 3 finite (x, y) pairs; shorter ones fool pycocotools (4 values = a box)."""
    return isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and rasterisable_outline(p)


def rasterisable_outline(p: Any) -> bool:
    """A flat list of finite numbers, at least one (x, y) pair, that pycocotools can rasterise safely
    (an odd last value it ignores). The outline must be of sane length: pycocotools allocates memory in
    proportion to it."""
    if not isinstance(p, list) or len(p) < 2:
        return False
    n = len(p) // 2 * 2
    if n <= _SHORT_OUTLINE:  # most polygons: plain floats beat numpy's per-call overhead
        try:
            v = [float(x) for x in p[:n]]
        except (TypeError, ValueError, OverflowError):
            return False
        # a NaN or infinity makes the sum non-finite (the sum of <= 64 bounded values cannot overflow)
        if not math.isfinite(sum(v)) or max(map(abs, v)) > _MAX_POLYGON_PERIMETER:
            return False
        steps = (max(abs(v[i] - v[i - 2]), abs(v[i + 1] - v[i - 1])) for i in range(0, n, 2))
        return sum(steps) <= _MAX_POLYGON_PERIMETER
    try:
        xy = np.asarray(p[:n], dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError, OverflowError):
        return False
    if not np.isfinite(xy).all() or (np.abs(xy) > _MAX_POLYGON_PERIMETER).any():
        return False
    steps = np.abs(np.diff(np.concatenate([xy, xy[:1]]), axis=0)).max(axis=1)
    return bool(steps.sum() <= _MAX_POLYGON_PERIMETER)


def segmentation_rle(segmentation: list | dict, is_polygon: bool, height: int, width: int) -> dict:
    """One compressed RLE of the (merged) segmentation, on a ``height`` x ``width`` canvas for polygons."""
    if is_polygon:
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    h, w = segmentation["size"]
    counts = segmentation["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    return {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
