"""The promptable-segmentation objective of the tiny SAM's pre-training (SAM's own, §3 and appendix A).

B scenes are encoded once each; P targets per scene are prompted by a (jittered) box or by points
(drawn by :mod:`.data` with :mod:`.prompts`). One positive point is ambiguous, so SAM's three multimask outputs are trained and
only the one with the lowest loss back-propagates; boxes and multi-point prompts train the single-mask
output. Loss = 20 focal + 1 dice on the decoder's low-resolution logits (a quarter of the input
frame) against the area-downsampled target, plus the MSE between the IoU head and the IoU of each
thresholded mask.

Two of SAM's switches are ablations here (:class:`MaskRecipe`; ``benchmarks/pretrain_levers.py``):
``multimask=False`` trains single points on the single-mask output too; ``correction_clicks=K``
adds SAM's iterative correction: K more rounds per prompt, each adding a click in the larger error
region of the previous prediction (positive in the missed part, negative in the spill; at the pixel
farthest from the region's boundary, RITM's deterministic click) and feeding the previous logits
back as SAM's mask prompt, every round's loss averaged. WPS-SAM itself prompts with one box or point.

Scenes may come at a lower resolution than the model's input size (the low-to-high resolution
curriculum): :func:`prompt_frame` then sets the prompt encoder to that frame and its grid, so that
prompts and positional encodings are in the scene's own frame.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import PromptEncoder, Sam

from ..data.targets import interior_point
from .losses import dice_loss, mask_iou, sigmoid_focal_loss


def predict_masks_batched(
    sam: Sam, image_embeddings: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's ``MaskDecoder.predict_masks`` with one image embedding per prompt, for prompts of many images.

    Args:
        image_embeddings: [N, 256, h, w], the embedding of each prompt's image.
        sparse: [N, T, 256] sparse prompt embeddings; dense: [N, 256, h, w].

    Returns:
        All four masks' low-resolution logits [N, 4, 4h, 4w] and IoU predictions [N, 4]
        (index 0 is the single-mask output, 1-3 the multimask outputs).
    """
    dec = sam.mask_decoder
    n = sparse.shape[0]
    output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(n, -1, -1), sparse), dim=1)
    src = image_embeddings + dense
    pos_src = sam.prompt_encoder.get_dense_pe().expand(n, -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = dec.transformer(src, pos_src, tokens)
    iou_token_out, mask_tokens_out = hs[:, 0, :], hs[:, 1 : 1 + dec.num_mask_tokens, :]
    upscaled = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1
    )
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    return masks, dec.iou_prediction_head(iou_token_out)


@contextlib.contextmanager
def prompt_frame(prompt_encoder: PromptEncoder, image_size: int, grid: int) -> Iterator[None]:
    """Within the block, ``prompt_encoder`` works in a square ``image_size`` px frame over a ``grid``
    cell embedding (its positional encoding is in normalised coordinates, so it transfers)."""
    saved = prompt_encoder.input_image_size, prompt_encoder.image_embedding_size
    prompt_encoder.input_image_size, prompt_encoder.image_embedding_size = (image_size,) * 2, (grid,) * 2
    try:
        yield
    finally:
        prompt_encoder.input_image_size, prompt_encoder.image_embedding_size = saved


def images_to_input(sam: Sam, images: Sequence[np.ndarray] | torch.Tensor) -> torch.Tensor:
    """uint8 [S, S, 3] images (or a uint8 tensor [B, S, S, 3]) -> SAM's normalised input
    [B, 3, S, S] on SAM's device."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.stack(images))
    x = x.to(sam.pixel_mean.device).permute(0, 3, 1, 2).float()
    return (x - sam.pixel_mean) / sam.pixel_std


@dataclass(frozen=True)
class MaskLossWeights:
    """SAM's weights: 20 focal, 1 dice, 1 for the IoU head's MSE."""

    focal: float = 20.0
    dice: float = 1.0
    iou: float = 1.0


@dataclass(frozen=True)
class MaskRecipe:
    """SAM's switches of the objective: ambiguity-aware multimask outputs for single points, and
    iterative correction clicks (rounds after the first prediction; 0: none)."""

    multimask: bool = True
    correction_clicks: int = 0


def mask_objective(
    sam: Sam,
    embeddings: torch.Tensor,
    batch: dict[str, torch.Tensor],
    weights: MaskLossWeights,
    recipe: MaskRecipe = MaskRecipe(),
) -> dict[str, torch.Tensor]:
    """Losses of a batch of scenes (a :class:`~.data.PretrainBatches` batch) whose embeddings are
    ``embeddings`` [B, 256, h, w]; the prompt encoder must be in the scenes' frame.

    Returns ``loss`` (focal/dice total plus the weighted IoU-head MSE), ``loss_focal``,
    ``loss_dice``, ``loss_iou`` and the mean IoU of the back-propagated masks of the first round,
    ``train_iou_box`` and ``train_iou_point``.
    """
    is_box = batch["is_box"]
    img_index = torch.arange(len(embeddings), device=embeddings.device)
    img_index = img_index.repeat_interleave(len(is_box) // len(embeddings))
    single_point = batch["coords"].shape[1] == 1
    terms: dict[str, list[torch.Tensor]] = {k: [] for k in ("total", "focal", "dice", "iou")}
    stats: dict[str, torch.Tensor] = {}
    for group in ("box", "point"):
        sel = is_box if group == "box" else ~is_box
        if not sel.any():
            continue
        prompt = {
            "boxes": batch["box"][sel] if group == "box" else None,
            "points": None if group == "box" else (batch["coords"][sel], batch["labels"][sel]),
            "masks": None,
        }
        ambiguous = group == "point" and single_point and recipe.multimask
        tgt = batch["targets"][sel].float()
        for round_ in range(1 + recipe.correction_clicks):
            # After the first round the prompt has several clicks: SAM's single-mask output.
            outs = slice(1, 4) if ambiguous and round_ == 0 else slice(0, 1)
            logits, iou, round_terms = _round_terms(
                sam, embeddings[img_index[sel]], prompt, tgt, outs, weights
            )
            for k, v in round_terms.items():
                terms[k].append(v)
            if round_ == 0:
                stats[f"train_iou_{group}"] = iou.mean()
            if round_ < recipe.correction_clicks:
                prompt = correction_prompt(
                    prompt, logits.detach(), tgt, sam.prompt_encoder.input_image_size[0]
                )
    out = {f"loss_{k}": torch.cat(v).mean() for k, v in terms.items()}
    out["loss"] = out["loss_total"] + weights.iou * out["loss_iou"]
    return {**out, **stats}


def _round_terms(
    sam: Sam, embeddings: torch.Tensor, prompt: dict, tgt: torch.Tensor, outs: slice, weights: MaskLossWeights
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """One decoding of ``prompt``: the back-propagated (best) logits [n, H, W], their IoU [n] and the
    per-prompt loss terms [n]."""
    sparse, dense = sam.prompt_encoder(**prompt)
    logits, iou_pred = predict_masks_batched(sam, embeddings, sparse, dense)
    logits, iou_pred = logits[:, outs].float(), iou_pred[:, outs].float()
    if tgt.shape[-1] != logits.shape[-1]:  # a coarser embedding than the tiny SAM's: coarser masks
        tgt = F.adaptive_avg_pool2d(tgt, logits.shape[-2:])
    tgt = tgt[:, None].expand_as(logits)
    focal, dice = sigmoid_focal_loss(logits, tgt), dice_loss(logits, tgt)  # each [n, K]
    total = weights.focal * focal + weights.dice * dice
    best = total.argmin(1)  # SAM: back-propagate only the best of ambiguous masks
    rows = torch.arange(len(best), device=best.device)
    iou = mask_iou(logits, tgt)  # [n, K]
    terms = {"total": total[rows, best], "focal": focal[rows, best], "dice": dice[rows, best]}
    terms["iou"] = F.mse_loss(iou_pred, iou, reduction="none").mean(1)
    return logits[rows, best], iou[rows, best], terms


def correction_prompt(prompt: dict, logits: torch.Tensor, target: torch.Tensor, frame: int) -> dict:
    """``prompt`` plus one correction click per prompt and the previous ``logits`` [n, H, W] as its
    mask prompt. The click is the pixel farthest from the boundary of the larger error region of the
    thresholded prediction against ``target`` [n, H', W'] (missed: positive; spilled: negative); a
    prediction without error gets a padding click (label -1). Clicks are in the ``frame`` px input
    frame, pixel indices (SAM's convention)."""
    h, w = logits.shape[-2:]
    if target.shape[-1] != w:
        target = F.adaptive_avg_pool2d(target, (h, w))
    truth, pred = (target > 0.5).cpu().numpy(), (logits > 0).cpu().numpy()
    clicks = np.zeros((len(truth), 1, 2), np.float32)
    labels = np.full((len(truth), 1), -1, np.int64)
    for j in range(len(truth)):
        missed, spilled = truth[j] & ~pred[j], pred[j] & ~truth[j]
        region, label = (missed, 1) if missed.sum() >= spilled.sum() else (spilled, 0)
        if region.any():
            clicks[j, 0] = interior_point(region) * np.float32(frame / w) - np.float32(0.5)
            labels[j, 0] = label
    device = logits.device
    new = (torch.from_numpy(clicks).to(device), torch.from_numpy(labels).to(device))
    points = new if prompt["points"] is None else tuple(torch.cat(p, 1) for p in zip(prompt["points"], new))
    return {"boxes": prompt["boxes"], "points": points, "masks": logits[:, None]}
