"""Weak labels of parts: one point per part, in the original frame.

Boxes come straight from the json (see :mod:`wps_sam.data.coco`). A part's annotated click (the
json's ``point`` or ``keypoints``) is its point whatever the mode; otherwise the point is either

* ``"interior"`` (default): the pixel centre farthest from the part's boundary when the part has a
  mask, which always lies inside the part even when it is thin or curved; the box centre otherwise;
* ``"box_center"``: the box centre, as the official WPS-SAM code does (it can fall outside an L- or
  ring-shaped part).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

from wps_sam.data.coco import PartInstance, instance_mask

POINT_MODES = ("interior", "box_center")


def box_centers(boxes: np.ndarray) -> np.ndarray:
    """[N, 4] XYXY -> [N, 2] float32 (X, Y) centres."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return ((boxes[:, :2] + boxes[:, 2:]) / 2).astype(np.float32)


def interior_point(mask: np.ndarray) -> np.ndarray | None:
    """(X, Y) float32 pixel centre of ``mask`` (bool [H, W]) farthest from its boundary; None if empty.

    The image border counts as boundary (the mask is padded by one pixel of background). Ties go to
    the first pixel in raster order. The distance transform runs on the part's bounding box plus a
    one-pixel margin only: the nearest background pixel of any part pixel lies inside that window
    (clamping a background pixel into the window keeps it background and brings it closer), so the
    result equals the full-image transform at a fraction of the cost.
    """
    padded = np.pad(np.asarray(mask, dtype=bool), 1)
    rows, cols = np.flatnonzero(padded.any(axis=1)), np.flatnonzero(padded.any(axis=0))
    if rows.size == 0:
        return None
    y0, x0 = rows[0] - 1, cols[0] - 1
    window = padded[y0 : rows[-1] + 2, x0 : cols[-1] + 2]
    distance = distance_transform_edt(window)
    r, c = np.unravel_index(int(np.argmax(distance)), distance.shape)
    # -1 undoes the padding; +0.5 moves to the pixel centre.
    return np.array([x0 + c - 1 + 0.5, y0 + r - 1 + 0.5], dtype=np.float32)


def weak_points(parts: list[PartInstance], height: int, width: int, mode: str = "interior") -> np.ndarray:
    """One point per part: [N, 2] float32 (X, Y) in the original frame of a ``height`` x ``width`` image.

    ``mode``: ``"interior"`` or ``"box_center"`` (see the module docstring). An annotated point wins;
    a part whose mask is empty on this canvas falls back to its box centre.
    """
    if mode not in POINT_MODES:
        raise ValueError(f"unknown point mode {mode!r}; expected one of {POINT_MODES}")
    points = np.zeros((len(parts), 2), dtype=np.float32)
    for k, part in enumerate(parts):
        if part.point is not None:
            points[k] = part.point
            continue
        if part.box is None:
            raise ValueError(f"part {part.ann_id} has neither a box nor a point")
        points[k] = box_centers(part.box)[0]
        if mode == "interior" and part.segmentation is not None:
            point = interior_point(instance_mask(part, height, width))
            if point is not None:
                points[k] = point
    return points
