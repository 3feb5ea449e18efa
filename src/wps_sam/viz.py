"""Visualisation: a fixed part palette, overlays with boundaries and legend, grids, bar charts.

Functions return uint8 RGB arrays and do no I/O, except the ``save_*`` functions and
:func:`bar_chart`, which write their file atomically. Label maps follow the package convention:
0 is background, k (1..C) is part class k-1, so ``class_names`` (the C part names) is indexed by
``label - 1``. Images and label maps are in the same frame (usually the original image frame).
"""

from __future__ import annotations

import colorsys
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from wps_sam.atomic import atomic_write_bytes

# Kelly's colours of maximum contrast (without white, black and the darkest ones, which would
# vanish on dark images); the order puts very different hues next to each other.
_BASE_COLOURS = [
    (0xF3, 0xC3, 0x00),
    (0x87, 0x56, 0x92),
    (0xF3, 0x84, 0x00),
    (0xA1, 0xCA, 0xF1),
    (0xBE, 0x00, 0x32),
    (0xC2, 0xB2, 0x80),
    (0x84, 0x84, 0x82),
    (0x00, 0x88, 0x56),
    (0xE6, 0x8F, 0xAC),
    (0x00, 0x67, 0xA5),
    (0xF9, 0x93, 0x79),
    (0x60, 0x4E, 0x97),
    (0xF6, 0xA6, 0x00),
    (0xB3, 0x44, 0x6C),
    (0xDC, 0xD3, 0x00),
    (0x88, 0x2D, 0x17),
    (0x8D, 0xB6, 0x00),
    (0xE2, 0x58, 0x22),
]
_BOUNDARY = np.array([255, 255, 255], dtype=np.uint8)


def palette(n: int) -> np.ndarray:
    """Colours for the labels 0..n-1 of a label map: [n, 3] uint8 RGB.

    Row 0 (background) is black and is left transparent by :func:`overlay`; rows 1.. are a fixed
    list of distinct colours, continued by golden-ratio hue steps past its end. The same label
    always gets the same colour, whatever ``n``.
    """
    colours = [(0, 0, 0)]
    for i in range(max(n - 1, 0)):
        if i < len(_BASE_COLOURS):
            colours.append(_BASE_COLOURS[i])
        else:
            j = i - len(_BASE_COLOURS)
            hue = (0.11 + j * 0.618033988749895) % 1.0
            value = 0.95 if j % 2 == 0 else 0.7
            r, g, b = colorsys.hsv_to_rgb(hue, 0.75, value)
            colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return np.array(colours[:n], dtype=np.uint8).reshape(n, 3)


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def boundaries(label_map: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels whose right or lower neighbour has another label."""
    edge = np.zeros(label_map.shape, dtype=bool)
    edge[:, :-1] |= label_map[:, :-1] != label_map[:, 1:]
    edge[:-1, :] |= label_map[:-1, :] != label_map[1:, :]
    return edge


def overlay(
    image: np.ndarray,
    label_map: np.ndarray | torch.Tensor,
    class_names: Sequence[str],
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend a semantic part map over an image, draw part boundaries, and add a legend.

    Part pixels are blended with their class colour (``alpha`` = weight of the colour); background
    stays as it is; boundaries between different labels (parts and background) are drawn white. A
    legend panel, one colour swatch and name per class *present* in the map, is appended to the
    right (the image is padded with black below if the legend is taller). With no part present the
    blended image is returned without a panel.

    Args:
        image: uint8 [H, W, 3] RGB.
        label_map: [H, W] integer labels, 0 = background, k = ``class_names[k - 1]``.
        class_names: the C part names.
        alpha: opacity of the part colours, in [0, 1].

    Returns:
        uint8 [max(H, legend height), W + legend width, 3] RGB.
    """
    image = _as_numpy(image)
    labels = _as_numpy(label_map).astype(np.int64)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    if labels.shape != image.shape[:2]:
        raise ValueError(f"label_map {labels.shape} must match the image's {image.shape[:2]}")
    if labels.size and (labels.min() < 0 or labels.max() > len(class_names)):
        raise ValueError(f"labels must be in 0..{len(class_names)}, got [{labels.min()}, {labels.max()}]")

    colours = palette(len(class_names) + 1)
    out = image.astype(np.float32)
    part = labels > 0
    out[part] = (1.0 - alpha) * out[part] + alpha * colours[labels[part]].astype(np.float32)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    out[boundaries(labels)] = _BOUNDARY

    present = [int(k) for k in np.unique(labels) if k > 0]
    if not present:
        return out
    legend = _legend([class_names[k - 1] for k in present], colours[present])
    height = max(out.shape[0], legend.shape[0])
    canvas = np.zeros((height, out.shape[1] + legend.shape[1], 3), dtype=np.uint8)
    canvas[: out.shape[0], : out.shape[1]] = out
    canvas[: legend.shape[0], out.shape[1] :] = legend
    return canvas


def _legend(names: Sequence[str], colours: np.ndarray, swatch: int = 12, margin: int = 6) -> np.ndarray:
    """A black panel listing ``names`` with their colour swatches, uint8 [h, w, 3]."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [probe.textbbox((0, 0), name, font=font) for name in names]
    text_w = max(b[2] - b[0] for b in boxes)
    line = max(swatch, max(b[3] - b[1] for b in boxes)) + 4
    width = margin + swatch + margin + text_w + margin
    height = 2 * margin + line * len(names)
    panel = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(panel)
    for i, (name, colour, box) in enumerate(zip(names, colours, boxes)):
        y = margin + i * line
        draw.rectangle([margin, y, margin + swatch - 1, y + swatch - 1], fill=tuple(int(c) for c in colour))
        draw.text((2 * margin + swatch, y - box[1]), name, fill=(255, 255, 255), font=font)
    return np.asarray(panel, dtype=np.uint8)


def save_overlay(
    path: str | Path,
    image: np.ndarray,
    label_map: np.ndarray | torch.Tensor,
    class_names: Sequence[str],
    alpha: float = 0.5,
) -> Path:
    """Write :func:`overlay` as an image file (format from the suffix, PNG by default)."""
    return save_image(path, overlay(image, label_map, class_names, alpha))


def save_image(path: str | Path, image: np.ndarray) -> Path:
    """Write a uint8 [H, W, 3] RGB array atomically (format from the suffix, PNG by default)."""
    from PIL import Image

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format=fmt)
    return atomic_write_bytes(path, buf.getvalue())


def overlay_grid(
    rows: Sequence[Sequence[np.ndarray]],
    titles: Sequence[str] | None = None,
    gap: int = 4,
) -> np.ndarray:
    """Tile images (for instance overlays) into a grid on a white background.

    Each cell is as wide as the widest image of its column and as tall as the tallest of its row;
    images sit at the cell's top-left. Rows may be of different lengths.

    Args:
        rows: rows of uint8 [h, w, 3] images.
        titles: optional column titles, drawn above the columns.
        gap: pixels between cells and around the grid.

    Returns:
        uint8 [H, W, 3] RGB.
    """
    from PIL import Image, ImageDraw, ImageFont

    if not rows or not any(len(r) for r in rows):
        raise ValueError("overlay_grid needs at least one image")
    n_cols = max(len(r) for r in rows)
    col_w = [max((r[j].shape[1] for r in rows if j < len(r)), default=0) for j in range(n_cols)]
    row_h = [max((im.shape[0] for im in r), default=0) for r in rows]

    font = ImageFont.load_default()
    title_h = 0
    if titles:
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        title_h = max(probe.textbbox((0, 0), t, font=font)[3] for t in titles) + gap
    width = gap + sum(w + gap for w in col_w)
    height = gap + title_h + sum(h + gap for h in row_h)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)

    xs = np.cumsum([gap] + [w + gap for w in col_w])[:-1]
    y = gap + title_h
    for r, h in zip(rows, row_h):
        for j, im in enumerate(r):
            im = _as_numpy(im)
            canvas[y : y + im.shape[0], xs[j] : xs[j] + im.shape[1]] = im
        y += h + gap
    if titles:
        pil = Image.fromarray(canvas)
        draw = ImageDraw.Draw(pil)
        for j, title in enumerate(titles[:n_cols]):
            draw.text((int(xs[j]), gap), title, fill=(0, 0, 0), font=font)
        canvas = np.asarray(pil, dtype=np.uint8)
    return canvas


def bar_chart(path: str | Path, results: Mapping[str, Mapping[str, float | None]], title: str = "") -> Path:
    """Grouped bar chart of mIoU and mACC per method, written atomically (format from the suffix).

    Args:
        path: destination (.png, .pdf, .svg ...).
        results: ``{method: {"miou": fraction, "macc": fraction}}``; values in [0, 1], shown in %;
            a missing or None value is drawn as an empty bar.
        title: optional figure title.
    """
    from matplotlib.figure import Figure  # Agg canvas, no pyplot and no global backend switch

    methods = list(results)
    metrics = [("miou", "mIoU"), ("macc", "mACC")]
    fig = Figure(figsize=(max(4.0, 1.2 * len(methods) + 1.5), 3.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(methods))
    width = 0.38
    for i, (key, label) in enumerate(metrics):
        values = [results[m].get(key) for m in methods]
        heights = [100.0 * v if v is not None else 0.0 for v in values]
        bars = ax.bar(x + (i - 0.5) * width, heights, width, label=label)
        ax.bar_label(
            bars, labels=[f"{h:.1f}" if v is not None else "" for h, v in zip(heights, values)], fontsize=7
        )
    ax.set_xticks(x, methods, rotation=15 if len(methods) > 4 else 0)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.legend(loc="upper left", fontsize=8)
    if title:
        ax.set_title(title)
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".").lower() or "png")
    return atomic_write_bytes(path, buf.getvalue())
