"""SAM's mask losses: focal + dice on mask logits, and MSE on the IoU head (Kirillov et al. 2023, §3).

SAM weighs focal to dice 20:1 and supervises the IoU prediction with the IoU of the thresholded mask.
All functions return one value per mask ([N] or [N, K]) so that the caller can pick the best of a
multimask output before averaging.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) averaged over pixels.

    Args:
        logits: [..., H, W] mask logits.
        targets: [..., H, W] in [0, 1] (soft targets allowed).

    Returns:
        [...] loss per mask.
    """
    logits, targets = logits.float(), targets.float()
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft dice loss 1 - (2|P∩T| + eps) / (|P| + |T| + eps) on sigmoid probabilities.

    Args:
        logits: [..., H, W] mask logits.
        targets: [..., H, W] in [0, 1].

    Returns:
        [...] loss per mask.
    """
    prob = logits.float().sigmoid().flatten(-2)
    targets = targets.float().flatten(-2)
    inter = (prob * targets).sum(-1)
    return 1 - (2 * inter + eps) / (prob.sum(-1) + targets.sum(-1) + eps)


@torch.no_grad()
def mask_iou(logits: torch.Tensor, targets: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """IoU of ``logits > threshold`` with ``targets >= 0.5``, [..., H, W] -> [...] (1 where both empty)."""
    pred = logits > threshold
    gt = targets >= 0.5
    inter = (pred & gt).flatten(-2).sum(-1).float()
    union = (pred | gt).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
