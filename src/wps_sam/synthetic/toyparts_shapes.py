"""ToyParts objects: the part vocabulary and the drawings of objects as polygons of parts.

Every object is drawn in its own frame: facing +x, y pointing down, about one unit long. A drawing is
a list of :class:`Prim` in painting order (later primitives cover earlier ones), so that far legs go
behind the body and near wings in front of it. A primitive names the part class it belongs to and a
"look": the part's own look (its name) or a detail (eye, window, hub ...) that is painted differently
but labelled as the part it lies on, so that a part is never one flat region of colour.

Joint angles, proportions and optional pieces are drawn from the generator given to the builder:
this is the articulation; scale, rotation, flip and position are applied by the scene.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

# PartImageNet's 11 super-categories and 40 part classes, in PartImageNet's category-id order.
SUPERCATEGORIES: dict[str, tuple[str, ...]] = {
    "Quadruped": ("Head", "Body", "Foot", "Tail"),
    "Biped": ("Head", "Body", "Hand", "Foot", "Tail"),
    "Fish": ("Head", "Body", "Fin", "Tail"),
    "Bird": ("Head", "Body", "Wing", "Foot", "Tail"),
    "Snake": ("Head", "Body"),
    "Reptile": ("Head", "Body", "Foot", "Tail"),
    "Car": ("Body", "Tier", "Side Mirror"),
    "Bicycle": ("Body", "Head", "Seat", "Tier"),
    "Boat": ("Body", "Sail"),
    "Aeroplane": ("Head", "Body", "Engine", "Wing", "Tail"),
    "Bottle": ("Body", "Mouth"),
}
PART_CLASSES: list[str] = [f"{sup} {part}" for sup, parts in SUPERCATEGORIES.items() for part in parts]

# Largest random in-plane rotation (degrees) per super-category, and the chance of lying on its side.
POSE: dict[str, tuple[float, float]] = {
    "Quadruped": (15, 0.0),
    "Biped": (15, 0.0),
    "Fish": (35, 0.0),
    "Bird": (20, 0.0),
    "Snake": (180, 0.0),
    "Reptile": (30, 0.0),
    "Car": (8, 0.0),
    "Bicycle": (10, 0.0),
    "Boat": (8, 0.0),
    "Aeroplane": (35, 0.0),
    "Bottle": (15, 0.3),
}


@dataclass(frozen=True)
class Prim:
    """One filled polygon of an object: ``poly`` is Kx2 (X, Y) in the object's frame."""

    part: str
    look: str
    poly: np.ndarray


def unit(deg: float | np.ndarray) -> np.ndarray:
    """Unit vector(s) at ``deg`` degrees, measured from +x towards +y (down)."""
    a = np.deg2rad(deg)
    return np.stack([np.cos(a), np.sin(a)], axis=-1)


def ellipse(c: np.ndarray, rx: float, ry: float, deg: float = 0.0, n: int = 24) -> np.ndarray:
    """Kx2 polygon of an ellipse centred at ``c`` with its x semi-axis turned by ``deg``."""
    cos, sin = _circle(n)
    pts = np.stack([rx * cos, ry * sin], axis=1)
    return np.asarray(c, float) + (pts if deg == 0.0 else pts @ rotation(deg).T)


@cache
def _circle(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.cos(t), np.sin(t)


def rotation(deg: float) -> np.ndarray:
    """2x2 rotation matrix, turning +x towards +y."""
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    return np.array([[c, -s], [s, c]])


_CAP = np.linspace(0.0, np.pi, 5)[:, None]
_CAP_COS, _CAP_SIN = np.cos(_CAP), np.sin(_CAP)


def tube(path: np.ndarray, radius: float | np.ndarray) -> np.ndarray:
    """Polygon of a round-capped tube of (per-point) ``radius`` around a Kx2 ``path``."""
    path = np.asarray(path, float)
    r = np.broadcast_to(np.asarray(radius, float), (len(path),))[:, None]
    tan = np.concatenate([path[1:2] - path[:1], path[2:] - path[:-2], path[-1:] - path[-2:-1]])
    tan /= np.maximum(np.sqrt((tan**2).sum(axis=1, keepdims=True)), 1e-9)
    nrm = tan[:, ::-1] * (-1.0, 1.0)
    end = path[-1] + r[-1] * (_CAP_COS * nrm[-1] + _CAP_SIN * tan[-1])
    start = path[0] - r[0] * (_CAP_COS * nrm[0] + _CAP_SIN * tan[0])
    return np.concatenate([path + r * nrm, end, (path - r * nrm)[::-1], start])


def capsule(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float | None = None) -> np.ndarray:
    """Tapered round-capped segment from ``p0`` (radius ``r0``) to ``p1`` (radius ``r1``)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    tan = p1 - p0
    tan /= max(float(np.hypot(*tan)), 1e-9)
    nrm = np.array([-tan[1], tan[0]])
    end = p1 + (r0 if r1 is None else r1) * (_CAP_COS * nrm + _CAP_SIN * tan)
    return np.concatenate([end, p0 - r0 * (_CAP_COS * nrm + _CAP_SIN * tan)])


def curve(start: np.ndarray, deg: float, length: float, bend: float, k: int = 10) -> np.ndarray:
    """Kx2 path leaving ``start`` at ``deg`` and turning by ``bend`` degrees in all over ``length``."""
    heading = deg + bend * np.linspace(0.0, 1.0, k - 1)
    steps = unit(heading) * (length / (k - 1))
    return np.concatenate([np.asarray(start, float)[None], start + np.cumsum(steps, axis=0)])


def box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Axis-aligned rectangle from corner (x0, y0) to corner (x1, y1)."""
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], float)


def limb(
    start: np.ndarray, degs: tuple[float, ...], lengths: tuple[float, ...], r: float
) -> tuple[list[np.ndarray], np.ndarray]:
    """Jointed limb, one capsule per segment, thinner towards the end: (polygons, end point)."""
    polys, p = [], np.asarray(start, float)
    for i, (deg, length) in enumerate(zip(degs, lengths)):
        q = p + unit(deg) * length
        polys.append(capsule(p, q, r * (1 - 0.12 * i), r * (0.88 - 0.12 * i)))
        p = q
    return polys, p


class _Drawing:
    """Collects primitives in painting order."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.r, self.prims = rng, []

    def u(self, lo: float, hi: float) -> float:
        return float(self.r.uniform(lo, hi))

    def p(self, prob: float) -> bool:
        return bool(self.r.random() < prob)

    def add(self, part: str, *polys: np.ndarray | list, look: str | None = None) -> None:
        """Paint ``polys`` (Kx2 arrays or lists of points) as ``part``, in the part's look or ``look``."""
        self.prims += [Prim(part, look or part, np.asarray(q, float)) for q in polys]

    def eye(self, part: str, c: np.ndarray, r: float) -> None:
        self.add(part, ellipse(c, r, r, n=10), look="eye")


def _quadruped(d: _Drawing) -> None:
    bl, bh = d.u(0.8, 1.0), d.u(0.28, 0.4)
    tail = curve((-bl * 0.46, -bh * 0.15), d.u(150, 230), d.u(0.25, 0.45), d.u(-90, 90))
    d.add("Tail", tube(tail, np.linspace(d.u(0.045, 0.075), 0.025, len(tail))))
    leg_r, hip_y = d.u(0.045, 0.065), bh * 0.2
    for near in (False, True):
        for x in (bl * 0.32, -bl * 0.3):
            a1 = 90 + d.u(-28, 28)
            lengths = (d.u(0.17, 0.25), d.u(0.15, 0.22))
            hip = (x + (0.04 if near else -0.04), hip_y)
            d.add("Foot", *limb(hip, (a1, a1 + d.u(-30, 30)), lengths, leg_r)[0])
    d.add("Body", ellipse((0, 0), bl / 2, bh / 2))
    hc = np.array([bl * 0.5 + d.u(0.05, 0.2), -bh * 0.3 + d.u(-0.3, 0.15)])
    d.add("Body", capsule((bl * 0.36, -bh * 0.1), hc, bh * 0.3, bh * 0.2))
    hd, rx, ry = d.u(-20, 45), d.u(0.1, 0.14), d.u(0.07, 0.1)
    ear = hc + rotation(hd) @ np.array([-rx * 0.4, -ry * 0.6])
    d.add("Head", [ear + (-0.04, 0), ear + (0.03, 0), ear + (d.u(-0.05, 0.02), -d.u(0.07, 0.12))])
    d.add("Head", ellipse(hc, rx, ry, hd), ellipse(hc + unit(hd) * rx * 0.9, rx * 0.6, ry * 0.65, hd))
    d.eye("Head", hc + rotation(hd) @ np.array([rx * 0.3, -ry * 0.35]), 0.018)


def _biped(d: _Drawing) -> None:
    tw, th = d.u(0.22, 0.3), d.u(0.36, 0.46)
    if d.p(0.35):
        tail = curve((0, th * 0.35), d.u(20, 160), d.u(0.25, 0.4), d.u(-120, 120))
        d.add("Tail", tube(tail, np.linspace(0.05, 0.025, len(tail))))
    for s in (-1, 1):
        a1 = 90 - s * d.u(-5, 25)
        lengths = (d.u(0.2, 0.26), d.u(0.18, 0.24))
        leg, foot = limb((s * tw * 0.25, th * 0.35), (a1, a1 + d.u(-15, 15)), lengths, 0.055)
        d.add("Foot", *leg, ellipse(foot + (s * 0.03, 0.0), 0.07, 0.035))
    d.add("Body", capsule((0, -th * 0.28), (0, th * 0.3), tw / 2, tw * 0.42))
    hr = d.u(0.08, 0.11)
    hc = np.array([d.u(-0.03, 0.03), -th * 0.5 - hr * 0.9])
    d.add("Body", capsule((0, -th * 0.45), hc, hr * 0.45))
    d.add("Head", ellipse(hc, hr, hr * d.u(1.0, 1.25)))
    for s in (-1, 1):
        d.eye("Head", hc + (s * hr * 0.38, -hr * 0.1), 0.016)
        a1 = 90 - s * d.u(-10, 100)
        lengths = (d.u(0.15, 0.19), d.u(0.14, 0.17))
        arm, hand = limb((s * tw * 0.42, -th * 0.32), (a1, a1 - s * d.u(-50, 50)), lengths, 0.04)
        d.add("Hand", *arm, ellipse(hand, 0.045, 0.045))


def _fish(d: _Drawing) -> None:
    rx, ry = 0.4, d.u(0.12, 0.22)
    pivot, ta = np.array([-rx * 0.92, 0.0]), d.u(-25, 25)
    tl, th, fork = d.u(0.14, 0.24), d.u(0.1, 0.22), d.u(0.4, 0.9)
    tail = np.array([(0.02, -ry * 0.25), (-tl, -th), (-tl * fork, 0), (-tl, th), (0.02, ry * 0.25)])
    d.add("Tail", pivot + tail @ rotation(ta).T)
    for sign, size in ((-1, d.u(0.06, 0.15)), (1, d.u(0.04, 0.1))):
        x0, x1 = d.u(-0.3, -0.15) * rx / 0.4, d.u(0.0, 0.2)
        apex = (d.u(x0 - 0.1, x0 + 0.05), sign * (ry + size))
        d.add("Fin", [(x0, sign * ry * 0.5), apex, (x1, sign * ry * 0.6)])
    d.add("Body", ellipse((0, 0), rx, ry, n=32))
    d.add("Head", ellipse((rx * 0.62, 0.0), rx * 0.42, ry * 0.8))
    d.eye("Head", (rx * 0.78, -ry * 0.25), 0.022)
    fa = d.u(100, 170)
    d.add("Fin", ellipse((rx * 0.2, ry * 0.3) + unit(fa) * 0.06, 0.08, 0.03, fa))


def _bird(d: _Drawing) -> None:
    rx, ry, tilt = d.u(0.26, 0.33), d.u(0.15, 0.2), d.u(-35, -5)
    rot = rotation(tilt)
    for s in (-0.06, 0.06):
        hip = rot @ np.array([s, ry * 0.7])
        leg, toe = limb(hip, (90 + d.u(-15, 15),), (d.u(0.13, 0.2),), d.u(0.024, 0.03))
        d.add("Foot", *leg, [toe + (-0.05, 0.0), toe + (0.07, -0.02), toe + (0.07, 0.02)])
    back = rot @ np.array([-rx * 0.85, 0.0])
    td, tl, tw = tilt + 180 + d.u(-25, 30), d.u(0.16, 0.28), d.u(0.05, 0.1)
    nrm = unit(td + 90)
    tip = back + unit(td) * tl
    d.add("Tail", [back + 0.03 * nrm, tip + tw * nrm, tip - tw * nrm, back - 0.03 * nrm])
    spread = d.p(0.45)
    shoulder, wa, span = rot @ np.array([0.0, -ry * 0.4]), tilt - 90 - d.u(-10, 60), d.u(0.3, 0.45)
    wing = np.array([(0.1, 0.0), (0.12, -span * 0.55), (0.02, -span), (-0.06, -span * 0.8), (-0.14, 0.0)])
    if spread and d.p(0.5):
        d.add("Wing", shoulder + wing @ rotation(wa + 90 - 15).T)
    d.add("Body", ellipse((0, 0), rx, ry, tilt))
    hc = rot @ np.array([rx * 0.95, -ry * 0.6]) + (0, -d.u(0.04, 0.1))
    hr, ba = d.u(0.09, 0.12), tilt + d.u(-20, 30)
    side, tip = unit(ba + 90) * hr * 0.35, hc + unit(ba) * (hr + d.u(0.06, 0.14))
    d.add("Head", ellipse(hc, hr, hr), [hc + side, tip, hc - side])
    d.add("Head", [hc + side + unit(ba) * hr * 0.8, tip, hc - side + unit(ba) * hr * 0.8], look="beak")
    d.eye("Head", hc + unit(ba - 60) * hr * 0.45, 0.018)
    if spread:
        d.add("Wing", shoulder + wing @ rotation(wa + 90).T)
    else:
        folded = ellipse(rot @ np.array([-rx * 0.15, -ry * 0.1]), rx * 0.85, ry * 0.55, tilt + d.u(-10, 10))
        d.add("Wing", folded)


def _snake(d: _Drawing) -> None:
    k, length = 28, d.u(1.4, 2.0)
    t = np.linspace(0.0, 1.0, k - 1)
    heading = d.u(20, 70) * np.sin(2 * np.pi * d.u(0.6, 1.6) * t + d.u(0, 6.3)) + d.u(-90, 90) * t
    path = np.concatenate([[[0.0, 0.0]], np.cumsum(unit(heading) * length / (k - 1), axis=0)])
    r0 = d.u(0.045, 0.065)
    radius = r0 * np.clip(np.linspace(1.6, 0.0, k), 0.25, 1.0)
    d.add("Body", tube(path, radius))
    hd = heading[0] + 180
    hr = r0 * d.u(1.4, 1.7)
    hc = path[0] + unit(hd) * hr * 0.6
    d.add("Head", ellipse(hc, hr * 1.6, hr, hd))
    for s in (-1, 1):
        d.eye("Head", hc + unit(hd) * hr * 0.5 + unit(hd + 90) * s * hr * 0.5, 0.016)


def _reptile(d: _Drawing) -> None:
    rx, ry = d.u(0.25, 0.32), d.u(0.07, 0.1)
    tail = curve((-rx * 0.85, 0.0), 180 + d.u(-20, 20), d.u(0.45, 0.75), d.u(-100, 100), k=14)
    d.add("Tail", tube(tail, np.linspace(ry * 0.8, 0.008, len(tail))))
    for far in (True, False):
        for x, sign in ((rx * 0.55, -1), (-rx * 0.55, 1)):
            hip = (x + (0.03 if far else -0.03), ry * (0.0 if far else 0.4))
            a1 = 90 + sign * d.u(30, 60)
            lengths = (d.u(0.08, 0.11), d.u(0.07, 0.1))
            leg, foot = limb(hip, (a1, 90 + d.u(-15, 15)), lengths, d.u(0.028, 0.035))
            d.add("Foot", *leg, ellipse(foot + (0, 0.01), 0.04, 0.018))
    d.add("Body", ellipse((0, 0), rx, ry))
    hc, hd = np.array([rx + d.u(0.06, 0.1), -0.01]), d.u(-15, 15)
    d.add("Body", capsule((rx * 0.8, 0.0), hc, ry * 0.8, ry * 0.6))
    d.add("Head", ellipse(hc + unit(hd) * 0.03, d.u(0.09, 0.12), ry * 0.75, hd))
    d.eye("Head", hc + unit(hd) * 0.04 + (0, -ry * 0.3), 0.015)


def _car(d: _Drawing) -> None:
    hb, hc = d.u(0.17, 0.26), d.u(0.13, 0.22)
    nose, tail = d.u(0.1, 0.4), d.u(0.0, 0.5)
    rear, front = (-0.5, -hb * (1 - tail * 0.3)), [(0.4, -hb * (1 - nose * 0.2)), (0.5, -hb * (1 - nose))]
    d.add("Body", [(-0.5, -0.02), rear, (-0.46, -hb), *front, (0.52, -0.02)])
    cb0, cb1 = d.u(-0.4, -0.25), d.u(0.12, 0.28)
    ct0, ct1 = cb0 + d.u(0.03, 0.12), cb1 - d.u(0.1, 0.22)
    d.add("Body", [(cb0, -hb + 0.01), (ct0, -hb - hc), (ct1, -hb - hc), (cb1, -hb + 0.01)])
    m, mid = 0.03, d.u(0.35, 0.6)
    xs = np.array([cb0 + 2 * m, ct0 + m, ct1 - m * 0.5, cb1 - 2 * m])
    split = xs[0] + (xs[3] - xs[0]) * mid
    top, bot = -hb - hc + m, -hb - m * 0.3
    d.add("Body", [(xs[0], bot), (xs[1], top), (split - 0.012, top), (split - 0.012, bot)], look="window")
    d.add("Body", [(split + 0.012, bot), (split + 0.012, top), (xs[2], top), (xs[3], bot)], look="window")
    d.add("Body", ellipse((0.48, -hb * 0.75 * (1 - nose * 0.5)), 0.025, 0.018), look="light")
    r = d.u(0.1, 0.13)
    for x in (-d.u(0.28, 0.35), d.u(0.3, 0.36)):
        d.add("Tier", ellipse((x, -0.01), r, r))
        d.add("Tier", ellipse((x, -0.01), r * 0.55, r * 0.55), look="hub")
    mc = np.array([cb1 - 0.04, -hb - 0.02])
    mw, mh = d.u(0.08, 0.11), d.u(0.055, 0.075)
    d.add("Side Mirror", mc + np.array([(-mw, mh), (-mw, -mh), (mw, -mh * 0.6), (mw, mh)]) / 2)


def _bicycle(d: _Drawing) -> None:
    big, r = d.u(0.2, 0.25), d.u(0.022, 0.03)
    rear, front = np.array([-0.36, 0.0]), np.array([0.36, 0.0])
    inner = big * d.u(0.76, 0.84)
    ring = ellipse((0, 0), 1.0, 1.0, n=28)
    for c in (rear, front):
        for i in range(len(ring)):
            a, b = ring[i], ring[(i + 1) % len(ring)]
            d.add("Tier", c + np.array([a * big, b * big * 1.001, b * inner, a * inner]))
        for deg in d.u(0, 360) + np.arange(0, 360, 60):
            d.add("Tier", capsule(c, c + unit(deg) * inner, 0.008))
        d.add("Tier", ellipse(c, 0.035, 0.035), look="hub")
    bb, seat, head, head_lo = np.array([(-0.02, 0.03), (-0.14, -0.36), (0.24, -0.36), (0.27, -0.25)])
    stays = (seat * 0.9 + bb * 0.1, rear)
    for a, b in ((bb, seat), (seat, head), (bb, head_lo), (bb, rear), stays, (head, head_lo)):
        d.add("Body", capsule(a, b, r))
    d.add("Body", ellipse(bb, 0.06, 0.06), look="hub")
    bar = head + (d.u(-0.06, 0.0), -d.u(0.07, 0.12))
    d.add("Head", capsule(head_lo, front, r * 0.8), capsule(head, bar, r * 0.8))
    d.add("Head", tube(curve(bar + (-0.05, 0.0), 0, d.u(0.12, 0.16), d.u(-90, 90), k=5), 0.02))
    sc = seat + (-0.01, -d.u(0.06, 0.1))
    d.add("Seat", capsule(seat, sc, 0.02))
    d.add("Seat", sc + np.array([(-0.11, -0.035), (0.07, -0.02), (0.07, 0.015), (-0.09, 0.04)]))


def _boat(d: _Drawing) -> None:
    hh, bow = d.u(0.12, 0.2), d.u(0.04, 0.12)
    if d.p(0.65):
        mx, mh = d.u(-0.1, 0.1), d.u(0.55, 0.8)
        d.add("Body", capsule((mx, 0.0), (mx, -mh), 0.012))
        bulge = d.u(0.0, 0.08)
        boom = (mx - d.u(0.3, 0.42), -0.06)
        d.add("Sail", [(mx - 0.015, -mh * 0.95), boom, (mx - 0.015, -0.06), (mx - 0.15 - bulge, -mh * 0.45)])
        if d.p(0.7):
            d.add("Sail", [(mx + 0.015, -mh * 0.9), (mx + 0.015, -0.05), (d.u(0.35, 0.45), -0.04)])
    else:
        c0, c1, hc = d.u(-0.35, -0.2), d.u(0.0, 0.2), d.u(0.1, 0.18)
        d.add("Body", [(c0, 0.01), (c0, -hc), (c1, -hc), (c1 + 0.1, 0.01)])
        for x in np.linspace(c0 + 0.04, c1 - 0.02, 3)[:-1]:
            d.add("Body", box(x, -hc * 0.8, x + 0.08, -hc * 0.4), look="window")
    d.add("Body", [(-0.5, -0.02), (0.56, -bow), (0.38, hh), (-0.42, hh * 0.9), (-0.5, hh * 0.3)])
    y0, y1 = hh * 0.2, hh * 0.2 - bow * 0.6
    d.add("Body", [(-0.49, y0), (0.5, y1), (0.48, y1 + 0.025), (-0.49, y0 + 0.025)], look="stripe")


def _aeroplane(d: _Drawing) -> None:
    r = d.u(0.05, 0.07)
    fin_h = d.u(0.18, 0.28)
    d.add("Tail", [(-0.38, -r * 0.5), (-0.46 - d.u(0.0, 0.06), -fin_h), (-0.54, -fin_h), (-0.52, -r * 0.3)])
    root = d.u(-0.08, 0.05)
    far_tip = root - 0.14, -d.u(0.22, 0.3)  # the far wing, foreshortened and behind the body
    d.add("Wing", [(root + 0.08, -r * 0.4), far_tip, (root - 0.2, -0.26), (root - 0.08, -r * 0.4)])
    upsweep = -r * 0.8 * np.clip(np.linspace(1.6, -0.8, 10), 0, 1)  # the tail cone rises
    path = np.stack([np.linspace(-0.52, 0.38, 10), upsweep], axis=1)
    d.add("Body", tube(path, r * np.clip(np.linspace(0.35, 1.8, 10), 0.35, 1.0)))
    d.add("Body", capsule((-0.38, -r * 0.15), (0.3, -r * 0.15), r * 0.15), look="window")
    d.add("Head", tube(np.linspace((0.36, 0.0), (0.5, r * 0.15), 4), np.linspace(r, r * 0.35, 4)))
    d.add("Head", [(0.38, -r * 0.25), (0.42, -r * 0.7), (0.47, -r * 0.3)], look="window")
    span, sweep = d.u(0.3, 0.42), d.u(0.1, 0.25)
    wing = np.array(
        [(root + 0.12, r * 0.3), (root - sweep, span), (root - sweep - 0.08, span), (root - 0.1, r * 0.3)]
    )
    d.add("Wing", wing)
    for frac in (0.45, 0.8) if d.p(0.4) else (0.5,):
        c = wing[0] * (1 - frac) + wing[1] * frac + (0.02, 0.05)
        er = d.u(0.035, 0.045) * (1.2 - frac * 0.4)
        d.add("Engine", capsule(c + (-0.04, 0), c + (0.07, 0), er))
    tip = d.u(0.08, 0.13)
    d.add("Tail", [(-0.36, 0.0), (-0.48 - d.u(0.0, 0.05), tip), (-0.52, tip), (-0.5, 0.0)])


def _bottle(d: _Drawing) -> None:
    w, nw = d.u(0.28, 0.42), d.u(0.09, 0.13)
    shoulder, neck = d.u(-0.1, 0.05), d.u(-0.32, -0.2)
    t = np.linspace(0.0, np.pi / 2, 6)
    right = np.stack([nw / 2 + (w - nw) / 2 * np.sin(t), neck + (shoulder - neck) * (1 - np.cos(t))], axis=1)
    left = right[::-1] * (-1, 1)
    d.add("Body", np.concatenate([right, [(w / 2, 0.5), (-w / 2, 0.5)], left]))
    if d.p(0.6):
        y0 = d.u(shoulder + 0.05, 0.2)
        d.add("Body", box(-w / 2, y0, w / 2, y0 + 0.2), look="label")
    top, lip = neck - d.u(0.1, 0.18), nw * d.u(0.55, 0.7)
    d.add("Mouth", box(-nw / 2, top, nw / 2, neck + 0.01))
    d.add("Mouth", box(-lip, top - 0.04, lip, top + 0.03), look="cap" if d.p(0.5) else "Mouth")


BUILDERS: dict[str, Callable[[_Drawing], None]] = {
    "Quadruped": _quadruped,
    "Biped": _biped,
    "Fish": _fish,
    "Bird": _bird,
    "Snake": _snake,
    "Reptile": _reptile,
    "Car": _car,
    "Bicycle": _bicycle,
    "Boat": _boat,
    "Aeroplane": _aeroplane,
    "Bottle": _bottle,
}


def draw_object(rng: np.random.Generator, supercategory: str) -> list[Prim]:
    """Primitives of one articulated object of ``supercategory`` in its own frame, centred at 0."""
    d = _Drawing(rng)
    BUILDERS[supercategory](d)
    pts = np.concatenate([p.poly for p in d.prims])
    centre = (pts.min(axis=0) + pts.max(axis=0)) / 2
    return [Prim(p.part, p.look, p.poly - centre) for p in d.prims]
