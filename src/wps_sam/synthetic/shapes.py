"""Generic shapes and looks for the tiny SAM's pre-training scenes (:mod:`.scenes`).

Shapes are boolean masks on a pixel grid (ellipses, rectangles, rings, convex polygons, Fourier blobs,
stars, thick curves, and the limbs and fins that assemblies attach); looks are textures around a
colour (solid, gradient, stripes, checker, smooth noise, spots). The geometry is generic on purpose:
the foundation model must never see the ToyParts part shapes, so that the prompter learns the part
categories from boxes or points only. All drawing is vectorised numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

SHAPES = ("ellipse", "rectangle", "polygon", "blob", "ring", "star", "curve")
TEXTURES = ("solid", "gradient", "stripes", "checker", "noise", "spots")
_TEXTURE_P = np.array([0.25, 0.2, 0.15, 0.1, 0.2, 0.1])


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


def capsule_mask(size: int, p0: np.ndarray, p1: np.ndarray, r0: float, r1: float) -> np.ndarray:
    """Bool mask [size, size] of a tapered round-capped segment from ``p0`` (radius r0) to ``p1`` (r1)."""
    lo = np.floor(np.minimum(p0, p1) - max(r0, r1) - 1).clip(0, size).astype(int)
    hi = np.ceil(np.maximum(p0, p1) + max(r0, r1) + 2).clip(0, size).astype(int)
    out = np.zeros((size, size), bool)
    if (hi <= lo).any():
        return out
    gx, gy = _grid(size)
    xx, yy = gx[lo[1] : hi[1], lo[0] : hi[0]], gy[lo[1] : hi[1], lo[0] : hi[0]]
    d = np.asarray(p1, np.float32) - np.asarray(p0, np.float32)
    length2 = max(float(d @ d), 1e-6)
    t = np.clip(((xx - float(p0[0])) * float(d[0]) + (yy - float(p0[1])) * float(d[1])) / length2, 0, 1)
    dist2 = (xx - float(p0[0]) - t * float(d[0])) ** 2 + (yy - float(p0[1]) - t * float(d[1])) ** 2
    out[lo[1] : hi[1], lo[0] : hi[0]] = dist2 <= (r0 + (r1 - r0) * t) ** 2
    return out


def polygon_mask(size: int, pts: np.ndarray) -> np.ndarray:
    """Bool mask [size, size] of the convex polygon with vertices ``pts`` (Kx2 (X, Y), any order)."""
    centre = pts.mean(0)
    pts = pts[np.argsort(np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0]))]
    lo = np.floor(pts.min(0)).clip(0, size).astype(int)
    hi = np.ceil(pts.max(0) + 1).clip(0, size).astype(int)
    out = np.zeros((size, size), bool)
    if (hi <= lo).any():
        return out
    gx, gy = _grid(size)
    xx, yy = gx[lo[1] : hi[1], lo[0] : hi[0]], gy[lo[1] : hi[1], lo[0] : hi[0]]
    inside = np.ones(xx.shape, bool)
    for i in range(len(pts)):
        j = (i + 1) % len(pts)
        ex, ey = float(pts[j, 0] - pts[i, 0]), float(pts[j, 1] - pts[i, 1])
        inside &= ex * (yy - float(pts[i, 1])) - ey * (xx - float(pts[i, 0])) >= 0
    out[lo[1] : hi[1], lo[0] : hi[0]] = inside
    return out


def random_colour(rng: np.random.Generator, near: np.ndarray | None = None) -> np.ndarray:
    """An RGB colour in [0, 255], float32 [3]; close to ``near`` when given."""
    if near is not None:
        return np.clip(near + rng.normal(0, 30, 3), 0, 255).astype(np.float32)
    return rng.uniform(0, 255, 3).astype(np.float32)


@dataclass(frozen=True)
class Look:
    """A texture: ``kind`` mixes colours ``base`` and ``other`` (RGB floats) by a pattern.

    ``angle`` (radians) orients gradients, stripes and checkers; ``scale`` is the gradient length, the
    stripe or checker period, or the noise cells across the canvas; ``level`` the stripe threshold,
    the noise amplitude or the spot threshold.
    """

    kind: str
    base: np.ndarray
    other: np.ndarray
    angle: float
    scale: float
    level: float


def random_look(rng: np.random.Generator, base: np.ndarray | None = None) -> Look:
    """A random texture around ``base`` (a random colour when None)."""
    base = random_colour(rng) if base is None else base
    kind = str(rng.choice(TEXTURES, p=_TEXTURE_P))
    other = random_colour(rng, base if rng.random() < 0.5 else None)
    scale, level = {
        "solid": (0.0, 0.0),
        "gradient": (rng.uniform(60, 250), 0.0),
        "stripes": (rng.uniform(4, 24), rng.uniform(-0.5, 0.5)),
        "checker": (rng.uniform(4, 24), 0.0),
        "noise": (float(rng.choice([4, 8, 16, 32, 64])), rng.uniform(30, 120)),
        "spots": (float(rng.choice([8, 16, 32])), rng.uniform(0.6, 0.8)),
    }[kind]
    return Look(kind, base, other, rng.uniform(0, 2 * np.pi), scale, level)


def shaded(rng: np.random.Generator, look: Look) -> Look:
    """The same texture a little lighter or darker: pieces of one object that share a look."""
    f = np.float32(rng.uniform(0.75, 1.25))
    return replace(look, base=np.clip(look.base * f, 0, 255), other=np.clip(look.other * f, 0, 255))


def paint(
    rng: np.random.Generator, look: Look, size: int, window: tuple[slice, slice] | None = None
) -> np.ndarray:
    """Float image [h, w, 3] in [0, 255] of ``look`` over the [size, size] canvas, evaluated on ``window``
    (rows, cols; default the whole canvas). Noise and spots draw fresh noise from ``rng``."""
    window = window or (slice(0, size), slice(0, size))
    gx, gy = _grid(size)
    xx, yy = gx[window], gy[window]
    base, other = look.base, look.other
    if look.kind == "solid":
        return np.broadcast_to(base, (*xx.shape, 3))
    if look.kind == "gradient":
        u, _ = _rotated(xx, yy, size / 2, size / 2, look.angle)
        t = np.clip(u / look.scale + 0.5, 0, 1)[..., None]
        return base + (other - base) * t
    if look.kind in ("stripes", "checker"):
        u, v = _rotated(xx, yy, 0, 0, look.angle)
        if look.kind == "stripes":
            t = (np.sin(2 * np.pi * u / look.scale) > look.level)[..., None]
        else:
            t = ((np.floor(u / look.scale) + np.floor(v / look.scale)) % 2 == 0)[..., None]
        return np.where(t, base, other)
    if look.kind == "noise":
        n = smooth_noise(rng, size, int(look.scale), 3, window).transpose(1, 2, 0) - 0.5
        return np.clip(base + n * look.level, 0, 255)
    n = smooth_noise(rng, size, int(look.scale), 1, window)[0][..., None]  # spots
    return np.where(n > look.level, other, base)
