"""From prompter outputs to part instances and a semantic part map.

The prompter emits, per image, ``pred_logits`` [Q, C+1] (index C is "no part") and prompt tokens;
SAM's mask decoder turns the tokens of the *kept* queries into masks. This module holds the three
steps that are not a network:

1. :func:`select_queries` — which queries are kept, with their class and score;
2. :func:`compose_semantic_map` — kept masks -> one label map (0 = background, k = class k-1);
3. :func:`semantic_map_from_gt` — the same label map for ground-truth part masks.

All three work in whatever frame their masks are in (original image or SAM's input square).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


@torch.no_grad()
def select_queries(pred_logits: Tensor, score_threshold: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """Keep the queries predicted as a part, as the official WPS-SAM inference does.

    A query is kept when the argmax of its logits is not "no part" (index C), which is exactly the
    official rule (``logits.max(-1)`` then ``pred_class != num_classes``), and when its score, the
    softmax probability of that argmax class, is ``>= score_threshold``. With the default threshold
    0 the rule is the official one.

    Args:
        pred_logits: [Q, C+1] class logits of one image; the last entry is "no part".
        score_threshold: minimum softmax probability of the predicted class, in [0, 1].

    Returns:
        keep_idx: LongTensor [K], indices into the Q queries, increasing.
        labels: LongTensor [K], part classes in 0..C-1.
        scores: Tensor [K] (float32), softmax probability of each kept query's class.
    """
    if pred_logits.ndim != 2 or pred_logits.shape[-1] < 2:
        raise ValueError(f"pred_logits must be [Q, C+1] with C >= 1, got {tuple(pred_logits.shape)}")
    no_part = pred_logits.shape[-1] - 1
    # argmax on the logits themselves (not on rounded probabilities), like the official code
    _, labels = pred_logits.max(-1)
    probs = pred_logits.float().softmax(-1)
    scores = probs.gather(-1, labels[:, None])[:, 0]
    keep = (labels != no_part) & (scores >= score_threshold)
    keep_idx = torch.nonzero(keep).squeeze(-1)
    return keep_idx, labels[keep_idx], scores[keep_idx]


@torch.no_grad()
def compose_semantic_map(
    mask_probs: Tensor,
    labels: Tensor,
    scores: Tensor,
    mask_threshold: float = 0.5,
) -> Tensor:
    """Compose the masks of the kept queries into one semantic part map.

    Rule: a pixel is covered by a kept query when that query's mask probability is strictly greater
    than ``mask_threshold`` at the pixel. A covered pixel goes to the covering query with the highest
    ``score * mask probability`` and takes its class (label map value = class + 1); on an exact tie
    the query that comes first wins. A pixel covered by no query is background (0). With no kept
    query (K = 0) the whole map is background.

    Args:
        mask_probs: [K, H, W] mask probabilities in [0, 1] (sigmoid of SAM's mask logits), any frame.
        labels: LongTensor [K], part classes in 0..C-1.
        scores: Tensor [K], the query scores from :func:`select_queries`.
        mask_threshold: probability a mask must exceed to cover a pixel.

    Returns:
        LongTensor [H, W] on ``mask_probs.device``: 0 = background, k = part class k-1.
    """
    if mask_probs.ndim != 3:
        raise ValueError(f"mask_probs must be [K, H, W], got {tuple(mask_probs.shape)}")
    k, h, w = mask_probs.shape
    if labels.shape != (k,) or scores.shape != (k,):
        raise ValueError(
            f"labels {tuple(labels.shape)} and scores {tuple(scores.shape)} must both be [{k}] for {k} masks"
        )
    if k == 0:
        return torch.zeros(h, w, dtype=torch.long, device=mask_probs.device)
    probs = mask_probs.float()
    covered = probs > mask_threshold  # [K, H, W]
    weighted = scores.float().to(probs.device)[:, None, None] * probs
    # uncovered entries can never win: every covered weight is >= 0 > -1
    weighted = torch.where(covered, weighted, torch.full_like(weighted, -1.0))
    winner = weighted.argmax(0)  # [H, W]; argmax returns the first index on ties
    semantic = labels.to(probs.device).long()[winner] + 1
    return torch.where(covered.any(0), semantic, torch.zeros_like(semantic))


def semantic_map_from_gt(masks: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> Tensor:
    """The ground-truth semantic part map of one image.

    Where ground-truth parts overlap, the part with the smaller area (pixel count of its whole mask)
    wins, because in part annotations the smaller part is usually the one drawn on top of the larger
    one (an eye on a head); on equal areas the part that comes first wins. Pixels of no part are
    background (0).

    Args:
        masks: bool [N, H, W] part masks (numpy or torch), any frame.
        labels: [N] part classes in 0..C-1.

    Returns:
        LongTensor [H, W] on the device of ``masks`` (CPU for numpy): 0 = background, k = class k-1.
    """
    masks_t = torch.as_tensor(masks).bool()
    labels_t = torch.as_tensor(labels).long().to(masks_t.device)
    if masks_t.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got {tuple(masks_t.shape)}")
    n, h, w = masks_t.shape
    if labels_t.shape != (n,):
        raise ValueError(f"labels must be [{n}] for {n} masks, got {tuple(labels_t.shape)}")
    areas = masks_t.flatten(1).sum(1).tolist()  # [N]
    # Painted from the largest part to the smallest, so that the smaller part ends on top; among equal
    # areas the later part is painted first, so that the first one wins. One pass per part: an argmin
    # over an [N, H, W] key costs ~10x as much on the CPU.
    semantic = torch.zeros(h, w, dtype=torch.long, device=masks_t.device)
    for k in sorted(range(n), key=lambda k: (-areas[k], -k)):
        semantic[masks_t[k]] = labels_t[k] + 1
    return semantic
