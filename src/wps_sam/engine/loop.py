"""One training step of WPS-SAM, as a plain function with explicit arguments (DETR's ``engine.py``)."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from torch import Tensor

from ..errors import TrainingError
from ..modeling.box_refiner import BoxJitter
from ..modeling.criterion import SetCriterion
from ..modeling.denoising import Denoiser
from ..modeling.dense_criterion import DenseCriterion
from ..modeling.wps_sam import WPSSAM
from .device import encoder_dtype

TARGET_TENSORS = ("labels", "boxes", "points", "has_box", "masks")


def autocast(device: torch.device, enabled: bool, cpu: bool = False) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when enabled, on the CPU only when ``cpu`` is set too; a no-op
    elsewhere."""
    if enabled and (device.type == "cuda" or (cpu and device.type == "cpu")):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def encoder_autocast(device: torch.device, amp: bool, cpu_amp: bool) -> contextlib.AbstractContextManager:
    """The autocast under which the frozen encoder runs (:func:`~.device.encoder_dtype`)."""
    dtype = encoder_dtype(device, amp, cpu_amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Images/embeddings and every target tensor to ``device`` (non-blocking where pinned)."""
    out = dict(batch)
    for key in ("images", "embeddings"):
        if key in out:
            out[key] = out[key].to(device, non_blocking=True)
    out["targets"] = [
        {k: (v.to(device, non_blocking=True) if k in TARGET_TENSORS else v) for k, v in t.items()}
        for t in batch["targets"]
    ]
    return out


def image_embeddings(
    model: WPSSAM, batch: dict[str, Any], device: torch.device, amp: bool, cpu_amp: bool = False
) -> Tensor:
    """The batch's SAM embeddings [B,256,h,w]: precomputed ones if the batch carries them, else encoded
    (under :func:`encoder_autocast`)."""
    if "embeddings" in batch:
        return batch["embeddings"].float()
    with encoder_autocast(device, amp, cpu_amp):
        return model.embed(batch["images"]).float()


def train_step(
    model: WPSSAM,
    criterion: SetCriterion | DenseCriterion,
    batch: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    amp: bool = True,
    grad_clip: float | None = None,
    prompter: torch.nn.Module | None = None,
    denoiser: Denoiser | BoxJitter | None = None,
    cpu_amp: bool = False,
) -> dict[str, float]:
    """Encode (frozen), teacher tokens (frozen), prompter forward, match, loss, one optimiser step.

    Returns the weighted total ``loss``, each loss term and the criterion's statistics as floats.
    Raises :class:`TrainingError` if the loss is not finite; the parameters are then left untouched.
    ``prompter``: the module to run the prompter through (its DDP wrapper under torchrun);
    ``denoiser``: makes the step's noised ground truth (query denoising, or the box refiner's
    jittered boxes); ``cpu_amp``: the prompter's forward under bf16 autocast on the CPU too (with
    ``amp``).
    """
    batch = move_batch(batch, device)
    embeddings = image_embeddings(model, batch, device, amp, cpu_amp)
    targets = batch["targets"]
    model.attach_targets(targets)
    kwargs = {}
    if denoiser is not None:
        kwargs["denoising"] = denoiser(targets, model.teacher, model.image_size)
    with autocast(device, amp, cpu=cpu_amp):
        outputs = model.complete_tokens((prompter or model.prompter)(embeddings, **kwargs))
    if not all(torch.isfinite(v).all() for v in outputs.values() if isinstance(v, Tensor)):
        # Diverged weights: the matcher would refuse the costs with a ValueError; say what happened.
        raise TrainingError(
            "the loss is not finite (the prompter's outputs hold NaN or inf): stopping; the last saved "
            "state is kept. Lower --lr or set train.grad_clip, then --resume."
        )
    part_index = kwargs["denoising"].part_index if kwargs else None
    losses = criterion(outputs, targets, part_index)
    loss = criterion.weighted_total(losses)
    if not math.isfinite(loss.item()):
        raise TrainingError(
            f"the loss is not finite ({loss.item()}): stopping; the last saved state is kept. "
            f"Lower --lr or set train.grad_clip, then --resume."
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.prompter.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    stats = {k: float(v.detach()) for k, v in losses.items()}
    stats["loss"] = loss.item()
    return stats
