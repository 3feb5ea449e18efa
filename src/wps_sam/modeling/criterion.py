"""WPS-SAM's training objective: classify every query, distil matched queries' tokens from the teacher.

After DETR's ``SetCriterion``: the matcher pairs queries with ground-truth parts, then

* ``loss_ce``: cross-entropy over all B x Q queries; a matched query's target is its part's class, an
  unmatched one's is "no part" (index C);
* ``loss_token``: smooth-L1 between each matched query's prompt tokens and the teacher tokens that
  SAM's frozen prompt encoder made from its part's box or point.

The training loop sums ``weight_dict[k] * losses[k]`` (:meth:`SetCriterion.weighted_total`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .matcher import HungarianMatcher

if TYPE_CHECKING:
    from ..config import LossConfig

LOSS_KEYS = ("loss_ce", "loss_token")


class SetCriterion(nn.Module):
    """Losses of the prompter's outputs against the ground-truth parts and their teacher tokens.

    Args:
        num_classes: number of part classes C (the logits have C + 1 entries, the last "no part").
        matcher: assigns queries to parts.
        weight_dict: weight of each loss in the total, keys ``"loss_ce"`` and ``"loss_token"``
            (WPS-SAM: 5 and 20).
        eos_coef: relative weight of the "no part" class in the cross-entropy (DETR's ``eos_coef``);
            1.0, every class alike, is the official WPS-SAM loss.
    """

    def __init__(
        self, num_classes: int, matcher: HungarianMatcher, weight_dict: dict[str, float], eos_coef: float = 1.0
    ) -> None:
        super().__init__()
        unknown = set(weight_dict) - set(LOSS_KEYS)
        if unknown:
            raise ValueError(
                f"unknown loss name(s) {sorted(unknown)} in weight_dict; known: {list(LOSS_KEYS)}"
            )
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def forward(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Match, then compute the losses and the matching statistics.

        Args:
            outputs: ``{"pred_logits": [B, Q, C + 1], "pred_tokens": [B, Q, T, D]}``.
            targets: B dicts with ``"labels"`` [N_i] and teacher ``"tokens"`` [N_i, T, D].

        Returns:
            Scalars: ``loss_ce`` (mean over the B x Q queries); ``loss_token`` (mean over every element
            of every matched token in the batch, i.e. parts are pooled across images; a zero that still
            backpropagates when the batch has no part); and detached statistics ``class_acc`` (fraction
            of queries whose argmax is their target, matched label or "no part": the official
            "matcher Acc"), ``match_recall`` (fraction of matched queries whose argmax is their part's
            label, pooled over the batch; 0 when nothing is matched) and ``num_matched``.
        """
        logits = outputs["pred_logits"]
        if logits.shape[-1] != self.num_classes + 1:
            raise ValueError(f"pred_logits has {logits.shape[-1]} classes, expected {self.num_classes} + 1")
        indices = self.matcher(outputs, targets)
        device = logits.device
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]).to(device)
        query_idx = torch.cat([src for src, _ in indices]).to(device)
        matched_labels = torch.cat(
            [t["labels"].to(device)[tgt.to(device)] for t, (_, tgt) in zip(targets, indices)]
        )

        # Upcast: the losses are reduced over many queries and token elements.
        logits = logits.float()
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=device)
        target_classes[batch_idx, query_idx] = matched_labels.long()
        loss_ce = F.cross_entropy(logits.flatten(0, 1), target_classes.flatten(), self.empty_weight.to(logits.device))

        src_tokens = outputs["pred_tokens"][batch_idx, query_idx].float()  # [M, T, D]
        if len(query_idx):
            tgt_tokens = torch.cat(
                [t["tokens"][tgt.to(t["tokens"].device)] for t, (_, tgt) in zip(targets, indices) if len(tgt)]
            )
            tgt_tokens = tgt_tokens.to(device=device, dtype=torch.float32).detach()
            loss_token = F.smooth_l1_loss(src_tokens, tgt_tokens, beta=1.0)
        else:
            # Sum over no element: 0, still part of the graph so that backward() works.
            loss_token = src_tokens.sum()

        with torch.no_grad():
            predicted = logits.argmax(-1)
            class_acc = (predicted == target_classes).float().mean()
            num_matched = torch.tensor(float(len(query_idx)), device=device)
            hits = (predicted[batch_idx, query_idx] == matched_labels).float().sum()
            match_recall = hits / num_matched.clamp(min=1)
        return {
            "loss_ce": loss_ce,
            "loss_token": loss_token,
            "class_acc": class_acc,
            "match_recall": match_recall,
            "num_matched": num_matched,
        }

    def weighted_total(self, losses: dict[str, Tensor]) -> Tensor:
        """The training objective: ``sum(weight_dict[k] * losses[k])``."""
        missing = set(self.weight_dict) - set(losses)
        if missing:
            raise KeyError(f"losses lack {sorted(missing)}; got {sorted(losses)}")
        return sum(self.weight_dict[k] * losses[k] for k in self.weight_dict)


def build_criterion(loss_cfg: LossConfig, num_classes: int) -> SetCriterion:
    """The criterion with the matching costs and loss weights of ``loss_cfg``."""
    matcher = HungarianMatcher(cost_class=loss_cfg.cost_class, cost_token=loss_cfg.cost_token)
    weights = {"loss_ce": loss_cfg.weight_ce, "loss_token": loss_cfg.weight_token}
    return SetCriterion(num_classes, matcher, weights, eos_coef=loss_cfg.eos_coef)
