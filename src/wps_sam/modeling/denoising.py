"""Query denoising (DN-DETR, Li et al. 2022; DINO, Zhang et al. 2023): noised ground truth as queries.

In training, each image's ground-truth parts are copied into ``groups`` groups, their geometry
jittered (a box's centre moves by up to ``box_noise`` x half its size and its sides scale by up to
1 +- ``box_noise``; a point moves by a normal step of ``point_noise`` of the frame) and a share of
their labels replaced by random classes; SAM's frozen prompt encoder turns the noised geometry into
prompt tokens, and the prompter learns to reconstruct each part's class, tokens and geometry from
its noised copy. There is nothing to match, so these queries learn to localise from the first step;
the attention mask keeps them and the matching queries apart. The noise is drawn from torch's global
random state (saved in a run's resume state).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..sam.teacher import TeacherTokens
from .geometry import GEOMETRY_DIMS, to_pixels
from .queries import DenoisingQueries


@dataclass(frozen=True)
class Denoiser:
    """Makes :class:`~.queries.DenoisingQueries` from a batch's targets.

    Args:
        kind: ``"box"`` or ``"point"``, the supervision.
        num_classes: C, for random labels.
        groups: denoising groups.
        box_noise, point_noise, label_noise: see the module docstring.
    """

    kind: str
    num_classes: int
    groups: int
    box_noise: float = 0.4
    point_noise: float = 0.05
    label_noise: float = 0.2

    def noised(self, geometry: Tensor) -> Tensor:
        """Jittered copies of normalised geometry [..., G], clamped to the frame."""
        if self.kind == "box":
            centre, size = geometry[..., :2], geometry[..., 2:]
            centre = centre + (torch.rand_like(centre) * 2 - 1) * size / 2 * self.box_noise
            size = size * (1 + (torch.rand_like(size) * 2 - 1) * self.box_noise)
            return torch.cat([centre.clamp(0, 1), size.clamp(1e-3, 1)], dim=-1)
        return (geometry + torch.randn_like(geometry) * self.point_noise).clamp(0, 1)

    @torch.no_grad()
    def __call__(
        self, targets: list[dict[str, Tensor]], teacher: TeacherTokens, image_size: int
    ) -> DenoisingQueries:
        """Denoising queries for ``targets`` (each with ``labels`` [N_i] and ``geometry`` [N_i, G])."""
        device = targets[0]["labels"].device
        per_group = max(1, max(len(t["labels"]) for t in targets))
        b, n, dims = len(targets), self.groups * per_group, GEOMETRY_DIMS[self.kind]
        labels = torch.zeros(b, n, dtype=torch.long, device=device)
        geometry = torch.full((b, n, dims), 0.5, device=device)
        part_index = torch.full((b, n), -1, dtype=torch.long, device=device)
        for i, t in enumerate(targets):
            k = len(t["labels"])
            for g in range(self.groups):
                sl = slice(g * per_group, g * per_group + k)
                labels[i, sl] = t["labels"].long()
                geometry[i, sl] = t["geometry"].float()
                part_index[i, sl] = torch.arange(k, device=device)
        flip = torch.rand(b, n, device=device) < self.label_noise
        labels = torch.where(flip, torch.randint_like(labels, self.num_classes), labels)
        geometry = self.noised(geometry)
        pixels = to_pixels(geometry, self.kind, image_size)
        tokens = teacher(
            **{"boxes" if self.kind == "box" else "points": pixels.reshape(-1, pixels.shape[-1])}
        )
        return DenoisingQueries(
            labels=labels,
            geometry=geometry,
            tokens=tokens.reshape(b, n, *tokens.shape[1:]),
            part_index=part_index,
            groups=self.groups,
            per_group=per_group,
        )
