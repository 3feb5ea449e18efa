"""Two starts that spare a from-scratch tiny SAM a long plateau of empty masks.

From scratch, SAM's decoder must learn to align the positional encodings of prompts and image tokens
before any mask can follow a prompt; until then it predicts empty masks. Tying the cross-attention
projections and a short "the mask is the box" warm-up on frozen embeddings get it there in ~100
cheap steps.
"""

from __future__ import annotations

import numpy as np
import torch
from segment_anything.modeling import Sam

from .losses import dice_loss, mask_iou, sigmoid_focal_loss
from .objective import images_to_input, predict_masks_batched


def tie_decoder_attention(sam: Sam) -> None:
    """Initialise each cross-attention of SAM's mask decoder with ``k_proj = q_proj``.

    Attention logits then start as ``(Wx) . (Wy)``, roughly proportional to ``x . y``: an image token
    and a prompt token whose positional encodings are close attend to each other from the first step.
    With independent random projections, the decoder first has to discover this alignment, and from
    scratch it sits for hundreds of steps predicting empty masks.
    """
    layers = list(sam.mask_decoder.transformer.layers)
    attns = [
        a for layer in layers for a in (layer.cross_attn_token_to_image, layer.cross_attn_image_to_token)
    ]
    attns.append(sam.mask_decoder.transformer.final_attn_token_to_image)
    with torch.no_grad():
        for attn in attns:
            if attn.k_proj.weight.shape == attn.q_proj.weight.shape:
                attn.k_proj.weight.copy_(attn.q_proj.weight)
                attn.k_proj.bias.copy_(attn.q_proj.bias)


def localisation_warmup(sam: Sam, scenes: list[np.ndarray], steps: int, seed: int = 0) -> list[float]:
    """Train the prompt encoder and mask decoder to output a random box's own region, as a mask.

    From scratch, the decoder must learn to align the positional encodings of prompts and image tokens
    before any mask can follow a prompt; until then it predicts empty masks and the whole model sits on
    a plateau (hundreds of steps on the full task). On this toy task (fixed image embeddings of
    ``scenes``, no encoder pass, boxes of 30-90 px) the alignment appears within ~100 cheap steps.

    Returns the IoU of each step.
    """
    if steps <= 0:
        return []
    with torch.no_grad():
        embeddings = sam.image_encoder(images_to_input(sam, scenes))
    params = [*sam.prompt_encoder.parameters(), *sam.mask_decoder.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    size = sam.image_encoder.img_size
    low = 4 * embeddings.shape[-1]  # the decoder's low-resolution masks: 4 cells per embedding cell
    scale = size / low
    yy, xx = torch.meshgrid(torch.arange(low) + 0.5, torch.arange(low) + 0.5, indexing="ij")
    device = embeddings.device  # the draws stay on the CPU generator: the same boxes on any device
    ious = []
    n = 16
    for _ in range(steps):
        centre = torch.rand(n, 2, generator=gen) * (size - 60) + 30
        side = torch.rand(n, 2, generator=gen) * 60 + 30
        boxes = torch.cat([centre - side / 2, centre + side / 2], 1).clamp(0, size - 1)
        b = boxes / scale
        target = (
            (xx >= b[:, 0, None, None])
            & (xx <= b[:, 2, None, None] + 1 / scale)
            & (yy >= b[:, 1, None, None])
            & (yy <= b[:, 3, None, None] + 1 / scale)
        ).float()
        index = torch.randint(len(scenes), (n,), generator=gen)
        boxes, target, index = boxes.to(device), target.to(device), index.to(device)
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
        logits = predict_masks_batched(sam, embeddings[index], sparse, dense)[0][:, 0]
        loss = (20.0 * sigmoid_focal_loss(logits, target) + dice_loss(logits, target)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ious.append(mask_iou(logits, target).mean().item())
    return ious
