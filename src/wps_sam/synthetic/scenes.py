"""Synthetic scenes of generic shapes, with class-agnostic masks: the tiny SAM's "SA-1B".

Every scene is a square RGB image of textured objects on a textured background, with the visible mask
of many regions as targets, at several granularities as in SA-1B (wholes, pieces, sub-pieces). An
object is one of

* a single shape;
* a shape cut into adjacent pieces (Voronoi cells);
* a body with shapes attached to its outline;
* a shape with smaller shapes nested inside it;
* an **assembly**: a core with groups of limbs (thin, jointed), knobs and fins attached to its
  outline, in front of or behind it, and small details inside the core. Pieces often share one
  texture, a little lighter or darker each, so that only shape and shading tell them apart; a
  core's details belong to it (a target is the core with its details), and a group of like pieces
  is a target of its own as well as each piece.

Later objects occlude earlier ones. Light falls across the scene, sensor noise, blur and JPEG
compression finish it. A scene is a pure function of ``(seed, index)``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from .shapes import (
    SHAPES,
    Look,
    capsule_mask,
    draw_shape,
    paint,
    polygon_mask,
    random_colour,
    random_look,
    shaded,
)

_SHAPE_P = np.array([0.2, 0.15, 0.17, 0.2, 0.08, 0.1, 0.1])
_CORES = ("ellipse", "blob", "rectangle", "polygon")


@dataclass(frozen=True)
class ShapesConfig:
    """Numbers of the synthetic distribution (sizes in pixels of a ``size`` canvas)."""

    size: int = 256
    min_objects: int = 2
    max_objects: int = 6
    min_radius: float = 12.0
    max_radius: float = 90.0
    p_split: float = 0.2  # object cut into adjacent Voronoi pieces
    p_attached: float = 0.15  # body with shapes attached to its outline
    p_nested: float = 0.15  # shape with smaller shapes inside it
    p_assembly: float = 0.3  # core with limbs, knobs, fins and details (the rest: single shapes)
    p_union_target: float = 0.7  # the whole of a multi-piece object is a target too
    p_similar_colours: float = 0.3  # pieces of one object in close colours: edges and texture matter
    p_shared_look: float = 0.45  # an assembly's pieces share one texture, shaded apart
    min_area: int = 30
    noise_std: float = 4.0
    p_jpeg: float = 0.8


class _Canvas:
    """Paints regions in order; ``owner`` remembers which region each pixel shows."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.rng, self.size = rng, size
        self.image = paint(rng, random_look(rng), size).astype(np.float32).copy()
        self.owner = np.full((size, size), -1, np.int32)
        self.count = 0

    def paint(self, mask: np.ndarray, look: Look | np.ndarray) -> int:
        """Paint ``mask`` with ``look`` (or a random texture around a colour); returns its region id."""
        if not isinstance(look, Look):
            look = random_look(self.rng, look)
        region = self.count
        self.count += 1
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        if len(rows):
            window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            crop = mask[window]
            self.image[window][crop] = paint(self.rng, look, self.size, window)[crop]
        self.owner[mask] = region
        return region


def _outward(core: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random point on the outline of ``core`` and the unit direction from its centre to it."""
    edge = core & ~ndimage.binary_erosion(core)
    ys, xs = np.nonzero(edge if edge.any() else core)
    i = rng.integers(len(xs))
    point = np.array([xs[i], ys[i]], np.float32)
    centre = np.array([xs.mean(), ys.mean()], np.float32)
    d = point - centre
    angle = np.arctan2(d[1], d[0]) + rng.normal(0, 0.3)
    return point, np.array([np.cos(angle), np.sin(angle)], np.float32)


def _appendage(
    rng: np.random.Generator, kind: str, size: int, at: np.ndarray, out: np.ndarray, r: float, p: dict
) -> np.ndarray:
    """One limb, knob or fin attached at ``at``, pointing along ``out``; ``p`` holds the group's sizes."""
    if kind == "limb":
        mask = np.zeros((size, size), bool)
        start, angle = at - out * p["width"], float(np.arctan2(out[1], out[0]))
        seg = p["length"] / p["joints"]
        for j in range(p["joints"]):
            angle += rng.normal(0, 0.5) if j else 0.0
            end = start + seg * np.array([np.cos(angle), np.sin(angle)], np.float32)
            mask |= capsule_mask(
                size, start, end, p["width"] * (1 - 0.15 * j), p["width"] * (0.85 - 0.15 * j)
            )
            start = end
        return mask
    if kind == "knob":
        c = at + out * p["radius"] * 0.6
        return draw_shape(rng, "ellipse", size, c[0], c[1], p["radius"])
    side = np.array([-out[1], out[0]], np.float32) * p["base"]  # fin: a triangle on the outline
    tip = at + out * p["length"] + side * rng.uniform(-0.8, 0.8)
    return polygon_mask(size, np.stack([at - side - out * 2, at + side - out * 2, tip]))


def _assembly(canvas: _Canvas, cfg: ShapesConfig, r: float, cx: float, cy: float) -> list[list[int]]:
    """Paint an assembly (see the module docstring); returns its targets as lists of region ids."""
    rng, size = canvas.rng, cfg.size
    core = draw_shape(rng, str(rng.choice(_CORES)), size, cx, cy, r)
    if core.sum() < cfg.min_area:
        return []
    shared = random_look(rng) if rng.random() < cfg.p_shared_look else None

    def look() -> Look:
        return shaded(rng, shared) if shared is not None else random_look(rng)

    groups = []  # (behind the core?, [masks], look of the group or None for shared shading)
    for _ in range(int(rng.integers(1, 4))):
        kind = str(rng.choice(("limb", "knob", "fin"), p=[0.5, 0.25, 0.25]))
        sizes = {
            "width": max(1.5, r * rng.uniform(0.07, 0.2)),
            "length": r * rng.uniform(0.5, 1.4),
            "joints": int(rng.integers(1, 4)),
            "radius": r * rng.uniform(0.2, 0.5),
            "base": r * rng.uniform(0.15, 0.4),
        }
        count = int(rng.integers(1, 5))
        masks = [_appendage(rng, kind, size, *_outward(core, rng), r, sizes) for _ in range(count)]
        groups.append((rng.random() < 0.5, masks, None if shared is not None else random_look(rng)))

    targets: list[list[int]] = []

    def paint_group(masks: list[np.ndarray], group_look: Look | None) -> None:
        ids = [canvas.paint(m, group_look if group_look is not None else look()) for m in masks]
        targets.extend([i] for i in ids)
        if len(ids) > 1:
            targets.append(ids)

    for behind, masks, group_look in groups:
        if behind:
            paint_group(masks, group_look)
    core_ids = [canvas.paint(core, look())]
    if rng.random() < 0.6 and core.sum() > 150:  # details inside the core belong to it
        ys, xs = np.nonzero(core)
        for _ in range(int(rng.integers(1, 4))):
            i = rng.integers(len(xs))
            kind = str(rng.choice(("ellipse", "rectangle", "polygon", "star")))
            detail = draw_shape(rng, kind, size, xs[i], ys[i], r * rng.uniform(0.06, 0.22)) & core
            if detail.any():
                core_ids.append(canvas.paint(detail, random_look(rng)))
                if rng.random() < 0.5:
                    targets.append([core_ids[-1]])
    targets.append(core_ids)
    for behind, masks, group_look in groups:
        if not behind:
            paint_group(masks, group_look)
    if rng.random() < cfg.p_union_target:
        targets.append(sorted({i for t in targets for i in t}))
    return targets


def _object(canvas: _Canvas, cfg: ShapesConfig) -> list[list[int]]:
    """Paint one object; returns its targets, each a list of region ids (their union is the mask)."""
    rng, size = canvas.rng, cfg.size
    r = float(np.exp(rng.uniform(np.log(cfg.min_radius), np.log(cfg.max_radius))))
    cx, cy = rng.uniform(0.05 * size, 0.95 * size, 2)
    mode = rng.random()
    edges = np.cumsum([cfg.p_split, cfg.p_attached, cfg.p_nested, cfg.p_assembly])
    if mode >= edges[2] and mode < edges[3]:
        return _assembly(canvas, cfg, min(r, cfg.max_radius * 0.66), cx, cy)
    body = draw_shape(rng, str(rng.choice(SHAPES, p=_SHAPE_P)), size, cx, cy, r)
    colour = random_look(rng).base
    similar = rng.random() < cfg.p_similar_colours

    def piece_colour() -> np.ndarray:
        return random_colour(rng, colour if similar else None)

    def with_union(ids: list[int]) -> list[list[int]]:
        wholes = [ids] if len(ids) > 1 and rng.random() < cfg.p_union_target else []
        return [[i] for i in ids] + wholes

    if mode < edges[0] and body.sum() > 200:  # adjacent pieces: Voronoi cells of seeds in the body
        ys, xs = np.nonzero(body)
        k = int(rng.integers(2, 5))
        pick = rng.choice(len(xs), k, replace=False)
        wts = rng.uniform(0.5, 2.0, k)  # weighted distances bend the cuts a little
        d = np.stack([wts[i] * np.hypot(xs - xs[pick[i]], ys - ys[pick[i]]) for i in range(k)])
        cell = d.argmin(0)
        pieces = []
        for i in range(k):
            piece = np.zeros_like(body)
            piece[ys[cell == i], xs[cell == i]] = True
            pieces.append(canvas.paint(piece, piece_colour()))
        return with_union(pieces)
    if mode < edges[1] and body.any():  # a body with shapes on its outline
        ids = [canvas.paint(body, colour)] if rng.random() < 0.5 else []
        ys, xs = np.nonzero(body)
        n_att = int(rng.integers(1, 5))
        later = []
        for _ in range(n_att):
            i = rng.integers(len(xs))
            sub = draw_shape(rng, str(rng.choice(SHAPES[:4])), size, xs[i], ys[i], r * rng.uniform(0.25, 0.6))
            later.append(sub)
        for sub in later:
            ids.append(canvas.paint(sub, piece_colour()))
        if len(ids) == n_att:  # body painted last: the attached shapes tuck under it
            ids.append(canvas.paint(body, colour))
        return with_union(ids)
    ids = [canvas.paint(body, colour)]
    if mode < edges[2] and body.sum() > 300:  # shapes inside the shape
        ys, xs = np.nonzero(body)
        for _ in range(int(rng.integers(1, 4))):
            i = rng.integers(len(xs))
            sub = draw_shape(rng, str(rng.choice(SHAPES)), size, xs[i], ys[i], r * rng.uniform(0.15, 0.5))
            ids.append(canvas.paint(sub & body, piece_colour()))
        return with_union(ids)
    return [ids]


def _finish(rng: np.random.Generator, image: np.ndarray, cfg: ShapesConfig) -> np.ndarray:
    """Light falling across the scene, sensor noise, sometimes blur and JPEG: uint8 [S, S, 3]."""
    size = image.shape[0]
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32) * np.float32(rng.uniform(0, 0.4))
    angle = rng.uniform(0, 2 * np.pi)
    image = image * (1 + ramp[None, :] * np.cos(angle) + ramp[:, None] * np.sin(angle))[..., None]
    image += cfg.noise_std * rng.standard_normal(image.shape, dtype=np.float32)
    out = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    if rng.random() < 0.4:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    if rng.random() < cfg.p_jpeg:
        buf = io.BytesIO()
        out.save(buf, format="JPEG", quality=int(rng.integers(80, 96)))
        out = Image.open(buf).convert("RGB")
    return np.asarray(out)


def generate_scene(
    rng: np.random.Generator, cfg: ShapesConfig = ShapesConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """One scene.

    Returns:
        image: uint8 [S, S, 3] RGB.
        masks: bool [M, S, S], the visible region of each target (wholes, pieces, groups of pieces,
            details); M >= 1; no two alike.
    """
    canvas = _Canvas(rng, cfg.size)
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    wanted = [t for _ in range(n) for t in _object(canvas, cfg)]
    owner = canvas.owner
    targets, seen = [], set()
    for ids in wanted:
        m = np.isin(owner, ids) if len(ids) > 1 else owner == ids[0]
        area = int(m.sum())
        if area < cfg.min_area:
            continue
        key = (area, *np.flatnonzero(m)[[0, -1]].tolist())  # a union may show only one piece
        if key not in seen:
            seen.add(key)
            targets.append(m)
    if not targets:  # rare: everything occluded or off-canvas; the background is then the target
        targets.append(owner == -1)
    return _finish(rng, canvas.image, cfg), np.stack(targets)


class SyntheticShapes:
    """Indexable, deterministic scenes: ``shapes[i]`` depends on ``(seed, i)`` only."""

    def __init__(self, seed: int = 0, cfg: ShapesConfig = ShapesConfig()):
        self.seed, self.cfg = seed, cfg

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return generate_scene(np.random.default_rng((self.seed, index)), self.cfg)
