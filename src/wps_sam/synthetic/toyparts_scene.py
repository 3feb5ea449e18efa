"""ToyParts scenes: articulated objects over textured, cluttered backgrounds, and their part labels.

Image ``index`` of ``split`` is drawn from a generator seeded with ``(seed, crc32(split), index)``:
the same arguments give the same pixels. :mod:`wps_sam.synthetic.toyparts` annotates and writes them.
"""

from __future__ import annotations

import colorsys
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from wps_sam.errors import ConfigError
from wps_sam.synthetic.toyparts_shapes import POSE, SUPERCATEGORIES, draw_object, rotation, tube

_TEXTURES = ("flat", "gradient", "stripes", "checker", "spots", "noise")


@dataclass(frozen=True)
class ToyPartsConfig:
    """How ToyParts scenes are drawn and written."""

    size: int = 256  # square image side, pixels
    seed: int = 0
    max_objects: int = 3  # objects per image: 1..max_objects, fewer more likely
    min_area: int = 20  # annotations with fewer visible pixels are dropped
    clutter: tuple[int, int] = (3, 9)  # distractor shapes on the background, min and max
    occluder_prob: float = 0.35  # chance of one or two foreground occluders
    shared_look_prob: float = 0.4  # chance that an object's parts share one texture, like an animal's
    jpeg_quality: int = 90
    supercategories: tuple[str, ...] = tuple(SUPERCATEGORIES)

    def __post_init__(self) -> None:
        if self.size < 32:
            raise ConfigError(f"toyparts.size must be at least 32 pixels, got {self.size}")
        # These bounds keep a scene within the 255 labels and looks of its 8-bit layers.
        if not 1 <= self.max_objects <= 8:
            raise ConfigError(f"toyparts.max_objects must be in 1..8, got {self.max_objects}")
        if not 0 <= self.clutter[0] <= self.clutter[1] <= 40:
            raise ConfigError(
                f"toyparts.clutter must be (min, max) with 0 <= min <= max <= 40, got {self.clutter}"
            )
        unknown = sorted(set(self.supercategories) - set(SUPERCATEGORIES))
        if unknown or not self.supercategories:
            raise ConfigError(
                f"toyparts.supercategories: unknown or empty {unknown}; known: {list(SUPERCATEGORIES)}"
            )


@dataclass(frozen=True)
class _Look:
    """A texture: colours ``c1``/``c2`` (RGB, 0..255) mixed by a pattern of ``period`` px at ``angle``."""

    kind: str
    c1: np.ndarray
    c2: np.ndarray
    period: float
    angle: float


@dataclass
class Scene:
    """One rendered image and its visible part labels.

    ``labels`` is HxW uint8: 0 where no part is visible, k where ``parts[k - 1]`` = (object index,
    part class name) is.
    """

    image: np.ndarray
    labels: np.ndarray
    parts: list[tuple[int, str]] = field(default_factory=list)


def _colour(rng: np.random.Generator, dark: bool = False) -> np.ndarray:
    v = rng.uniform(0.05, 0.3) if dark else rng.uniform(0.2, 1.0)
    return 255 * np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.1, 1.0), v))


def _random_look(rng: np.random.Generator, dark: bool = False) -> _Look:
    kind = _TEXTURES[rng.integers(len(_TEXTURES))]
    c1 = _colour(rng, dark)
    c2 = np.clip(c1 * rng.uniform(0.4, 1.6), 0, 255) if rng.random() < 0.5 else _colour(rng, dark)
    return _Look(kind, c1, c2, rng.uniform(3, 24), rng.uniform(0, 180))


def _jitter(rng: np.random.Generator, look: _Look) -> _Look:
    """The same texture, a little lighter or darker: parts of a one-coloured animal."""
    f = rng.uniform(0.75, 1.25)
    return _Look(
        look.kind, np.clip(look.c1 * f, 0, 255), np.clip(look.c2 * f, 0, 255), look.period, look.angle
    )


def _paint(rng: np.random.Generator, look: _Look, sl: tuple[slice, slice]) -> np.ndarray:
    """The texture over the image window ``sl``: hxwx3 float32."""
    h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
    c1 = look.c1.astype(np.float32)
    if look.kind == "flat":
        return np.broadcast_to(c1, (h, w, 3))
    if look.kind in ("spots", "noise"):  # value noise: spots are its upper half
        grid = rng.random((int(h / look.period) + 2, int(w / look.period) + 2), dtype=np.float32)
        t = np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.BILINEAR))
        t = (t > 0.55).astype(np.float32) if look.kind == "spots" else t
    else:
        c, s = np.cos(np.deg2rad(look.angle)), np.sin(np.deg2rad(look.angle))
        ys = np.arange(sl[0].start, sl[0].stop, dtype=np.float32)[:, None]
        xs = np.arange(sl[1].start, sl[1].stop, dtype=np.float32)[None, :]
        along = xs * c + ys * s
        if look.kind == "gradient":
            t = (along - along.min()) / max(float(along.max() - along.min()), 1.0)
        elif look.kind == "stripes":
            t = np.sin(along * (2 * np.pi / look.period)) > 0
        else:  # checker
            t = (np.floor(along / look.period) + np.floor((ys * c - xs * s) / look.period)) % 2
    t = np.broadcast_to(t, (h, w))[..., None].astype(np.float32)
    return t * (look.c2 - look.c1).astype(np.float32) + c1


def _clutter(rng: np.random.Generator, size: int, big: bool = False) -> np.ndarray:
    """A distractor that is no part: a blob, a stick, a jagged polygon or a bar (Kx2 pixels)."""
    c = rng.uniform(0, size, 2)
    r = size * rng.uniform(0.07, 0.16) if big else size * rng.uniform(0.03, 0.15)
    kind = rng.integers(4)
    if kind == 0:  # blob
        t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        rad = r * (1 + 0.35 * np.sin(t * rng.integers(2, 5) + rng.uniform(0, 6.3)))
        return c + np.stack([rad * np.cos(t), rad * np.sin(t)], axis=1)
    if kind == 1:  # stick or branch
        steps = rng.normal(0, 0.4, 6).cumsum() + rng.uniform(0, 6.3)
        path = c + np.cumsum(np.stack([np.cos(steps), np.sin(steps)], axis=1) * r / 2, axis=0)
        return tube(path, rng.uniform(1.5, 5.0) * (2 if big else 1))
    if kind == 2:  # jagged polygon
        t = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 8))))
        rad = r * rng.uniform(0.3, 1.0, len(t))
        return c + np.stack([rad * np.cos(t), rad * np.sin(t)], axis=1)
    half = np.array([rng.uniform(0.05, 0.2), 1.0]) * r * (1 if big else 2)  # pole or bar
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
    return c + corners @ rotation(rng.uniform(-30, 30) + 90 * rng.integers(2)).T


def _place(
    rng: np.random.Generator, pts: np.ndarray, size: int, n: int, boxes: list[np.ndarray]
) -> tuple[float, np.ndarray]:
    """Scale and offset for an object whose rotated points are ``pts``, overlapping earlier boxes a little."""
    extent = np.ptp(pts, axis=0)
    scale = size * rng.uniform(0.55 / n**0.45, 0.9 / n**0.4) / extent.max()
    span = extent * scale
    best = None
    for _ in range(8):  # up to 15% of an object may leave the image
        lo, hi = span * 0.35, size - span * 0.35
        centre = np.where(lo < hi, rng.uniform(np.minimum(lo, hi), np.maximum(lo, hi)), size / 2)
        box = np.concatenate([centre - span / 2, centre + span / 2])
        overlap = max((_overlap(box, b) for b in boxes), default=0.0)
        if best is None or overlap < best[0]:
            best = (overlap, centre, box)
        if overlap < 0.3:
            break
    boxes.append(best[2])
    return scale, best[1] - (pts.min(axis=0) + pts.max(axis=0)) / 2 * scale


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection of two XYXY boxes over the smaller one's area."""
    w, h = np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2])
    small = min(np.prod(a[2:] - a[:2]), np.prod(b[2:] - b[:2]))
    return float(max(w, 0) * max(h, 0) / max(small, 1e-9))


class _Canvas:
    """The two layers a scene is painted into, in painter's order: part labels and looks."""

    def __init__(self, size: int, background: _Look) -> None:
        self.labels, self.look_ids = Image.new("L", (size, size)), Image.new("L", (size, size))
        self._draw_label, self._draw_look = ImageDraw.Draw(self.labels), ImageDraw.Draw(self.look_ids)
        self.looks: list[_Look] = [background]  # look id k paints with looks[k]
        self.parts: list[tuple[int, str]] = []  # label k marks parts[k - 1]

    def look(self, look: _Look) -> int:
        self.looks.append(look)
        return len(self.looks) - 1

    def label(self, obj: int, name: str) -> int:
        if (obj, name) not in self.parts:
            self.parts.append((obj, name))
        return self.parts.index((obj, name)) + 1

    def fill(self, poly: np.ndarray, look: int, label: int | None) -> None:
        """Fill the Kx2 pixel polygon with ``look``; with ``label`` too unless None (label untouched)."""
        xy = poly.ravel().tolist()
        self._draw_look.polygon(xy, fill=look)
        if label is not None:
            self._draw_label.polygon(xy, fill=label)


def _add_object(
    rng: np.random.Generator, canvas: _Canvas, config: ToyPartsConfig, obj: int, n: int, boxes: list
) -> None:
    """Draw object ``obj`` of ``n``: a random super-category, pose, place and texture per part."""
    sup = config.supercategories[int(rng.integers(len(config.supercategories)))]
    prims = draw_object(rng, sup)
    max_deg, lying = POSE[sup]
    turn = rng.uniform(-max_deg, max_deg) + (90 * rng.choice([-1, 1]) if rng.random() < lying else 0)
    rot = rotation(turn) * np.array([-1.0 if rng.random() < 0.5 else 1.0, 1.0])  # mirror x, then turn
    scale, offset = _place(rng, np.concatenate([p.poly for p in prims]) @ rot.T, config.size, n, boxes)
    shared = _random_look(rng) if rng.random() < config.shared_look_prob else None
    looks: dict[str, int] = {}
    for prim in prims:
        if prim.look not in looks:
            if prim.look in ("eye", "window"):
                looks[prim.look] = canvas.look(_random_look(rng, dark=True))
            elif shared is not None and prim.look == prim.part:
                looks[prim.look] = canvas.look(_jitter(rng, shared))
            else:
                looks[prim.look] = canvas.look(_random_look(rng))
        label = canvas.label(obj, f"{sup} {prim.part}")
        canvas.fill(prim.poly @ rot.T * scale + offset, looks[prim.look], label)


def render_scene(config: ToyPartsConfig, split: str, index: int) -> Scene:
    """Draw image ``index`` of ``split``: deterministic in (config, split, index)."""
    rng = np.random.default_rng([config.seed, zlib.crc32(split.encode()), index])
    size = config.size
    canvas = _Canvas(size, _random_look(rng))
    for _ in range(int(rng.integers(config.clutter[0], config.clutter[1] + 1))):
        canvas.fill(_clutter(rng, size), canvas.look(_random_look(rng)), None)
    n = int(rng.choice(np.arange(1, config.max_objects + 1), p=_count_probs(config.max_objects)))
    boxes: list[np.ndarray] = []
    for obj in range(n):
        _add_object(rng, canvas, config, obj, n, boxes)
    if rng.random() < config.occluder_prob:
        for _ in range(int(rng.integers(1, 3))):
            canvas.fill(_clutter(rng, size, big=True), canvas.look(_random_look(rng)), 0)

    look_ids = np.asarray(canvas.look_ids)
    image = np.array(_paint(rng, canvas.looks[0], (slice(0, size), slice(0, size))))
    for k, sl in enumerate(ndimage.find_objects(look_ids), start=1):
        if sl is not None:
            np.copyto(image[sl], _paint(rng, canvas.looks[k], sl), where=(look_ids[sl] == k)[..., None])
    return Scene(_finish(rng, image), np.asarray(canvas.labels).copy(), canvas.parts)


def _count_probs(max_objects: int) -> np.ndarray:
    p = 0.75 ** np.arange(max_objects)
    return p / p.sum()


def _finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Light falling across the scene, sensor noise and sometimes a little blur."""
    size = image.shape[0]
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32) * np.float32(rng.uniform(0, 0.4))
    deg = rng.uniform(0, 2 * np.pi)
    light = 1 + (ramp[None, :] * np.cos(deg) + ramp[:, None] * np.sin(deg))
    image *= light[..., None]
    image += rng.standard_normal((size, size, 1), dtype=np.float32) * np.float32(rng.uniform(2, 8))
    out = Image.fromarray(np.clip(image, 0, 255, out=image).astype(np.uint8))
    if rng.random() < 0.5:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    return np.asarray(out)
