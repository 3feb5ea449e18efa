"""WPS-SAM's training objective: classify every query, distil matched queries' tokens from the teacher.

After DETR's ``SetCriterion``: the matcher pairs queries with ground-truth parts, then

* ``loss_ce``: cross-entropy over all B x Q queries; a matched query's target is its part's class, an
  unmatched one's is "no part" (index C);
* ``loss_token``: smooth-L1 between each matched query's prompt tokens and the teacher tokens that
  SAM's frozen prompt encoder made from its part's box or point (mixed supervision: the tokens of
  the query's head of that kind, ``pred_tokens`` for a box, ``pred_point_tokens`` for a point).

The faster recipes add terms of the same kinds, and the criterion adds them when the outputs carry
them:

* ``loss_geom`` (L1 over the normalised coordinates, summed per part) and ``loss_giou`` (1 - GIoU,
  boxes only) when queries predict geometry;
* the same terms of every earlier decoder layer, matched separately, suffixed ``_0``, ``_1``, ...
  (``aux_outputs``, DETR's auxiliary losses);
* per query group, each matched on its own (Group DETR);
* denoising queries against the part each stands for, suffixed ``_dn`` (``_dn_0`` ... per layer);
* two-stage proposals, every memory cell trained densely (:func:`~.proposals.assign_cells`),
  suffixed ``_enc``.

A term's weight is its base term's (``loss_ce_dn_0`` weighs as ``loss_ce``); the training loop sums
``weight_dict[base] * losses[k]`` (:meth:`SetCriterion.weighted_total`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou_loss

from .matcher import HungarianMatcher
from .proposals import assign_cells

if TYPE_CHECKING:
    from ..config import LossConfig

LOSS_KEYS = ("loss_ce", "loss_token", "loss_geom", "loss_giou")


def base_term(key: str) -> str:
    """``"loss_ce_dn_0"`` -> ``"loss_ce"``: the term whose weight a loss takes."""
    return "_".join(key.split("_")[:2])


class SetCriterion(nn.Module):
    """Losses of the prompter's outputs against the ground-truth parts and their teacher tokens.

    Args:
        num_classes: number of part classes C (the logits have C + 1 entries, the last "no part").
        matcher: assigns queries to parts.
        weight_dict: weight of each base term (keys of :data:`LOSS_KEYS`; WPS-SAM: ``loss_ce`` 5,
            ``loss_token`` 20).
        eos_coef: relative weight of the "no part" class in the cross-entropy (DETR's ``eos_coef``);
            1.0, every class alike, is the official WPS-SAM loss.
        groups: query groups of one-to-many training, each matched one-to-one on its own.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        eos_coef: float = 1.0,
        groups: int = 1,
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
        self.groups = groups
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def forward(
        self, outputs: dict, targets: list[dict[str, Tensor]], dn_part_index: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Match, then compute the losses and the matching statistics.

        Args:
            outputs: ``{"pred_logits": [B, Q, C + 1], "pred_tokens": [B, Q, T, D]}`` and, with the
                faster recipes, ``"pred_geometry"`` [B, Q, G], ``"aux_outputs"``, ``"dn_outputs"``,
                ``"enc_outputs"`` (see :class:`~.prompter.Prompter`).
            targets: B dicts with ``"labels"`` [N_i], teacher ``"tokens"`` [N_i, T, D] and, for
                geometry, ``"geometry"`` [N_i, G] (normalised, :func:`~.geometry.normalise`).
            dn_part_index: [B, N_dn] the part each denoising query stands for (-1: padding).

        Returns:
            Scalars: the loss terms (see the module docstring; ``loss_token`` is the mean over every
            element of every matched token in the batch, a zero that still backpropagates when the
            batch has no part); and detached statistics of the last layer's first query group:
            ``class_acc`` (fraction of queries whose argmax is their target, matched label or "no
            part": the official "matcher Acc"), ``match_recall`` (fraction of matched queries whose
            argmax is their part's label; 0 when nothing is matched) and ``num_matched``.
        """
        logits = outputs["pred_logits"]
        if logits.shape[-1] != self.num_classes + 1:
            raise ValueError(f"pred_logits has {logits.shape[-1]} classes, expected {self.num_classes} + 1")
        losses, stats = self._matched(outputs, targets)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses |= {f"{k}_{i}": v for k, v in self._matched(aux, targets)[0].items()}
        if "dn_outputs" in outputs:
            if dn_part_index is None:
                raise ValueError("denoising outputs need dn_part_index")
            dn = outputs["dn_outputs"]
            losses |= {f"{k}_dn": v for k, v in self._denoising(dn, targets, dn_part_index).items()}
            for i, aux in enumerate(dn.get("aux_outputs", [])):
                losses |= {f"{k}_dn_{i}": v for k, v in self._denoising(aux, targets, dn_part_index).items()}
        if "enc_outputs" in outputs:
            losses |= {f"{k}_enc": v for k, v in self._dense(outputs["enc_outputs"], targets).items()}
        return losses | stats

    def _matched(self, outputs: dict, targets: list[dict[str, Tensor]]) -> tuple[dict, dict]:
        """Losses of one layer's matching queries, each group matched on its own; stats of group 0."""
        logits = outputs["pred_logits"]
        device = logits.device
        q = logits.shape[1] // self.groups
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=device)
        batch_idx, query_idx, part_idx = [], [], []
        for g in range(self.groups):
            group = {k: v[:, g * q : (g + 1) * q] for k, v in outputs.items() if k.startswith("pred_")}
            for b, (src, tgt) in enumerate(self.matcher(group, targets)):
                batch_idx.append(torch.full_like(src, b))
                query_idx.append(src + g * q)
                part_idx.append(tgt)
        batch_idx, query_idx, part_idx = (torch.cat(x).to(device) for x in (batch_idx, query_idx, part_idx))
        offsets = _offsets(targets, device)
        labels = torch.cat([t["labels"].to(device) for t in targets]).long()
        matched_labels = labels[offsets[batch_idx] + part_idx]
        target_classes[batch_idx, query_idx] = matched_labels
        losses = {"loss_ce": self._ce(logits, target_classes)}
        losses |= self._pair_losses(outputs, batch_idx, query_idx, targets, offsets[batch_idx] + part_idx)
        with torch.no_grad():
            first = query_idx < q
            predicted = logits[:, :q].argmax(-1)
            num_matched = torch.tensor(float(first.sum()), device=device)
            hits = (predicted[batch_idx[first], query_idx[first]] == matched_labels[first]).float().sum()
            stats = {
                "class_acc": (predicted == target_classes[:, :q]).float().mean(),
                "match_recall": hits / num_matched.clamp(min=1),
                "num_matched": num_matched,
            }
        return losses, stats

    def _denoising(self, outputs: dict, targets: list[dict[str, Tensor]], part_index: Tensor) -> dict:
        """Losses of denoising queries against the very part each was made from."""
        device = outputs["pred_logits"].device
        part_index = part_index.to(device)
        batch_idx, query_idx = torch.nonzero(part_index >= 0, as_tuple=True)
        flat = _offsets(targets, device)[batch_idx] + part_index[batch_idx, query_idx]
        labels = torch.cat([t["labels"].to(device) for t in targets]).long()
        target_classes = torch.full(part_index.shape, self.num_classes, dtype=torch.int64, device=device)
        target_classes[batch_idx, query_idx] = labels[flat]
        logits = outputs["pred_logits"].float()
        valid = part_index >= 0
        ce = F.cross_entropy(logits[valid], target_classes[valid], self.empty_weight.to(device))
        return {"loss_ce": ce} | self._pair_losses(outputs, batch_idx, query_idx, targets, flat)

    def _dense(self, outputs: dict, targets: list[dict[str, Tensor]]) -> dict:
        """Two-stage proposals: every cell classified, the cells that answer for a part regressed."""
        logits, anchors, grid = outputs["pred_logits"], outputs["anchors"], outputs["grid"]
        device = logits.device
        assigned = torch.stack([assign_cells(anchors, t["geometry"].to(device), grid) for t in targets])
        offsets = _offsets(targets, device)
        labels = torch.cat([t["labels"].to(device) for t in targets]).long()
        batch_idx, cell_idx = torch.nonzero(assigned >= 0, as_tuple=True)
        flat = offsets[batch_idx] + assigned[batch_idx, cell_idx]
        target_classes = torch.full(assigned.shape, self.num_classes, dtype=torch.int64, device=device)
        target_classes[batch_idx, cell_idx] = labels[flat]
        out = {"loss_ce": self._ce(logits, target_classes)}
        geometry = {"pred_geometry": outputs["pred_geometry"]}
        return out | self._pair_losses(geometry, batch_idx, cell_idx, targets, flat)

    def _ce(self, logits: Tensor, target_classes: Tensor) -> Tensor:
        # Upcast: the losses are reduced over many queries.
        return F.cross_entropy(
            logits.float().flatten(0, 1), target_classes.flatten(), self.empty_weight.to(logits.device)
        )

    def _pair_losses(
        self, outputs: dict, batch_idx: Tensor, query_idx: Tensor, targets: list[dict], flat_part: Tensor
    ) -> dict[str, Tensor]:
        """Token and geometry losses of the (query, part) pairs; ``flat_part`` indexes the batch's parts."""
        out = {}
        if "pred_tokens" in outputs:
            src = outputs["pred_tokens"][batch_idx, query_idx].float()  # [M, T, D]
            if "pred_point_tokens" in outputs:  # mixed: a point-labelled part trains the point head
                has_box = torch.cat([t["has_box"].to(src.device) for t in targets]).bool()[flat_part]
                point = outputs["pred_point_tokens"][batch_idx, query_idx].float()
                src = torch.where(has_box[:, None, None], src, point)
            if len(query_idx):
                tgt = torch.cat([t["tokens"].to(src.device) for t in targets])[flat_part].float().detach()
                out["loss_token"] = F.smooth_l1_loss(src, tgt, beta=1.0)
            else:
                # Sum over no element: 0, still part of the graph so that backward() works.
                out["loss_token"] = src.sum()
        if "pred_geometry" in outputs:
            src = outputs["pred_geometry"][batch_idx, query_idx].float()  # [M, G]
            tgt = torch.cat([t["geometry"].to(src.device) for t in targets])[flat_part].float()
            count = max(len(src), 1)
            out["loss_geom"] = F.l1_loss(src, tgt, reduction="sum") / count
            if src.shape[-1] == 4:
                src_xyxy, tgt_xyxy = (box_convert(x, "cxcywh", "xyxy") for x in (src, tgt))
                out["loss_giou"] = generalized_box_iou_loss(src_xyxy, tgt_xyxy, reduction="sum") / count
        return out

    def weighted_total(self, losses: dict[str, Tensor]) -> Tensor:
        """The training objective: ``sum(weight_dict[base_term(k)] * losses[k])`` over the loss terms."""
        missing = {k for k in self.weight_dict if k not in losses and k in ("loss_ce", "loss_token")}
        if missing:
            raise KeyError(f"losses lack {sorted(missing)}; got {sorted(losses)}")
        terms = [k for k in losses if k.startswith("loss_") and base_term(k) in self.weight_dict]
        return sum(self.weight_dict[base_term(k)] * losses[k] for k in terms)


def _offsets(targets: list[dict[str, Tensor]], device: torch.device) -> Tensor:
    """[B] index of each image's first part among the batch's concatenated parts."""
    sizes = torch.tensor([len(t["labels"]) for t in targets], device=device)
    return torch.cumsum(sizes, 0) - sizes


def build_criterion(loss_cfg: LossConfig, num_classes: int, groups: int = 1) -> SetCriterion:
    """The criterion with the matching costs and loss weights of ``loss_cfg``."""
    matcher = HungarianMatcher(
        cost_class=loss_cfg.cost_class,
        cost_token=loss_cfg.cost_token,
        cost_geom=loss_cfg.cost_geom,
        cost_giou=loss_cfg.cost_giou,
    )
    weights = {
        "loss_ce": loss_cfg.weight_ce,
        "loss_token": loss_cfg.weight_token,
        "loss_geom": loss_cfg.weight_geom,
        "loss_giou": loss_cfg.weight_giou,
    }
    return SetCriterion(num_classes, matcher, weights, eos_coef=loss_cfg.eos_coef, groups=groups)
