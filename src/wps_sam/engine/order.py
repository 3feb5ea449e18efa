"""The order in which a run sees its data: a function of (seed, epoch) alone, so that a resumed run
sees exactly the batches an uninterrupted one would."""

from __future__ import annotations

import torch


def epoch_order(num_items: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of epoch ``epoch``: a function of (seed, epoch) only."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=generator).tolist()


def epoch_batches(num_items: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of epoch ``epoch`` (the last may be short)."""
    order = epoch_order(num_items, seed, epoch)
    return [order[i : i + batch_size] for i in range(0, num_items, batch_size)]
