"""The dense prompter's objective (CenterNet, Zhou et al. 2019): heat maps and geometry at part centres.

Per image and part class, the target heat map is a Gaussian bump at the cell of each part's centre
(its box centre, or its point), of a spread that grows with the part's size in cells, times a factor
(``loss.box_spread``), or a fixed one for points, the maximum where bumps overlap. Terms:

* ``loss_heatmap``: CenterNet's penalty-reduced focal loss (alpha 2, beta 4), summed over cells and
  divided by the number of parts;
* ``loss_geom``: L1 between the geometry predicted at each part's centre cell and the part's,
  summed over coordinates, averaged over parts;
* ``loss_giou``: 1 - GIoU of those boxes (boxes only).

With a geometry radius r > 0 (``prompter.dense_geometry_radius``; TTFNet, Liu et al. 2020) the cells
within r of a centre learn its geometry too, weighted by the part's bump (:func:`geometry_samples`):
more regression samples per part, and a peak one cell off the centre still reads a trained box.

With the box refiner (outputs with ``refine_logits``, :mod:`.box_refiner`), each candidate is
labelled by the part it overlaps most (:func:`~.box_refiner.label_candidates`):

* ``loss_refine_ce``: cross-entropy of the refiner's class over C parts + "no part", averaged over
  the candidates;
* ``loss_refine_geom``: L1 between each positive candidate's corrected box and its part's, summed
  over coordinates, averaged over the positives.

No matching: each part supervises its own cells, so the prompter learns where parts are from the
first steps.

Mixed supervision (targets with ``has_box``, outputs with the point head's ``point_geometry``): a
part's geometry is ``(x, y, 0, 0)`` when it is labelled by a point; its bump sits at the point with
a point's spread, and it supervises the point head (L1) where a boxed part supervises the box head
(L1 and GIoU).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou_loss

from .box_refiner import label_candidates

if TYPE_CHECKING:
    from ..config import LossConfig

DENSE_LOSS_KEYS = ("loss_heatmap", "loss_geom", "loss_giou", "loss_refine_ce", "loss_refine_geom")
POINT_SIGMA = 1.0  # spread of a point's bump, in cells


def centre_cells(geometry: Tensor, grid: tuple[int, int]) -> Tensor:
    """[N, 2] (x, y) integer cell of each part's centre (normalised geometry [N, G])."""
    h, w = grid
    x = (geometry[:, 0] * w).long().clamp(0, w - 1)
    y = (geometry[:, 1] * h).long().clamp(0, h - 1)
    return torch.stack([x, y], dim=1)


def bump_spreads(
    geometry: Tensor, grid: tuple[int, int], has_box: Tensor | None = None, box_spread: float = 1.0
) -> Tensor:
    """[N] spread in cells of each part's heat-map bump: CenterNet's sixth of a box's diameter (at
    least half a cell) times ``box_spread``, a fixed one for points (``has_box`` False under mixed
    supervision)."""
    h, w = grid
    sigma = torch.full((len(geometry),), POINT_SIGMA, device=geometry.device)
    if geometry.shape[1] == 4:
        sized = (geometry[:, 2] * w + geometry[:, 3] * h).div(2).div(6).clamp(min=0.5) * box_spread
        sigma = sized if has_box is None else torch.where(has_box.bool(), sized, sigma)
    return sigma


def geometry_samples(
    geometry: Tensor,
    image_idx: Tensor,
    grid: tuple[int, int],
    radius: int,
    has_box: Tensor | None = None,
    box_spread: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """The cells that learn each part's geometry (TTFNet's Gaussian-weighted samples).

    Every cell within ``radius`` cells (in x and y) of a part's centre cell, weighted by the part's
    heat-map bump there (1 at the centre; ``box_spread`` scales a box's, :func:`bump_spreads`); a cell
    claimed by several parts of its image learns the one whose bump is highest there. ``radius`` 0:
    the centre cells, weight 1 (CenterNet).

    Args:
        geometry: [N, G] normalised geometry of the parts of a batch; ``image_idx`` [N] their image.

    Returns:
        part [M] (index into the N parts), cells [M, 2] (x, y) and weight [M] of every sample.
    """
    h, w = grid
    centres = centre_cells(geometry, grid)
    span = torch.arange(-radius, radius + 1, device=geometry.device)
    offsets = torch.stack(torch.meshgrid(span, span, indexing="xy"), dim=-1).reshape(-1, 2)  # [O, 2]
    cells = centres[:, None] + offsets[None]  # [N, O, 2]
    sigma = bump_spreads(geometry, grid, has_box, box_spread)
    weight = torch.exp(-(offsets.float() ** 2).sum(-1)[None] / (2 * sigma[:, None] ** 2))  # [N, O]
    inside = (cells[..., 0] >= 0) & (cells[..., 0] < w) & (cells[..., 1] >= 0) & (cells[..., 1] < h)
    part = torch.arange(len(geometry), device=geometry.device)[:, None].expand_as(weight)[inside]
    cells, weight = cells[inside], weight[inside]
    key = (image_idx[part] * h + cells[:, 1]) * w + cells[:, 0]
    best = torch.zeros(int(key.max()) + 1 if len(key) else 0, device=weight.device)
    best = best.scatter_reduce(0, key, weight, "amax")
    owned = weight >= best[key]
    return part[owned], cells[owned], weight[owned]


def target_heatmap(
    labels: Tensor,
    geometry: Tensor,
    num_classes: int,
    grid: tuple[int, int],
    has_box: Tensor | None = None,
    box_spread: float = 1.0,
) -> Tensor:
    """[C, h, w] Gaussian bumps in [0, 1], exactly 1 at each part's centre cell. ``has_box`` [N]
    (mixed supervision): False where a part is labelled by a point (a point's spread); ``box_spread``
    scales a box's spread (:func:`bump_spreads`)."""
    h, w = grid
    out = torch.zeros(num_classes, h, w, device=geometry.device)
    if len(labels) == 0:
        return out
    cells = centre_cells(geometry, grid).float()
    sigma = bump_spreads(geometry, grid, has_box, box_spread)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=geometry.device), torch.arange(w, device=geometry.device), indexing="ij"
    )
    d2 = (xs[None] - cells[:, 0, None, None]) ** 2 + (ys[None] - cells[:, 1, None, None]) ** 2
    bumps = torch.exp(-d2 / (2 * sigma[:, None, None] ** 2))  # [N, h, w]
    for k in range(len(labels)):
        out[labels[k]] = torch.maximum(out[labels[k]], bumps[k])
    return out


def heatmap_focal_loss(logits: Tensor, target: Tensor, alpha: float = 2.0, beta: float = 4.0) -> Tensor:
    """CenterNet's focal loss summed over every cell ([B, C, h, w] logits and targets in [0, 1])."""
    logits = logits.float()
    pos = target.eq(1).float()
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = log_p.exp()
    pos_loss = -((1 - p) ** alpha) * log_p * pos
    neg_loss = -((1 - target) ** beta) * (p**alpha) * log_not_p * (1 - pos)
    return (pos_loss + neg_loss).sum()


class DenseCriterion(nn.Module):
    """Losses of the dense prompter's heat maps and geometry against the ground-truth parts.

    Args:
        num_classes: C part classes.
        weight_dict: weights of :data:`DENSE_LOSS_KEYS`.
        geometry_radius: the cells around each centre that learn its geometry (:func:`geometry_samples`).
        box_spread: the heat-map bumps' spread for boxes, times CenterNet's (:func:`bump_spreads`).
    """

    def __init__(
        self,
        num_classes: int,
        weight_dict: dict[str, float],
        geometry_radius: int = 0,
        box_spread: float = 1.0,
    ) -> None:
        super().__init__()
        self.geometry_radius, self.box_spread = geometry_radius, box_spread
        unknown = set(weight_dict) - set(DENSE_LOSS_KEYS)
        if unknown:
            raise ValueError(f"unknown loss name(s) {sorted(unknown)}; known: {list(DENSE_LOSS_KEYS)}")
        self.num_classes = num_classes
        self.weight_dict = dict(weight_dict)

    def forward(
        self,
        outputs: dict[str, Tensor],
        targets: list[dict[str, Tensor]],
        dn_part_index: Tensor | None = None,
    ) -> dict:
        """``outputs``: the dense prompter's training outputs; ``targets``: ``labels`` [N_i] and
        ``geometry`` [N_i, G] per image. Returns the loss terms and ``num_parts``; ``match_recall``
        (the share of parts whose centre cell's best class is theirs) and ``class_acc`` (the share of
        centre cells whose heat-map score is above 0.5) as statistics. ``dn_part_index`` (the parts
        of the refiner's jittered boxes) is not needed: every candidate is labelled by overlap."""
        heatmap = outputs["heatmap"]
        b, c, h, w = heatmap.shape
        device = heatmap.device
        mixed = "point_geometry" in outputs
        target = torch.stack(
            [
                target_heatmap(
                    t["labels"].to(device), t["geometry"].to(device).float(), c, (h, w),
                    t["has_box"].to(device) if mixed else None, self.box_spread,
                )
                for t in targets
            ]
        )  # fmt: skip
        num_parts = sum(len(t["labels"]) for t in targets)
        norm = max(num_parts, 1)
        losses = {"loss_heatmap": heatmap_focal_loss(heatmap, target) / norm}
        batch_idx = torch.cat(
            [torch.full((len(t["labels"]),), i, device=device) for i, t in enumerate(targets)]
        ).long()
        gt = torch.cat([t["geometry"].to(device).float() for t in targets])
        labels = torch.cat([t["labels"].to(device) for t in targets]).long()
        boxed = torch.ones(len(gt), dtype=torch.bool, device=device)
        if mixed:
            boxed = torch.cat([t["has_box"].to(device) for t in targets]).bool()
        losses |= self._geometry_losses(outputs, gt, batch_idx, boxed, (h, w), mixed)
        if "refine_logits" in outputs:
            losses |= self._refine_losses(outputs, gt, batch_idx, labels, c)
        cells = centre_cells(gt, (h, w))
        with torch.no_grad():
            at_centres = heatmap[batch_idx, :, cells[:, 1], cells[:, 0]]  # [N, C]
            hits = (at_centres.argmax(-1) == labels).float().sum()
            found = (at_centres.gather(1, labels[:, None]).sigmoid() > 0.5).float().sum()
            stats = {
                "match_recall": hits / norm,
                "class_acc": found / norm,
                "num_matched": torch.tensor(float(num_parts), device=device),
            }
        return losses | stats

    def _geometry_losses(
        self,
        outputs: dict[str, Tensor],
        gt: Tensor,
        batch_idx: Tensor,
        boxed: Tensor,
        grid: tuple[int, int],
        mixed: bool,
    ) -> dict[str, Tensor]:
        """L1 (and GIoU for boxes) of the geometry at each part's samples (:func:`geometry_samples`),
        each part's weights scaled to sum to 1, averaged over parts (every part counts once, as when
        only the centre cells learn). A point-labelled part (mixed supervision) trains the point head."""
        part, cells, weight = geometry_samples(
            gt, batch_idx, grid, self.geometry_radius, boxed, self.box_spread
        )
        weight = weight / torch.zeros(len(gt), device=weight.device).index_add(0, part, weight)[part]
        norm = max(len(gt), 1)
        on_box = boxed[part]
        pred = outputs["geometry"][batch_idx[part], cells[:, 1], cells[:, 0]]  # [M, G]
        target = gt[part]
        l1 = F.l1_loss(pred, target, reduction="none").sum(-1)
        losses = {"loss_geom": (weight * l1 * on_box).sum() / norm}
        if mixed:  # each point-labelled part's point against the point head at its cells
            point = outputs["point_geometry"][batch_idx[part], cells[:, 1], cells[:, 0]]
            l1_point = F.l1_loss(point, target[:, :2], reduction="none").sum(-1)
            losses["loss_geom"] = losses["loss_geom"] + (weight * l1_point * ~on_box).sum() / norm
        if gt.shape[-1] == 4:
            pred_xyxy, gt_xyxy = (box_convert(x[on_box], "cxcywh", "xyxy") for x in (pred, target))
            giou = generalized_box_iou_loss(pred_xyxy, gt_xyxy, reduction="none")
            losses["loss_giou"] = (weight[on_box] * giou).sum() / norm
        return losses

    @staticmethod
    def _refine_losses(
        outputs: dict[str, Tensor], gt: Tensor, batch_idx: Tensor, labels: Tensor, num_classes: int
    ) -> dict[str, Tensor]:
        """The box refiner's class and box terms on its candidates (see the module docstring)."""
        target, part = label_candidates(
            outputs["refine_candidates"], outputs["refine_image"], gt, batch_idx, labels, num_classes
        )
        positive = target < num_classes
        l1 = F.l1_loss(outputs["refine_geometry"][positive], gt[part[positive]], reduction="none").sum(-1)
        return {
            "loss_refine_ce": F.cross_entropy(outputs["refine_logits"].float(), target),
            "loss_refine_geom": l1.sum() / max(int(positive.sum()), 1),
        }

    def weighted_total(self, losses: dict[str, Tensor]) -> Tensor:
        return sum(self.weight_dict[k] * losses[k] for k in self.weight_dict if k in losses)


def build_dense_criterion(loss_cfg: LossConfig, num_classes: int, geometry_radius: int = 0) -> DenseCriterion:
    weights = {
        "loss_heatmap": loss_cfg.weight_heatmap,
        "loss_geom": loss_cfg.weight_geom,
        "loss_giou": loss_cfg.weight_giou,
        "loss_refine_ce": loss_cfg.weight_refine,
        "loss_refine_geom": loss_cfg.weight_geom,
    }
    return DenseCriterion(num_classes, weights, geometry_radius, loss_cfg.box_spread)
