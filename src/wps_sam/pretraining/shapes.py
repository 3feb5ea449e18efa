"""Synthetic scenes of generic shapes for pre-training the tiny SAM.

Every scene is a square RGB image of textured shapes on a textured background, with the visible mask of
each region as a target. Objects are either a single shape, a shape with smaller shapes nested inside
it, a shape cut into adjacent pieces (Voronoi cells), or a body with shapes attached to its outline;
their pieces are targets, and so (often) is the union of an object, so that the model learns both
wholes and sub-regions from a box or a point. Later objects occlude earlier ones.

The geometry is generic on purpose (ellipses, convex polygons, Fourier blobs, rectangles, rings,
stars, thick curves): the foundation model must never see the ToyParts part shapes, so that the
prompter learns the part categories from boxes or points only.

All drawing is vectorised numpy on a pixel grid; a scene is a pure function of ``(seed, index)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

_SHAPES = ("ellipse", "rectangle", "polygon", "blob", "ring", "star", "curve")
_SHAPE_P = np.array([0.2, 0.15, 0.17, 0.2, 0.08, 0.1, 0.1])
_TEXTURES = ("solid", "gradient", "stripes", "checker", "noise", "spots")
_TEXTURE_P = np.array([0.25, 0.2, 0.15, 0.1, 0.2, 0.1])


@dataclass(frozen=True)
class ShapesConfig:
    """Numbers of the synthetic distribution (sizes in pixels)."""

    size: int = 256
    min_objects: int = 3
    max_objects: int = 7
    min_radius: float = 12.0
    max_radius: float = 90.0
    p_split: float = 0.3  # object cut into adjacent Voronoi pieces
    p_attached: float = 0.3  # body with shapes attached to its outline
    p_nested: float = 0.2  # shape with smaller shapes inside it
    p_union_target: float = 0.7  # the whole of a multi-piece object is a target too
    p_similar_colours: float = 0.3  # pieces of one object in close colours: edges and texture matter
    min_area: int = 30
    noise_std: float = 4.0


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx, yy


@lru_cache(maxsize=16)
def _upsample_index(size: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear upsampling from k cells to size pixels (cell centres aligned): low and high cell index
    and the weight of the high one, each [size]."""
    pos = np.clip((np.arange(size, dtype=np.float32) + 0.5) * k / size - 0.5, 0, k - 1)
    lo = np.floor(pos).astype(np.intp)
    return lo, np.minimum(lo + 1, k - 1), (pos - lo).astype(np.float32)


def smooth_noise(
    rng: np.random.Generator, size: int, k: int, channels: int = 1, window: tuple[slice, slice] | None = None
) -> np.ndarray:
    """Smooth noise in [0, 1], [channels, h, w]: k x k uniform cells bilinearly upsampled to the
    [size, size] canvas, evaluated on ``window`` (rows, cols; default the whole canvas)."""
    # Gathers rather than two matrix products: BLAS threads stall badly on a shared machine.
    window = window or (slice(0, size), slice(0, size))
    lo, hi, w = _upsample_index(size, k)
    rlo, rhi, rw = lo[window[0]], hi[window[0]], w[window[0]][:, None]
    clo, chi, cw = lo[window[1]], hi[window[1]], w[window[1]]
    cells = rng.random((channels, k, k), dtype=np.float32)
    rows = cells[:, rlo] * (1 - rw) + cells[:, rhi] * rw  # [C, h, k]
    return rows[:, :, clo] * (1 - cw) + rows[:, :, chi] * cw


def _rotated(
    xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, theta: float
) -> tuple[np.ndarray, np.ndarray]:
    c, s = float(np.cos(theta)), float(np.sin(theta))  # Python floats keep the arithmetic in float32
    dx, dy = xx - cx, yy - cy
    return c * dx + s * dy, -s * dx + c * dy


def _radial(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    dx, dy = xx - float(cx), yy - float(cy)
    return np.sqrt(dx * dx + dy * dy), np.arctan2(dy, dx)


def draw_shape(rng: np.random.Generator, kind: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Bool mask [size, size] of one generic shape of kind ``kind`` centred at (cx, cy), radius ~r."""
    cx, cy, r = float(cx), float(cy), float(r)
    out = np.zeros((size, size), bool)
    # Every shape lies within 1.5 r of its centre (curves: 1.4 r plus their width <= r / 3 + 3).
    x0, x1 = int(np.clip(cx - 1.5 * r - 4, 0, size)), int(np.clip(cx + 1.5 * r + 5, 0, size))
    y0, y1 = int(np.clip(cy - 1.5 * r - 4, 0, size)), int(np.clip(cy + 1.5 * r + 5, 0, size))
    if x1 <= x0 or y1 <= y0:
        return out
    gx, gy = _grid(size)
    xx, yy = gx[y0:y1, x0:x1], gy[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = _shape_in(rng, kind, xx, yy, cx, cy, r)
    return out


def _shape_in(
    rng: np.random.Generator, kind: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float
) -> np.ndarray:
    theta = rng.uniform(0, np.pi)
    if kind == "ellipse":
        u, v = _rotated(xx, yy, cx, cy, theta)
        a, b = r, r * rng.uniform(0.35, 1.0)
        return (u / a) ** 2 + (v / b) ** 2 <= 1
    if kind == "rectangle":
        u, v = _rotated(xx, yy, cx, cy, theta)
        a, b = r * rng.uniform(0.5, 1.0), r * rng.uniform(0.2, 1.0)
        return (np.abs(u) <= a) & (np.abs(v) <= b)
    if kind == "ring":
        u, v = _rotated(xx, yy, cx, cy, theta)
        a, b = r, r * rng.uniform(0.6, 1.0)
        d = (u / a) ** 2 + (v / b) ** 2
        return (d <= 1) & (d >= rng.uniform(0.2, 0.6) ** 2)
    if kind == "polygon":
        n = int(rng.integers(3, 8))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = r * rng.uniform(0.6, 1.0, n)
        px, py = cx + rad * np.cos(ang), cy + rad * np.sin(ang)
        inside = np.ones(xx.shape, bool)
        for i in range(n):  # convex hull of sorted-angle vertices ~ intersection of half-planes
            j = (i + 1) % n
            ex, ey = float(px[j] - px[i]), float(py[j] - py[i])
            inside &= ex * (yy - float(py[i])) - ey * (xx - float(px[i])) >= 0
        return inside
    if kind in ("blob", "star"):
        d, phi = _radial(xx, yy, cx, cy)
        if kind == "blob":  # radius as a random Fourier series of the angle
            rr = np.ones_like(phi)
            for k in range(1, 6):
                rr += rng.uniform(0, 0.35) / k * np.cos(k * phi + rng.uniform(0, 2 * np.pi), dtype=np.float32)
            rr = r * np.clip(rr, 0.25, None) / 1.3
        else:
            n = int(rng.integers(4, 9))
            inner = rng.uniform(0.35, 0.7)
            rr = r * (inner + (1 - inner) * np.abs(np.cos(n * (phi + theta) / 2)) ** rng.uniform(0.5, 2.0))
        return d <= rr
    if kind == "curve":  # a thick quadratic Bezier curve
        p = np.array([cx, cy]) + rng.uniform(-r, r, (3, 2))
        t = np.linspace(0, 1, 24)[:, None]
        pts = ((1 - t) ** 2 * p[0] + 2 * (1 - t) * t * p[1] + t**2 * p[2]).astype(np.float32)
        w = rng.uniform(2.5, max(3.0, r / 3))
        d2 = (xx[None] - pts[:, 0, None, None]) ** 2 + (yy[None] - pts[:, 1, None, None]) ** 2
        return d2.min(0) <= w * w
    raise ValueError(f"unknown shape {kind!r}")


def _random_colour(rng: np.random.Generator, near: np.ndarray | None = None) -> np.ndarray:
    if near is not None:
        return np.clip(near + rng.normal(0, 30, 3), 0, 255).astype(np.float32)
    return rng.uniform(0, 255, 3).astype(np.float32)


def draw_texture(
    rng: np.random.Generator, size: int, base: np.ndarray, window: tuple[slice, slice] | None = None
) -> np.ndarray:
    """Float image [h, w, 3] in [0, 255]: a random texture around colour ``base``.

    The texture lives on the whole [size, size] canvas; ``window`` (rows, cols) evaluates only that crop.
    """
    window = window or (slice(0, size), slice(0, size))
    gx, gy = _grid(size)
    xx, yy = gx[window], gy[window]
    kind = rng.choice(_TEXTURES, p=_TEXTURE_P)
    other = _random_colour(rng, base if rng.random() < 0.5 else None)
    if kind == "solid":
        return np.broadcast_to(base, (*xx.shape, 3))
    if kind == "gradient":
        u, _ = _rotated(xx, yy, size / 2, size / 2, rng.uniform(0, 2 * np.pi))
        t = np.clip(u / rng.uniform(60, 250) + 0.5, 0, 1)[..., None]
        return base + (other - base) * t
    if kind in ("stripes", "checker"):
        u, v = _rotated(xx, yy, 0, 0, rng.uniform(0, np.pi))
        period = rng.uniform(4, 24)
        if kind == "stripes":
            t = (np.sin(2 * np.pi * u / period) > rng.uniform(-0.5, 0.5))[..., None]
        else:
            t = ((np.floor(u / period) + np.floor(v / period)) % 2 == 0)[..., None]
        return np.where(t, base, other)
    if kind == "noise":
        k = int(rng.choice([4, 8, 16, 32, 64]))
        n = smooth_noise(rng, size, k, 3, window).transpose(1, 2, 0) - 0.5
        return np.clip(base + n * rng.uniform(30, 120), 0, 255)
    # spots: thresholded smooth noise
    k = int(rng.choice([8, 16, 32]))
    n = smooth_noise(rng, size, k, 1, window)[0][..., None]
    return np.where(n > rng.uniform(0.6, 0.8), other, base)


class _Canvas:
    """Paints regions in order; ``owner`` remembers which region each pixel shows."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.rng, self.size = rng, size
        self.image = draw_texture(rng, size, _random_colour(rng)).astype(np.float32).copy()
        self.owner = np.full((size, size), -1, np.int32)
        self.count = 0

    def paint(self, mask: np.ndarray, colour: np.ndarray) -> int:
        region = self.count
        self.count += 1
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        if len(rows):
            window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            crop = mask[window]
            self.image[window][crop] = draw_texture(self.rng, self.size, colour, window)[crop]
        self.owner[mask] = region
        return region


def _object(canvas: _Canvas, cfg: ShapesConfig) -> tuple[list[int], bool]:
    """Paint one object; return its region ids and whether its union is a meaningful whole."""
    rng, size = canvas.rng, cfg.size
    r = float(np.exp(rng.uniform(np.log(cfg.min_radius), np.log(cfg.max_radius))))
    cx, cy = rng.uniform(0.05 * size, 0.95 * size, 2)
    shape = rng.choice(_SHAPES, p=_SHAPE_P)
    body = draw_shape(rng, shape, size, cx, cy, r)
    colour = _random_colour(rng)
    similar = rng.random() < cfg.p_similar_colours

    def piece_colour() -> np.ndarray:
        return _random_colour(rng, colour if similar else None)

    mode = rng.random()
    if mode < cfg.p_split and body.sum() > 200:  # adjacent pieces: Voronoi cells of seeds in the body
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
        return pieces, True
    if mode < cfg.p_split + cfg.p_attached and body.any():  # a body with shapes on its outline
        ids = [canvas.paint(body, colour)] if rng.random() < 0.5 else []
        ys, xs = np.nonzero(body)
        n_att = int(rng.integers(1, 5))
        later = []
        for _ in range(n_att):
            i = rng.integers(len(xs))
            sub = draw_shape(rng, rng.choice(_SHAPES[:4]), size, xs[i], ys[i], r * rng.uniform(0.25, 0.6))
            later.append(sub)
        for sub in later:
            ids.append(canvas.paint(sub, piece_colour()))
        if len(ids) == n_att:  # body painted last: the attached shapes tuck under it
            ids.append(canvas.paint(body, colour))
        return ids, True
    ids = [canvas.paint(body, colour)]
    if mode < cfg.p_split + cfg.p_attached + cfg.p_nested and body.sum() > 300:  # shapes inside the shape
        ys, xs = np.nonzero(body)
        for _ in range(int(rng.integers(1, 4))):
            i = rng.integers(len(xs))
            sub = draw_shape(rng, rng.choice(_SHAPES), size, xs[i], ys[i], r * rng.uniform(0.15, 0.5))
            ids.append(canvas.paint(sub & body, piece_colour()))
        return ids, True
    return ids, False


def generate_scene(
    rng: np.random.Generator, cfg: ShapesConfig = ShapesConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """One scene.

    Returns:
        image: uint8 [S, S, 3] RGB.
        masks: bool [M, S, S], the visible region of each target (pieces, single shapes and, for
            multi-piece objects, often their union); M >= 1.
    """
    canvas = _Canvas(rng, cfg.size)
    objects = [_object(canvas, cfg) for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1)))]
    owner = canvas.owner
    targets: list[np.ndarray] = []
    for ids, whole in objects:
        for i in ids:
            m = owner == i
            if m.sum() >= cfg.min_area:
                targets.append(m)
        if whole and len(ids) > 1 and rng.random() < cfg.p_union_target:
            m = np.isin(owner, ids)
            if m.sum() >= cfg.min_area:
                targets.append(m)
    if not targets:  # rare: everything occluded or off-canvas; the background is then the target
        targets.append(owner == -1)
    image = canvas.image + cfg.noise_std * rng.standard_normal(canvas.image.shape, dtype=np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), np.stack(targets)


class SyntheticShapes:
    """Indexable, deterministic scenes: ``shapes[i]`` depends on ``(seed, i)`` only."""

    def __init__(self, seed: int = 0, cfg: ShapesConfig = ShapesConfig()):
        self.seed, self.cfg = seed, cfg

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return generate_scene(np.random.default_rng((self.seed, index)), self.cfg)
