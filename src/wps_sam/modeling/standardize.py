"""Input standardisation of SAM's image embedding with fixed statistics of the training set.

A frozen SAM's embedding can be dominated by what is the same in every image (the old tiny SAM's
varied by a few percent of its magnitude across images); a prompter learns faster from the part that
varies. The statistics are measured once on the training embeddings before the first step
(``engine/trainer.py``) and saved with the prompter, so inference standardises alike.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class InputStandardizer(nn.Module):
    """``(x - mean) / std`` per channel of a [B, C, H, W] embedding; the identity until :meth:`set_stats`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    @torch.no_grad()
    def set_stats(self, mean: Tensor, std: Tensor) -> None:
        """Per-channel mean and std [C] of the training embeddings."""
        self.mean.copy_(mean.reshape(1, -1, 1, 1))
        self.std.copy_(std.reshape(1, -1, 1, 1).clamp_min(1e-6))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
