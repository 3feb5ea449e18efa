"""Prompts for the tiny SAM's pre-training, drawn from a scene's target masks as SAM's training does.

Frames: every prompt is in the input frame of the scene, SAM's convention (segment-anything's
predictor): points are pixel indices (X, Y) and boxes XYXY with inclusive maxima; the prompt encoder
adds 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.targets import interior_point as weak_interior_point


@dataclass(frozen=True)
class PromptConfig:
    """How prompts are drawn (pixels of the scene's frame)."""

    p_box: float = 0.5  # share of prompts that are boxes; the rest are points
    p_multi_point: float = 0.2  # steps whose point prompts have 2-3 points (with negatives)
    p_interior_point: float = 0.5  # a single point is the mask's innermost pixel, else a random pixel
    p_exact_box: float = 0.25  # a box is the tight box, else jittered
    box_noise: float = 0.1  # std of the box jitter, as a share of the box side
    box_noise_max: float = 20.0


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight XYXY box of a bool mask [H, W], inclusive maxima (SAM's ``batched_mask_to_box``)."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def interior_point(mask: np.ndarray) -> np.ndarray:
    """The pixel of a bool mask [H, W] farthest from its outline, as a pixel index (X, Y): a click in
    its middle (the weak point of :mod:`wps_sam.data.targets`, whose frame is pixel centres)."""
    return weak_interior_point(mask) - np.float32(0.5)


def sample_prompts(
    rng: np.random.Generator, masks: np.ndarray, n: int, cfg: PromptConfig, n_points: int
) -> dict[str, np.ndarray]:
    """Pick ``n`` targets of one scene and prompt each by a box or by points.

    Args:
        masks: bool [M, S, S] targets (none empty).
        n_points: points per point prompt this step (1: positive only; 2-3: extra positive or
            negative points).

    Returns:
        ``target`` int [n] (index into masks), ``is_box`` bool [n], ``box`` float [n, 4] (XYXY),
        ``coords`` float [n, n_points, 2] (X, Y), ``labels`` int [n, n_points] (1 positive, 0 negative).
    """
    size = masks.shape[-1]
    target = rng.choice(len(masks), n, replace=len(masks) < n)
    is_box = rng.random(n) < cfg.p_box
    box = np.zeros((n, 4), np.float32)
    coords = np.zeros((n, n_points, 2), np.float32)
    labels = np.ones((n, n_points), np.int64)
    for j, t in enumerate(target):
        m = masks[t]
        tight = mask_box(m)
        if rng.random() < cfg.p_exact_box:
            box[j] = tight
        else:
            side = np.repeat(tight[2:] - tight[:2] + 1, 2)[[0, 2, 1, 3]]  # (w, h, w, h)
            noise = np.clip(rng.normal(0, cfg.box_noise * side), -cfg.box_noise_max, cfg.box_noise_max)
            box[j] = np.clip(tight + noise, 0, size - 1)
        ys, xs = np.nonzero(m)
        if n_points == 1 and rng.random() < cfg.p_interior_point:
            coords[j, 0] = interior_point(m)
        else:
            i = rng.integers(len(xs))
            coords[j, 0] = xs[i], ys[i]
        for k in range(1, n_points):
            if rng.random() < 0.5:
                i = rng.integers(len(xs))
                coords[j, k] = xs[i], ys[i]
            else:  # a negative point just outside the mask, near its box
                x0, y0, x1, y1 = (tight + np.array([-10, -10, 10, 10])).clip(0, size - 1).astype(int)
                oy, ox = np.nonzero(~m[y0 : y1 + 1, x0 : x1 + 1])
                if len(ox) == 0:
                    oy, ox = np.nonzero(~m)
                    y0 = x0 = 0
                if len(ox):
                    i = rng.integers(len(ox))
                    coords[j, k], labels[j, k] = (ox[i] + x0, oy[i] + y0), 0
                else:
                    coords[j, k] = coords[j, 0]
    return {"target": target, "is_box": is_box, "box": box, "coords": coords, "labels": labels}
