"""SAM's frozen mask decoder, batched over images and prompts, and the mask post-processing.

segment-anything's ``MaskDecoder.predict_masks`` decodes the prompts of *one* image: it repeats that
image's embedding once per prompt (``repeat_interleave``). WPS-SAM decodes Q prompts for each of B
images, so :class:`PromptMaskDecoder` runs the same computation, with the mask decoder's own
submodules, on the B*Q prompts together, each prompt attending to its own image's embedding.

On the CPU it decodes them in near-equal calls of at most :data:`CPU_PROMPTS_PER_CALL` prompts:
every prompt carries its own copy of the image embedding through the two-way transformer
([prompts, h*w, 256] activations), and on the build machine a call of 64 tiny-SAM prompts takes ~27 ms
per prompt against ~16 ms in calls of 16, with the same values (``benchmarks/decoder_chunks.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, PromptEncoder
from torch import Tensor, nn

CPU_PROMPTS_PER_CALL = 16


class PromptMaskDecoder(nn.Module):
    """SAM's mask decoder applied to prompt tokens, batched over images and prompts.

    SAM stays frozen: the module is in eval mode (also after a parent's ``.train()``) and its
    parameters never require grad. Gradients still flow to the input ``tokens`` when they require
    grad, which is how a prompter can be trained through the decoder.

    No mask prompt is used (as in WPS-SAM): the dense prompt is SAM's ``no_mask_embed`` everywhere.
    """

    def __init__(
        self,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        cpu_prompts_per_call: int | None = CPU_PROMPTS_PER_CALL,
    ) -> None:
        """
        Args:
            prompt_encoder: SAM's prompt encoder, for the dense positional encoding and
                ``no_mask_embed``; frozen in place.
            mask_decoder: SAM's mask decoder; frozen in place.
            cpu_prompts_per_call: on the CPU, the most prompts decoded in one call (see the module
                docstring); ``None``, and on other devices, every prompt in one call (an exported
                graph, whose number of prompts follows its batch, needs one call).
        """
        super().__init__()
        if cpu_prompts_per_call is not None and cpu_prompts_per_call < 1:
            raise ValueError(f"cpu_prompts_per_call must be positive, got {cpu_prompts_per_call}")
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.cpu_prompts_per_call = cpu_prompts_per_call
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PromptMaskDecoder:
        """Keep the decoder in eval mode whatever ``mode`` asks: SAM is frozen."""
        return super().train(False)

    def forward(
        self, image_embeddings: Tensor, tokens: Tensor, multimask_output: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Decode Q prompts per image.

        Args:
            image_embeddings: Bx256xhxw image embeddings from SAM's image encoder (h = w = S/16).
            tokens: BxQxTx256 sparse prompt tokens (T = 2 for WPS-SAM), one set per prompt.
            multimask_output: return SAM's three ambiguity-aware masks instead of its single mask.

        Returns:
            mask_logits: BxQxMx(4h)x(4w) if ``multimask_output`` (M = 3), else BxQx(4h)x(4w);
                logits in the SAM input frame at a quarter of its resolution (see
                :func:`masks_to_input_frame` and :func:`masks_to_frame`).
            iou_pred: BxQxM, or BxQ, SAM's predicted IoU of each mask.
        """
        b, c = image_embeddings.shape[:2]
        if tokens.ndim != 4 or tokens.shape[0] != b or tokens.shape[-1] != c:
            raise ValueError(
                f"tokens must have shape {b}xQxTx{c} for image embeddings of shape "
                f"{tuple(image_embeddings.shape)}, got {tuple(tokens.shape)}"
            )
        q = tokens.shape[1]
        per_call = self.cpu_prompts_per_call if image_embeddings.device.type == "cpu" else None
        calls = 1 if per_call is None else math.ceil(b * q / per_call)
        if calls <= 1:
            return self._decode(image_embeddings, tokens, multimask_output)
        # One prompt per row, its image's embedding beside it, in calls of near-equal size.
        image_of_row = torch.arange(b, device=image_embeddings.device).repeat_interleave(q)
        rows = zip(image_of_row.tensor_split(calls), tokens.flatten(0, 1).tensor_split(calls))
        decoded = [self._decode(image_embeddings[i], t[:, None], multimask_output) for i, t in rows]
        mask_logits = torch.cat([m[:, 0] for m, _ in decoded]).unflatten(0, (b, q))
        iou_pred = torch.cat([iou[:, 0] for _, iou in decoded]).unflatten(0, (b, q))
        return mask_logits, iou_pred

    def _decode(
        self, image_embeddings: Tensor, tokens: Tensor, multimask_output: bool
    ) -> tuple[Tensor, Tensor]:
        """:meth:`forward` in one call."""
        b, c, h, w = image_embeddings.shape
        q = tokens.shape[1]
        decoder = self.mask_decoder
        num_mask_tokens = decoder.num_mask_tokens

        # The output tokens lead each prompt's sequence, as in MaskDecoder.predict_masks.
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.expand(b * q, -1, -1)
        sequence = torch.cat([output_tokens, tokens.flatten(0, 1)], dim=1)

        # Each image's embedding serves its own Q prompts: the batched repeat_interleave.
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, c, 1, 1)
        src = (image_embeddings + dense).repeat_interleave(q, dim=0)
        pos_src = self.prompt_encoder.get_dense_pe().expand(b * q, -1, -1, -1)

        hs, src = decoder.transformer(src, pos_src, sequence)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + num_mask_tokens, :]

        upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b * q, c, h, w))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
            dim=1,
        )
        uc, uh, uw = upscaled.shape[1:]
        masks = (hyper_in @ upscaled.reshape(b * q, uc, uh * uw)).reshape(b, q, num_mask_tokens, uh, uw)
        iou_pred = decoder.iou_prediction_head(iou_token_out).reshape(b, q, num_mask_tokens)

        # As in MaskDecoder.forward: token 0 is the single-mask output, tokens 1.. the multimask ones.
        if multimask_output:
            return masks[:, :, 1:], iou_pred[:, :, 1:]
        return masks[:, :, 0], iou_pred[:, :, 0]


def masks_to_input_frame(mask_logits: Tensor, image_size: int) -> Tensor:
    """Upsample low-resolution mask logits to SAM's padded square input frame.

    Args:
        mask_logits: ...x(4h)x(4w) logits from :class:`PromptMaskDecoder`, any leading dims.
        image_size: S, the side of SAM's input (``sam.image_encoder.img_size``).

    Returns:
        ...xSxS logits in the input frame, padding included (the official WPS-SAM evaluation frame).
    """
    lead = mask_logits.shape[:-2]
    flat = mask_logits.reshape(lead.numel(), 1, *mask_logits.shape[-2:])
    flat = F.interpolate(flat, (image_size, image_size), mode="bilinear", align_corners=False)
    return flat.reshape(*lead, image_size, image_size)


def masks_to_frame(
    mask_logits: Tensor, image_size: int, input_size: tuple[int, int], original_size: tuple[int, int]
) -> Tensor:
    """Map low-resolution mask logits to the original image frame, as ``Sam.postprocess_masks``.

    Upsample to the SxS input frame, crop the padding away, resize to the original image size;
    any leading dims are kept.

    Args:
        mask_logits: ...x(4h)x(4w) logits from :class:`PromptMaskDecoder`.
        image_size: S, the side of SAM's input (``sam.image_encoder.img_size``).
        input_size: (h, w) of the resized image inside the input frame, before padding.
        original_size: (H, W) of the original image.

    Returns:
        ...xHxW logits in the original frame.
    """
    lead = mask_logits.shape[:-2]
    h, w = (int(s) for s in input_size)
    height, width = (int(s) for s in original_size)
    masks = masks_to_input_frame(mask_logits, image_size).reshape(lead.numel(), 1, image_size, image_size)
    masks = F.interpolate(masks[..., :h, :w], (height, width), mode="bilinear", align_corners=False)
    return masks.reshape(*lead, height, width)
