"""Exact polygons of pixel masks: COCO polygons that pycocotools rasterises back to the very mask.

ToyParts writes every part as polygons (PartImageNet's format) rather than RLE; these functions trace a
boolean mask's pixel-edge outlines (corners in pixel-corner coordinates) and cut pieces with holes,
which a polygon cannot hold, into hole-free halves.
"""

from __future__ import annotations

import numpy as np

_STEP = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])  # direction codes 0..3: +x, +y, -x, -y (y down)


def _outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Pixel-edge outlines of a boolean mask: Kx2 integer corners (X, Y), the inside on the right.

    Outer boundaries come out with positive shoelace area, holes negative. Where two pixels touch
    only at a corner the tracer turns right, keeping them in separate (4-connected) outlines.
    """
    m = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), bool)
    m[1:-1, 1:-1] = mask
    width = m.shape[1] + 1  # corners per row
    starts = []
    for code, edges, dx, dy in (
        (0, m[1:] & ~m[:-1], 0, 1),  # top edge of a pixel whose upper neighbour is outside
        (1, m[:, :-1] & ~m[:, 1:], 1, 0),  # right edge
        (2, m[:-1] & ~m[1:], 1, 1),  # bottom edge
        (3, m[:, 1:] & ~m[:, :-1], 1, 1),  # left edge
    ):
        y, x = np.nonzero(edges)
        starts.append(np.stack([x + dx, y + dy, np.full_like(x, code)], axis=1))
    sx, sy, d = np.concatenate(starts).T
    table = np.full(width * (m.shape[0] + 1) * 4, -1)
    table[(sy * width + sx) * 4 + d] = np.arange(len(d))
    end = (sy + _STEP[d, 1]) * width + sx + _STEP[d, 0]
    nxt = table[end * 4 + (d + 1) % 4]  # right turn first: diagonal pixels stay apart
    for turn in (0, 3):
        nxt = np.where(nxt < 0, table[end * 4 + (d + turn) % 4], nxt)
    nxt_list, seen, loops = nxt.tolist(), bytearray(len(d)), []
    for first in range(len(d)):
        if seen[first]:
            continue
        loop, e = [], first
        while not seen[e]:
            seen[e] = 1
            loop.append(e)
            e = nxt_list[e]
        idx = np.asarray(loop)
        dirs = d[idx]
        corner = np.concatenate([dirs[:1] != dirs[-1:], dirs[1:] != dirs[:-1]])
        loops.append(np.stack([sx[idx[corner]], sy[idx[corner]]], axis=1) - 1)
    return loops


def _shoelace(pts: np.ndarray) -> float:
    """Twice the signed area of a closed polygon (positive: clockwise on screen, y down)."""
    x, y = pts[:, 0], pts[:, 1]
    return float(x[:-1] @ y[1:] - x[1:] @ y[:-1] + x[-1] * y[0] - x[0] * y[-1])


def mask_to_polygons(mask: np.ndarray) -> list[list[int]]:
    """COCO polygons [x0, y0, x1, y1, ...] (pixel corners) whose union is exactly ``mask`` (HxW bool).

    A polygon cannot hold a hole, so a piece with a hole is cut in two along a pixel column through
    the hole and each side traced again.
    """
    loops = _outlines(mask)
    hole = next((p for p in loops if _shoelace(p) < 0), None)
    if hole is None:
        return [p.ravel().tolist() for p in loops]
    cut = int(hole[:, 0].min() + hole[:, 0].max()) // 2
    right = [np.add(p, np.tile([cut, 0], len(p) // 2)).tolist() for p in mask_to_polygons(mask[:, cut:])]
    return mask_to_polygons(mask[:, :cut]) + right
