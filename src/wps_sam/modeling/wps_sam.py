"""The WPS-SAM composite: a frozen SAM image encoder, the trainable prompter, the frozen teacher
(SAM's prompt encoder) and the frozen SAM mask decoder, received ready-made (see ``build.py``).

Only the prompter trains; everything from SAM is frozen in code (eval mode, no gradients, run under
``torch.no_grad``). The model does no I/O and reads no configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..postprocess import select_queries
from ..sam.decoder import PromptMaskDecoder
from ..sam.teacher import TeacherTokens
from .dense_prompter import DensePrompter
from .geometry import normalise, to_pixels
from .prompter import Prompter


def best_rated_masks(mask_logits: Tensor, iou_pred: Tensor) -> Tensor:
    """SAM's three masks per prompt [B, Q, 3, H, W] -> the one its IoU head ([B, Q, 3]) rates best,
    [B, Q, H, W] (what SAM advises for a single click)."""
    best = iou_pred.argmax(-1)[..., None, None, None].expand(-1, -1, 1, *mask_logits.shape[-2:])
    return mask_logits.gather(2, best)[:, :, 0]


@dataclass
class PartPrediction:
    """Kept queries of one image. ``mask_logits``: [K, 4h, 4w] low-res SAM logits (input frame)."""

    labels: Tensor  # [K] part class indices 0..C-1
    scores: Tensor  # [K] class probabilities
    mask_logits: Tensor  # [K, 4h, 4w]
    query_idx: Tensor  # [K] which queries were kept


SUPERVISIONS = ("box", "point", "mixed")
_PROMPT_ARGUMENT = {"box": "boxes", "point": "points"}  # TeacherTokens' keyword for each geometry


class WPSSAM(nn.Module):
    def __init__(
        self,
        image_encoder: nn.Module,
        prompter: Prompter | DensePrompter,
        teacher: TeacherTokens,
        decoder: PromptMaskDecoder,
        supervision: str = "box",
        prompt: str = "box",
    ) -> None:
        """
        Args:
            image_encoder: SAM's image encoder, [B,3,S,S] normalised input -> [B,256,h,w].
            prompter: image embedding -> ``{"pred_logits", "pred_tokens"}`` (and, for mixed
                supervision, the point head's ``"pred_point_tokens"`` or ``"pred_point_geometry"``).
            teacher: SAM's prompt encoder as ground-truth tokens.
            decoder: SAM's mask decoder driven by prompt tokens.
            supervision: ``"box"``, ``"point"`` or ``"mixed"`` (each part its own label: its box, or
                its point when it has only a point): which ground truth the teacher encodes.
            prompt: mixed supervision only: the head whose prompts SAM decodes at inference,
                ``"box"`` (default) or ``"point"``; the other supervisions decode their own kind.
        """
        super().__init__()
        if supervision not in SUPERVISIONS:
            raise ValueError(f"supervision must be one of {SUPERVISIONS}, got {supervision!r}")
        if prompt not in _PROMPT_ARGUMENT:
            raise ValueError(f"prompt must be 'box' or 'point', got {prompt!r}")
        self.image_encoder = image_encoder
        self.prompter = prompter
        self.teacher = teacher
        self.decoder = decoder
        self.supervision = supervision
        self.prompt = prompt if supervision == "mixed" else supervision
        for module in (self.image_encoder, self.teacher, self.decoder):
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> WPSSAM:
        """Only the prompter ever switches to training mode; SAM stays in eval."""
        super().train(False)
        self.prompter.train(mode)
        return self

    @property
    def num_classes(self) -> int:
        return self.prompter.num_classes

    @property
    def decodes_points(self) -> bool:
        """Whether SAM's mask decoder receives point prompts at inference."""
        return self.prompt == "point"

    @torch.no_grad()
    def embed(self, images: Tensor, mirrored: bool = False) -> Tensor:
        """[B,3,S,S] normalised, padded images -> [B,256,h,w] SAM image embeddings; ``mirrored``:
        of the whole S x S input frames flipped left-right (test-time mirroring), so that the
        embedding's grid mirrors the image's cell for cell."""
        return self.image_encoder(images.flip(-1) if mirrored else images)

    @property
    def mirrors_at_test(self) -> bool:
        """Whether the prompter can average its outputs over an image and its mirror (the dense one)."""
        return isinstance(self.prompter, DensePrompter)

    @property
    def image_size(self) -> int:
        """S, the side of SAM's square input frame (the frame of every box, point and geometry)."""
        return int(self.teacher.prompt_encoder.input_image_size[0])

    def forward(self, image_embeddings: Tensor, mirrored_embeddings: Tensor | None = None) -> dict:
        """[B,256,h,w] -> ``{"pred_logits": [B,Q,C+1], "pred_tokens": [B,Q,T,256], ...}``; under
        mixed supervision ``"pred_tokens"`` are the tokens of the head that :attr:`prompt` names.
        ``mirrored_embeddings``: :meth:`embed` of the mirrored frames, for test-time mirroring
        (:attr:`mirrors_at_test` prompters only)."""
        if mirrored_embeddings is None:
            outputs = self.prompter(image_embeddings)
        elif not self.mirrors_at_test:
            raise ValueError(
                f"{type(self.prompter).__name__} has no test-time mirroring (the dense prompter has)"
            )
        else:
            outputs = self.prompter(image_embeddings, mirrored_embeddings)
        outputs = self.complete_tokens(outputs)
        if self.supervision == "mixed" and self.prompt == "point":
            outputs["pred_tokens"] = outputs["pred_point_tokens"]
        return outputs

    def complete_tokens(self, outputs: dict) -> dict:
        """Give every output that predicts geometry its tokens: SAM's frozen prompt encoder's tokens
        of the geometry (differentiable in the geometry) plus the prompter's residual if it has one
        (the dense prompter has none): ``"pred_geometry"`` -> ``"pred_tokens"`` and, for mixed
        supervision, the point head's ``"pred_point_geometry"`` -> ``"pred_point_tokens"``. Nested
        outputs (``aux_outputs``, ``dn_outputs``) are completed too; ``outputs`` is updated in place."""
        main_kind = "point" if self.supervision == "point" else "box"
        heads = (
            ("pred_geometry", "pred_tokens", main_kind),
            ("pred_point_geometry", "pred_point_tokens", "point"),
        )
        for geometry_key, tokens_key, kind in heads:
            if geometry_key in outputs and tokens_key not in outputs:
                pixels = to_pixels(outputs[geometry_key].float(), kind, self.image_size)
                tokens = self.teacher.encode(**{_PROMPT_ARGUMENT[kind]: pixels})
                if tokens_key == "pred_tokens" and "pred_token_residual" in outputs:
                    tokens = tokens + outputs["pred_token_residual"].float()
                outputs[tokens_key] = tokens
        for aux in outputs.get("aux_outputs", []):
            self.complete_tokens(aux)
        if "dn_outputs" in outputs:
            self.complete_tokens(outputs["dn_outputs"])
        return outputs

    @torch.no_grad()
    def teacher_tokens(self, targets: list[dict[str, Tensor]]) -> list[Tensor]:
        """Teacher tokens of every target, one batched call per kind: per image [N_i, 2, 256]. Under
        mixed supervision a part with a box (``has_box``) gets its box's tokens, the others their
        point's."""
        counts = [len(t["labels"]) for t in targets]
        if self.supervision != "mixed":
            key = _PROMPT_ARGUMENT[self.supervision]
            return list(self.teacher(**{key: torch.cat([t[key] for t in targets])}).split(counts))
        has_box = torch.cat([t["has_box"] for t in targets]).bool()
        tokens = self.teacher(points=torch.cat([t["points"] for t in targets]))
        if has_box.any():
            tokens[has_box] = self.teacher(boxes=torch.cat([t["boxes"] for t in targets])[has_box])
        return list(tokens.split(counts))

    @torch.no_grad()
    def attach_targets(self, targets: list[dict[str, Tensor]]) -> None:
        """Give every target (in place) its teacher ``"tokens"`` [N, 2, 256] and normalised
        ``"geometry"``: [N, 4] boxes (cx, cy, w, h), [N, 2] points or, for mixed supervision, [N, 4]
        where a part labelled by a point is ``(x, y, 0, 0)`` (``has_box`` tells which)."""
        for target, tokens in zip(targets, self.teacher_tokens(targets)):
            target["tokens"] = tokens
            if self.supervision == "point":
                target["geometry"] = normalise(target["points"].float(), "point", self.image_size)
                continue
            boxes = target["boxes"].float()
            if self.supervision == "mixed":  # a point (x, y) as the empty box (x, y, x, y)
                has_box = target["has_box"].bool()[:, None]
                boxes = torch.where(has_box, boxes.nan_to_num(0.0), target["points"].float().repeat(1, 2))
            target["geometry"] = normalise(boxes, "box", self.image_size)

    @torch.no_grad()
    def predict(
        self,
        image_embeddings: Tensor,
        score_threshold: float = 0.0,
        point_multimask: bool = False,
        mirrored_embeddings: Tensor | None = None,
    ) -> list[PartPrediction]:
        """Kept queries and their SAM masks for each image of the batch (``mirrored_embeddings``:
        see :meth:`forward`; SAM decodes the masks from ``image_embeddings``).

        Queries whose argmax class is not "no part" (and whose probability reaches
        ``score_threshold``) are kept, as in the official inference; only kept queries are decoded,
        all of the batch in one call. ``point_multimask``: when the prompter emits point tokens, decode
        SAM's three ambiguity-aware masks and keep the one SAM's IoU head rates best (what SAM advises
        for a single click) instead of its single-mask output (the official inference).
        """
        multimask = point_multimask and self.decodes_points
        outputs = self(image_embeddings, mirrored_embeddings)
        kept = [select_queries(logits, score_threshold) for logits in outputs["pred_logits"]]
        # Decode only the kept queries of the whole batch, one prompt per decoder row: each row
        # attends to its own image's embedding, and no image waits on the batch's largest count.
        counts = [len(idx) for idx, _, _ in kept]
        device = image_embeddings.device
        image_idx = torch.repeat_interleave(
            torch.arange(len(kept), device=device), torch.tensor(counts, device=device)
        )
        query_idx = torch.cat([idx for idx, _, _ in kept]).to(device)
        if len(query_idx) == 0:
            h, w = image_embeddings.shape[-2:]
            empty = image_embeddings.new_zeros(0, 4 * h, 4 * w, dtype=torch.float32)
            return [PartPrediction(labels, scores, empty, idx) for idx, labels, scores in kept]
        tokens = outputs["pred_tokens"][image_idx, query_idx]  # [N, T, 256]
        mask_logits, iou_pred = self.decoder(
            image_embeddings[image_idx], tokens[:, None], multimask_output=multimask
        )
        if multimask:
            mask_logits = best_rated_masks(mask_logits, iou_pred)
        per_image = mask_logits[:, 0].float().split(counts)
        return [
            PartPrediction(labels=labels, scores=scores, mask_logits=masks, query_idx=idx)
            for (idx, labels, scores), masks in zip(kept, per_image)
        ]
