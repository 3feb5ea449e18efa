"""Two-stage query selection: every cell of the encoder memory proposes a part, the best become queries.

After Deformable DETR's two-stage variant (Zhu et al. 2021) and DINO's query selection (Zhang et al.
2023): a class head and a geometry head read every memory cell; a cell's geometry is predicted
relative to an anchor at the cell (its centre; boxes start two cells wide). The top-Q cells by
part probability give the decoder's anchors (detached, as in DINO). The proposals are trained
densely (:func:`assign_cells`): a cell answers for the part whose centre lies within ``radius`` cells
of its own centre (inside the part's box for boxes; FCOS's centre sampling, Tian et al. 2019), the
smallest such part when several do; the others answer "no part".
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .geometry import GEOMETRY_DIMS, inverse_sigmoid


def cell_anchors(grid: tuple[int, int], kind: str) -> Tensor:
    """[h*w, G] anchors in raster order: cell centres (x, y) and, for boxes, a two-cell side."""
    h, w = grid
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    centres = torch.stack([xs.flatten(), ys.flatten()], dim=1)
    if kind == "point":
        return centres
    sides = torch.tensor([2.0 / w, 2.0 / h]).expand(len(centres), 2)
    return torch.cat([centres, sides], dim=1)


class EncoderProposals(nn.Module):
    """Per-cell class logits [B, HW, C+1] and geometry [B, HW, G] from the memory [B, HW, D]."""

    def __init__(self, hidden_dim: int, num_classes: int, kind: str, grid: tuple[int, int]) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_dim)
        self.class_head = nn.Linear(hidden_dim, num_classes + 1)
        self.geometry_head = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, GEOMETRY_DIMS[kind])
        )
        nn.init.zeros_(self.geometry_head[-1].weight)
        nn.init.zeros_(self.geometry_head[-1].bias)
        self.register_buffer("anchors", cell_anchors(grid, kind), persistent=False)

    def forward(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        x = self.norm(memory)
        geometry = (inverse_sigmoid(self.anchors) + self.geometry_head(x)).sigmoid()
        return self.class_head(x), geometry

    @staticmethod
    def select(logits: Tensor, k: int) -> Tensor:
        """Indices [B, k] of the k cells most likely to hold a part (1 - p(no part))."""
        score = 1 - logits.float().softmax(-1)[..., -1]
        return score.topk(min(k, score.shape[1]), dim=1).indices


@torch.no_grad()
def assign_cells(anchors: Tensor, geometry: Tensor, grid: tuple[int, int], radius: float = 1.5) -> Tensor:
    """Which part each cell answers for in dense training: [HW] part index, -1 for none.

    Args:
        anchors: [HW, G] cell anchors (:func:`cell_anchors`); the first two entries are the centre.
        geometry: [N, G] the image's parts, normalised (boxes cxcywh, or points).
        grid: (h, w) of the memory.
        radius: in cells: a cell may answer for a part whose centre is this close to its own.
    """
    n = len(geometry)
    out = torch.full((len(anchors),), -1, dtype=torch.long, device=anchors.device)
    if n == 0:
        return out
    h, w = grid
    centres = anchors[:, :2]
    d = (centres[:, None, :] - geometry[None, :, :2]).abs() * torch.tensor([w, h], device=anchors.device)
    near = (d <= radius).all(-1)  # [HW, N]
    if geometry.shape[1] == 4:
        half = geometry[None, :, 2:] / 2
        near &= ((centres[:, None, :] - geometry[None, :, :2]).abs() <= half).all(-1)
        size = geometry[:, 2] * geometry[:, 3]
    else:
        size = torch.zeros(n, device=anchors.device)
    # The cell under each part's centre always answers for it (a part smaller than a cell, or thin).
    own = (geometry[:, 1] * h).long().clamp(0, h - 1) * w + (geometry[:, 0] * w).long().clamp(0, w - 1)
    near[own, torch.arange(n, device=anchors.device)] = True
    cost = torch.where(near, size[None, :], torch.full_like(near, float("inf"), dtype=size.dtype))
    best = cost.argmin(1)
    hit = near.any(1)
    out[hit] = best[hit]
    return out
