"""Builders: the one place that turns a :class:`~wps_sam.config.Config` into modules."""

from __future__ import annotations

from segment_anything.modeling import Sam

from .config import Config
from .modeling.criterion import SetCriterion, build_criterion
from .modeling.prompter import build_prompter
from .modeling.wps_sam import WPSSAM
from .sam.backbones import build_sam
from .sam.decoder import PromptMaskDecoder
from .sam.encoder import accelerate_encoder
from .sam.teacher import TeacherTokens


def build_sam_from_config(cfg: Config) -> Sam:
    return build_sam(cfg.sam.type, cfg.sam.checkpoint, sha256=cfg.sam.sha256)


def build_wps_sam(cfg: Config, num_classes: int, sam: Sam | None = None) -> WPSSAM:
    """WPS-SAM for ``num_classes`` part classes on the SAM that ``cfg.sam`` names (or ``sam``)."""
    sam = sam if sam is not None else build_sam_from_config(cfg)
    embed_size = tuple(sam.prompt_encoder.image_embedding_size)
    prompter = build_prompter(cfg.prompter, num_classes, embed_size)
    return WPSSAM(
        # Same weights, attention through scaled_dot_product_attention (see sam/encoder.py).
        image_encoder=accelerate_encoder(sam.image_encoder),
        prompter=prompter,
        teacher=TeacherTokens(sam.prompt_encoder),
        decoder=PromptMaskDecoder(sam.prompt_encoder, sam.mask_decoder),
        supervision=cfg.data.supervision,
    )


def build_training_criterion(cfg: Config, num_classes: int) -> SetCriterion:
    return build_criterion(cfg.loss, num_classes)
