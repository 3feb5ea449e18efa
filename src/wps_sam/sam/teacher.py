"""Teacher tokens: SAM's frozen prompt encoder applied to ground-truth boxes or points.

WPS-SAM trains its prompter to regress the sparse prompt tokens that SAM's own prompt encoder gives
for a part's ground-truth box or point. :class:`TeacherTokens` produces those targets for every
ground-truth part of a batch in one call.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import PromptEncoder
from torch import Tensor, nn


class TeacherTokens(nn.Module):
    """SAM's prompt encoder, frozen, as the source of the prompter's target tokens.

    The encoder is frozen in code: it is put in eval mode, its parameters never require grad (the
    module stays in eval mode even when a parent calls ``.train()``), and it runs under
    ``torch.no_grad()``. The module holds a reference to the given encoder, not a copy.
    """

    def __init__(self, prompt_encoder: PromptEncoder) -> None:
        """
        Args:
            prompt_encoder: SAM's prompt encoder (``sam.prompt_encoder``); frozen in place.
        """
        super().__init__()
        self.prompt_encoder = prompt_encoder
        for p in self.prompt_encoder.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> TeacherTokens:
        """Keep the teacher in eval mode whatever ``mode`` asks: SAM is frozen."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, boxes: Tensor | None = None, points: Tensor | None = None) -> Tensor:
        """Embed N prompts, all of one kind, in one batched call.

        Args:
            boxes: Nx4 boxes, XYXY in pixels of the SAM input frame.
            points: Nx2 foreground points, (X, Y) in pixels of the SAM input frame.
            Exactly one of the two must be given.

        Returns:
            Nx2x256 float32 tokens, whatever the ambient autocast: for a box, SAM's two corner
            tokens; for a point, its foreground point token followed by SAM's padding token (what
            SAM's prompt encoder gives for a point without a box). N may be 0.
        """
        return self.encode(boxes, points)

    def encode(self, boxes: Tensor | None = None, points: Tensor | None = None) -> Tensor:
        """:meth:`forward` with gradients to ``boxes`` or ``points`` (SAM's weights stay frozen): how a
        prompter that predicts geometry gets SAM's tokens of it. Leading dims beyond N are kept:
        boxes [..., 4] / points [..., 2] -> [..., 2, 256]."""
        if (boxes is None) == (points is None):
            raise ValueError("TeacherTokens takes exactly one of boxes and points")
        prompts, kind, width = (boxes, "boxes", 4) if boxes is not None else (points, "points", 2)
        if prompts.ndim < 2 or prompts.shape[-1] != width:
            raise ValueError(f"{kind} must have shape Nx{width}, got {tuple(prompts.shape)}")
        lead = prompts.shape[:-1]
        prompts = prompts.reshape(-1, width)
        device = self.prompt_encoder.no_mask_embed.weight.device
        prompts = prompts.to(device=device, dtype=torch.float32)
        # The random Fourier features of the positional encoding lose precision in half precision.
        with torch.autocast(device.type, enabled=False):
            if kind == "boxes":
                sparse, _ = self.prompt_encoder(points=None, boxes=prompts, masks=None)
            else:
                labels = torch.ones(prompts.shape[0], 1, device=device)
                sparse, _ = self.prompt_encoder(points=(prompts[:, None], labels), boxes=None, masks=None)
        return sparse.reshape(*lead, *sparse.shape[1:])
