"""The plots users look at: training curves, per-class IoU and the confusion matrix of an evaluation.

Each function draws on a matplotlib ``Figure`` (the Agg canvas: no pyplot, no global backend) and
writes the file atomically; the format comes from the suffix (.png, .pdf, .svg).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_bytes


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".").lower() or "png")
    return atomic_write_bytes(path, buf.getvalue())


def training_curves(path: str | Path, records: Sequence[Mapping[str, Any]], title: str = "") -> Path:
    """Curves of a run's ``metrics.jsonl`` records against the step: the loss and each loss term (log
    scale), matching recall and class accuracy, the learning rate, and validation mIoU / mACC."""
    from matplotlib.figure import Figure

    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_miou" in r]
    if not train and not val:
        raise ValueError("no training or validation records to plot")
    panels: list[tuple[str, list[str], list[Mapping[str, Any]], bool]] = [
        ("losses", sorted({k for r in train for k in r if k.startswith("loss")}), train, True),
        ("matching", [k for k in ("match_recall", "class_acc") if any(k in r for r in train)], train, False),
        ("learning rate", ["lr"] if any("lr" in r for r in train) else [], train, True),
        ("validation (%)", ["val_miou", "val_macc"] if val else [], val, False),
    ]
    panels = [p for p in panels if p[1]]
    fig = Figure(figsize=(4.2 * len(panels), 3.3), dpi=100, layout="constrained")
    for ax, (name, keys, rows, log) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        scale = 100.0 if name.startswith("validation") else 1.0
        for key in keys:
            points = [(r["step"], scale * r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, label=key, marker="o" if len(points) < 3 else None, linewidth=1.2)
        if log and all(v > 0 for line in ax.get_lines() for v in line.get_ydata()):
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def per_class_iou_chart(path: str | Path, result: Mapping[str, Any], title: str = "") -> Path:
    """Horizontal bars of each class's IoU (background included) from an ``evaluate`` result, the
    mIoU as a line; classes that do not count (no ground truth, never predicted) are left empty."""
    from matplotlib.figure import Figure

    rows = result["per_class"]
    names = [r["name"] for r in rows]
    ious = [100.0 * r["iou"] if r["iou"] is not None else np.nan for r in rows]
    fig = Figure(figsize=(6.0, 1.0 + 0.24 * len(rows)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    ax.barh(y, np.nan_to_num(ious), color=["0.55" if n == "background" else "C0" for n in names])
    for yi, v in zip(y, ious):
        ax.text(
            0.5 if np.isnan(v) else v + 0.5, yi, "-" if np.isnan(v) else f"{v:.1f}", va="center", fontsize=7
        )
    if result.get("miou") is not None:
        ax.axvline(100.0 * result["miou"], color="C3", linewidth=1, label=f"mIoU {100 * result['miou']:.1f}")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel("IoU (%)")
    ax.set_title(title or "per-class IoU")
    return _save(fig, path)


def confusion_chart(path: str | Path, result: Mapping[str, Any], title: str = "") -> Path:
    """The pixel confusion matrix of an ``evaluate`` result, each row (ground truth) normalised to 1,
    background first; rows without ground-truth pixels stay empty."""
    from matplotlib.figure import Figure

    matrix = np.asarray(result["confusion"], dtype=np.float64)
    names = [r["name"] for r in result["per_class"]]
    if matrix.shape != (len(names), len(names)):
        raise ValueError(f"confusion matrix {matrix.shape} does not fit {len(names)} classes")
    totals = matrix.sum(1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.full_like(matrix, np.nan), where=totals > 0)
    side = 2.0 + 0.28 * len(names)
    fig = Figure(figsize=(side + 1.0, side), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(normalised, cmap="viridis", vmin=0.0, vmax=1.0)
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names, rotation=90, fontsize=6)
    ax.set_yticks(ticks, names, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the row's pixels")
    ax.set_title(title or "confusion (row-normalised)")
    return _save(fig, path)
