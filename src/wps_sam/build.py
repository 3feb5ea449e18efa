"""Builders: the one place that turns a :class:`~wps_sam.config.Config` into modules."""

from __future__ import annotations

from segment_anything.modeling import Sam

from .config import Config
from .modeling.box_refiner import BoxJitter
from .modeling.criterion import SetCriterion, build_criterion
from .modeling.denoising import Denoiser
from .modeling.dense_criterion import DenseCriterion, build_dense_criterion
from .modeling.dense_prompter import DensePrompter
from .modeling.prompter import Prompter, build_prompter
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
    return WPSSAM(
        # Same weights, attention through scaled_dot_product_attention (see sam/encoder.py).
        image_encoder=accelerate_encoder(sam.image_encoder),
        prompter=build_any_prompter(cfg, num_classes, embed_size),
        teacher=TeacherTokens(sam.prompt_encoder),
        decoder=PromptMaskDecoder(sam.prompt_encoder, sam.mask_decoder),
        supervision=cfg.data.supervision,
        prompt=cfg.inference.mixed_prompt,
    )


def build_any_prompter(
    cfg: Config, num_classes: int, embed_size: tuple[int, int]
) -> Prompter | DensePrompter:
    """The prompter ``cfg.prompter.kind`` names: the paper's set prompter (with its switches) or the
    dense one."""
    p = cfg.prompter
    if p.kind == "dense":
        return DensePrompter(
            num_classes,
            cfg.data.supervision,
            embed_size=embed_size,
            width=p.dense_width,
            dilations=tuple(int(d) for d in p.dense_dilations.split(",")),
            max_parts=p.dense_max_parts,
            peak_threshold=cfg.inference.peak_threshold,
            standardize_input=p.standardize_input,
            geometry_radius=p.dense_geometry_radius,
            refine=p.dense_refine,
        )
    return build_prompter(p, num_classes, embed_size, cfg.data.supervision)


def build_training_criterion(cfg: Config, num_classes: int) -> SetCriterion | DenseCriterion:
    if cfg.prompter.kind == "dense":
        return build_dense_criterion(cfg.loss, num_classes, cfg.prompter.dense_geometry_radius)
    return build_criterion(cfg.loss, num_classes, groups=cfg.prompter.groups)


def build_denoiser(cfg: Config, num_classes: int) -> Denoiser | BoxJitter | None:
    """The maker of each step's noised ground truth: the set prompter's denoising queries when
    ``cfg.prompter.dn_groups`` asks for them, the jittered boxes the dense prompter's box refiner
    trains on when ``cfg.prompter.dense_refine`` does."""
    p = cfg.prompter
    if p.kind == "dense":
        return BoxJitter() if p.dense_refine else None
    if p.dn_groups == 0:
        return None
    return Denoiser(
        cfg.data.supervision, num_classes, p.dn_groups, p.dn_box_noise, p.dn_point_noise, p.dn_label_noise
    )
