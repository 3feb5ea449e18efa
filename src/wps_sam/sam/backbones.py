"""The registry of SAM variants: the official vit_b/l/h, a small ViT of theirs, and the tiny SAM.

* ``vit_b`` / ``vit_l`` / ``vit_h``: Meta's architectures (``segment_anything`` modules), so the
  official checkpoints load unchanged;
* ``vit_t``: MobileSAM (Zhang et al. 2023): its TinyViT encoder, taken from the package that ships
  MobileSAM's modules (the ``mobile`` extra), before SAM's own prompt encoder and mask decoder, so
  MobileSAM's released ``mobile_sam.pt`` loads unchanged (1024 px, 64x64 embedding);
* ``vit_mini``: the same structure scaled down (256 px input, 16x16 embedding, random weights
  only): the tests' stand-in for the official ViTs;
* ``tiny``: the offline demo's foundation model, shipped with the package: SAM's prompt encoder and
  mask decoder behind a convolutional encoder (:mod:`.conv_encoder`; 256 px input, 32x32
  embedding, 128x128 masks). It is a segment-anything ``Sam`` all the same, so ``SamPredictor``
  runs it unchanged.

``_build_sam`` owns the numbers shared by every variant, as in segment-anything's ``build_sam.py``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from ..config import SAM_TYPES
from ..errors import CheckpointError
from .checkpoint import check_sha256, load_into, read_state_dict
from .conv_encoder import EMBED_STRIDE, ConvImageEncoder

logger = logging.getLogger(__name__)

PROMPT_EMBED_DIM = 256
SHIPPED_TINY_WEIGHTS = "sam_tiny.safetensors"
# The digest of the shipped weights (how they were made: weights/PRETRAIN_LOG.md); checked at load.
SHIPPED_TINY_SHA256 = "44492dc9caccd9ce06b345c9d83ffea78180ecb8b3393b64e3e8a338d5e63600"


_OFFICIAL_FILES = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
    "vit_t": "mobile_sam.pt",
}


@dataclass(frozen=True)
class SamSpec:
    """The numbers that set one SAM variant apart."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    window_size: int = 14
    decoder_mlp_dim: int = 2048


SAM_SPECS: dict[str, SamSpec] = {
    "vit_b": SamSpec(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamSpec(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamSpec(1280, 32, 16, (7, 15, 23, 31)),
    # ~6M parameters, 256 px input, 16x16 embedding: the official structure, small enough for tests.
    "vit_mini": SamSpec(192, 6, 3, (2, 5), image_size=256, window_size=8, decoder_mlp_dim=512),
}
# The tiny SAM: 256 px input; its decoder's MLP width (the official ViTs use 2048).
TINY_IMAGE_SIZE = 256
TINY_DECODER_MLP_DIM = 1024


def _vit_encoder(spec: SamSpec) -> ImageEncoderViT:
    return ImageEncoderViT(
        depth=spec.encoder_depth,
        embed_dim=spec.encoder_embed_dim,
        img_size=spec.image_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=spec.encoder_num_heads,
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=spec.encoder_global_attn_indexes,
        window_size=spec.window_size,
        out_chans=PROMPT_EMBED_DIM,
    )


def _build_sam(image_encoder: torch.nn.Module, embedding_size: int, decoder_mlp_dim: int) -> Sam:
    """SAM around ``image_encoder`` (whose ``img_size`` input gives an ``embedding_size`` square grid)."""
    image_size = image_encoder.img_size
    sam = Sam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=PROMPT_EMBED_DIM,
            image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=PROMPT_EMBED_DIM, mlp_dim=decoder_mlp_dim, num_heads=8
            ),
            transformer_dim=PROMPT_EMBED_DIM,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def tiny_sam_architecture(embed_stride: int = EMBED_STRIDE) -> Sam:
    """The tiny SAM with random weights; ``embed_stride`` 16 halves its embedding grid (an ablation)."""
    encoder = ConvImageEncoder(
        img_size=TINY_IMAGE_SIZE, out_chans=PROMPT_EMBED_DIM, embed_stride=embed_stride
    )
    return _build_sam(encoder, TINY_IMAGE_SIZE // embed_stride, TINY_DECODER_MLP_DIM)


def _tiny_vit_encoder() -> torch.nn.Module:
    """MobileSAM's image encoder, as its ``build_sam_vit_t`` builds it."""
    try:
        with warnings.catch_warnings():  # the package imports timm's deprecated paths and re-registers models
            warnings.simplefilter("ignore")
            from mobile_sam.modeling import TinyViT
    except ImportError:
        raise CheckpointError('SAM vit_t (MobileSAM) needs its modules: pip install -e ".[mobile]"') from None
    return TinyViT(
        img_size=1024, in_chans=3, num_classes=1000, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
        drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3,
        layer_lr_decay=0.8,
    )  # fmt: skip


def _build_variant(kind: str) -> Sam:
    if kind == "tiny":
        return tiny_sam_architecture()
    if kind == "vit_t":
        return _build_sam(_tiny_vit_encoder(), 64, 2048)
    spec = SAM_SPECS[kind]
    return _build_sam(_vit_encoder(spec), spec.image_size // 16, spec.decoder_mlp_dim)


def shipped_tiny_weights() -> Path:
    """Path of the tiny SAM weights that ship inside the package."""
    return Path(str(resources.files("wps_sam") / "weights" / SHIPPED_TINY_WEIGHTS))


def freeze(sam: Sam) -> Sam:
    """SAM is frozen in WPS-SAM: eval mode, no gradients."""
    sam.eval()
    for p in sam.parameters():
        p.requires_grad_(False)
    return sam


def build_sam(
    kind: str, checkpoint: str | Path | None = None, sha256: str | None = None, frozen: bool = True
) -> Sam:
    """Build SAM ``kind`` (one of :data:`SAM_TYPES`) and load its weights strictly.

    Args:
        kind: ``vit_b`` | ``vit_l`` | ``vit_h`` | ``vit_t`` | ``vit_mini`` | ``tiny``.
        checkpoint: an official-layout file (plain state dict, ``.pth``) or ``.safetensors``;
            ``None`` loads the weights shipped with the package (``tiny`` only; their digest must be
            :data:`SHIPPED_TINY_SHA256`);
            ``"random"`` keeps random weights (tests only; warns).
        sha256: optional expected digest of ``checkpoint``.
        frozen: return the model in eval mode without gradients.

    The model's ``checkpoint_sha256`` attribute records the digest of the loaded file
    (``"random"`` for random weights).
    """
    if kind not in SAM_TYPES:
        raise CheckpointError(f"unknown SAM type {kind!r}; choose one of {sorted(SAM_TYPES)}")
    if checkpoint is None:
        if kind != "tiny":
            official = _OFFICIAL_FILES.get(kind, "e.g. sam_vit_b_01ec64.pth")
            source = "MobileSAM's" if kind == "vit_t" else "Meta's segment-anything"
            raise CheckpointError(
                f"SAM {kind} needs --sam-checkpoint: the official file ({official} from {source} "
                f"release), or 'random' for random weights (tests only)"
            )
        checkpoint = shipped_tiny_weights()
        if not checkpoint.is_file():
            raise CheckpointError(f"the shipped tiny SAM weights are missing from the install: {checkpoint}")
        sha256 = sha256 or SHIPPED_TINY_SHA256
    # Check and read the file before building the model, so that a bad file fails fast (even vit_h).
    if str(checkpoint) == "random":
        warnings.warn(f"SAM {kind} has random weights: use this for tests only", stacklevel=2)
        state, digest = None, "random"
    else:
        digest = check_sha256(checkpoint, sha256)
        state = read_state_dict(checkpoint)
    sam = _build_variant(kind)
    if state is not None:
        load_into(sam, state, checkpoint, kind)
        logger.info("loaded SAM %s from %s (sha256 %s)", kind, checkpoint, digest[:12])
    sam.checkpoint_sha256 = digest
    return freeze(sam) if frozen else sam
