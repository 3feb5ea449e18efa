"""The queries of the DETR prompter beyond the paper's learned ones: switches and denoising inputs.

:class:`QueryRecipe` holds the switches of the faster recipes (each from a DETR follow-up, each off
in the paper's recipe); :class:`DenoisingQueries` is what the training step hands the prompter for
query denoising (DN-DETR, Li et al. 2022; DINO, Zhang et al. 2023): ground-truth parts with noised
geometry and labels, the noised geometry already turned into SAM prompt tokens by SAM's frozen
prompt encoder. :func:`group_attention_mask` keeps every group of queries to itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .geometry import GEOMETRY_DIMS


@dataclass(frozen=True)
class QueryRecipe:
    """Which convergence remedies the prompter uses (all off: the paper's prompter).

    Args:
        aux_loss: every decoder layer's output is returned for its own, separately matched loss (DETR).
        geometry: ``"box"`` or ``"point"``: every query also predicts its part's geometry, refined from
            layer to layer (Deformable DETR), and its tokens are SAM's prompt tokens of that geometry
            plus a learned residual; the queries' positions are the sine embedding of their current
            geometry (DAB-DETR). ``None``: the paper's token head.
        two_stage: the encoder memory proposes a class and geometry per cell; the top-Q proposals
            are the queries' anchors (Deformable DETR's two-stage, DINO's query selection).
        groups: query groups in training, each matched one-to-one on its own (Group DETR, Chen et al.
            2023): a one-to-many assignment; inference keeps the first group.
        denoising: the prompter accepts :class:`DenoisingQueries` in training.
        standardize_input: standardise every channel of SAM's embedding with fixed statistics of the
            training set (:meth:`~.prompter.Prompter.set_input_stats`).
        parts: ``"box"`` or ``"point"``, the supervision: the geometry of two-stage proposals and of
            denoising anchors (and of the geometry head, which must agree).
    """

    aux_loss: bool = False
    geometry: str | None = None
    two_stage: bool = False
    groups: int = 1
    denoising: bool = False
    standardize_input: bool = False
    parts: str = "box"

    def __post_init__(self) -> None:
        if self.parts not in GEOMETRY_DIMS:
            raise ValueError(f"parts must be 'box' or 'point', got {self.parts!r}")
        if self.geometry not in (None, self.parts):
            raise ValueError(
                f"geometry must be None or the parts' geometry {self.parts!r}, got {self.geometry!r}"
            )
        if self.groups < 1:
            raise ValueError(f"groups must be >= 1, got {self.groups}")

    @property
    def uses_anchors(self) -> bool:
        """Queries are positioned by geometry (their own, or proposals') rather than learned embeddings."""
        return self.geometry is not None or self.two_stage


@dataclass
class DenoisingQueries:
    """Noised ground truth for ``groups`` denoising groups of ``per_group`` queries each, per image.

    Query ``g * per_group + j`` of an image reconstructs its part ``j`` (``part_index``), or is padding
    when the image has fewer than ``per_group`` parts (``valid`` False).

    Args:
        labels: [B, N] noised part classes (padding: 0).
        geometry: [B, N, G] noised normalised geometry.
        tokens: [B, N, T, D] SAM's prompt tokens of the noised geometry.
        part_index: [B, N] which ground-truth part each query stands for (padding: -1).
        groups, per_group: N = groups * per_group.
    """

    labels: Tensor
    geometry: Tensor
    tokens: Tensor
    part_index: Tensor
    groups: int
    per_group: int

    @property
    def valid(self) -> Tensor:
        return self.part_index >= 0


def group_attention_mask(sizes: list[int], device: torch.device | None = None) -> Tensor:
    """Bool [N, N] block-diagonal mask, True where query i may attend to query j: within its group.

    ``sizes``: the sizes of consecutive groups (matching groups, then denoising groups).
    """
    group = torch.repeat_interleave(
        torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device)
    )
    return group[:, None] == group[None, :]
