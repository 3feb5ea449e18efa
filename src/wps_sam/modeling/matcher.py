"""Hungarian matching of the prompter's queries to the ground-truth parts, after DETR's matcher."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou


class HungarianMatcher(nn.Module):
    """A one-to-one assignment between the Q queries and the N ground-truth parts of each image.

    The cost of giving part j to query i is::

        cost_class * (-p_i[label_j]) + cost_token * || tokens_i - teacher_tokens_j ||_2
            [+ cost_geom * || geometry_i - geometry_j ||_1 - cost_giou * GIoU(box_i, box_j)]

    where ``p_i`` is the softmax of query i's logits and the token distance is the Euclidean distance
    between the flattened [T * D] student tokens and the teacher tokens that SAM's frozen prompt
    encoder made from part j's box or point. Each part goes to at most one query; if N > Q only Q
    parts are matched. Unmatched queries are trained towards "no part" by the criterion.

    The bracketed geometry terms (DETR's L1 and GIoU costs) count when the queries predict geometry
    (``pred_geometry``, normalised; GIoU for boxes only). Under mixed supervision every query has a
    box head (``pred_tokens``) and a point head (``pred_point_tokens``), and each part is compared
    with the head of its kind (its target's ``has_box``).

    Args:
        cost_class: weight of the classification cost (WPS-SAM: 10).
        cost_token: weight of the token distance (WPS-SAM: 1).
        cost_geom: weight of the L1 distance of normalised geometry (DETR: 5).
        cost_giou: weight of the negative generalized IoU of boxes (DETR: 2).
    """

    def __init__(
        self,
        cost_class: float = 10.0,
        cost_token: float = 1.0,
        cost_geom: float = 0.0,
        cost_giou: float = 0.0,
    ) -> None:
        super().__init__()
        costs = (cost_class, cost_token, cost_geom, cost_giou)
        if min(costs) < 0 or cost_class == cost_token == 0:
            raise ValueError(f"costs must be >= 0 and class and token not both 0, got {costs}")
        self.cost_class = cost_class
        self.cost_token = cost_token
        self.cost_geom = cost_geom
        self.cost_giou = cost_giou

    @torch.no_grad()
    def forward(
        self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]
    ) -> list[tuple[Tensor, Tensor]]:
        """Match queries to parts, image by image.

        Args:
            outputs: ``{"pred_logits": [B, Q, C + 1], "pred_tokens": [B, Q, T, D]}``.
            targets: B dicts with ``"labels"``: LongTensor [N_i] in 0..C-1 and ``"tokens"``: teacher
                tokens [N_i, T, D].

        Returns:
            B pairs ``(query_indices, part_indices)``, CPU int64 tensors of length min(Q, N_i);
            query indices ascending.
        """
        logits = outputs["pred_logits"]
        batch, num_queries, num_logits = logits.shape
        if len(targets) != batch:
            raise ValueError(f"got {len(targets)} targets for a batch of {batch}")
        sizes = [len(t["labels"]) for t in targets]
        if sum(sizes) == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty) for _ in targets]

        # float32 whatever the caller's autocast: softmax and distances decide the assignment.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            prob = logits.flatten(0, 1).float().softmax(-1)  # [B*Q, C+1]
            out_tokens = outputs["pred_tokens"].flatten(0, 1).flatten(1).float()  # [B*Q, T*D]
            tgt_ids = torch.cat([t["labels"] for t in targets]).to(logits.device)
            tgt_tokens = torch.cat([t["tokens"].flatten(1) for t, n in zip(targets, sizes) if n])
            tgt_tokens = tgt_tokens.to(device=logits.device, dtype=torch.float32)  # [sum N, T*D]
            if tgt_tokens.shape[1] != out_tokens.shape[1]:
                raise ValueError(
                    f"teacher tokens have {tgt_tokens.shape[1]} values per part but predicted tokens "
                    f"{out_tokens.shape[1]} per query (pred_tokens {tuple(outputs['pred_tokens'].shape)})"
                )
            if bool(((tgt_ids < 0) | (tgt_ids >= num_logits - 1)).any()):
                raise ValueError(
                    f"target labels must lie in 0..{num_logits - 2} (index {num_logits - 1} is 'no part'), "
                    f"got {sorted(set(tgt_ids.tolist()))}"
                )

            # As DETR, the class cost approximates the NLL by 1 - p[label], dropping the constant 1
            # (it does not change the assignment). Unlike -log p it is bounded, so a confidently wrong
            # query costs at most cost_class more and cannot swamp the token distance.
            class_cost = -prob[:, tgt_ids]  # [B*Q, sum N]
            token_cost = torch.cdist(out_tokens, tgt_tokens)  # [B*Q, sum N]
            if "pred_point_tokens" in outputs:  # mixed: a point-labelled part against the point head
                point_tokens = outputs["pred_point_tokens"].flatten(0, 1).flatten(1).float()
                has_box = torch.cat([t["has_box"] for t in targets]).to(logits.device).bool()
                token_cost = torch.where(has_box, token_cost, torch.cdist(point_tokens, tgt_tokens))
            cost = self.cost_class * class_cost + self.cost_token * token_cost
            if "pred_geometry" in outputs and (self.cost_geom or self.cost_giou):
                cost = cost + self._geometry_cost(outputs["pred_geometry"], targets, sizes)

        cost = cost.view(batch, num_queries, -1).cpu()
        if not torch.isfinite(cost).all():
            raise ValueError("matching cost is not finite: NaN or inf in pred_logits, pred_tokens or tokens")
        indices = []
        for i, block in enumerate(cost.split(sizes, -1)):
            rows, cols = linear_sum_assignment(block[i].numpy())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices

    def _geometry_cost(self, pred: Tensor, targets: list[dict[str, Tensor]], sizes: list[int]) -> Tensor:
        """[B*Q, sum N]: ``cost_geom`` x L1 distance, minus ``cost_giou`` x GIoU for boxes."""
        out = pred.flatten(0, 1).float()  # [B*Q, G]
        tgt = torch.cat([t["geometry"] for t, n in zip(targets, sizes) if n]).to(out.device).float()
        cost = self.cost_geom * torch.cdist(out, tgt, p=1)
        if out.shape[-1] == 4 and self.cost_giou:
            giou = generalized_box_iou(box_convert(out, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy"))
            cost = cost - self.cost_giou * giou
        return cost
