"""A faster SAM image encoder: the same module and weights, attention through fused kernels.

segment-anything's ``Attention.forward`` materialises the attention matrix, adds the decomposed
relative-position bias of MViTv2 (``add_decomposed_rel_pos``) and runs softmax and the value product
as separate ops. :func:`accelerate_encoder` swaps the attention of every block for
:class:`SdpaAttention`, which builds the same bias and hands it, with q, k and v, to
``F.scaled_dot_product_attention`` as an additive ``attn_mask`` (fused, memory-efficient kernels on
CUDA), and the encoder itself for :class:`FastImageEncoderViT`, which keeps the residual stream and
the neck in float32 under autocast. Modules are re-classed, not rebuilt: parameters, buffers and
``state_dict`` keys are untouched, so checkpoints load as before and :func:`restore_encoder` undoes it.

:class:`EncoderRunner` adds the precision (a bf16 or float16 autocast; the callers pick bf16 on CUDA,
and on a CPU with native bf16 under ``train.cpu_amp``: ``engine.device.encoder_dtype``) and an optional
``torch.compile``.
The idea follows pytorch-labs' *segment-anything-fast*; the code is our own.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, ImageEncoderViT, get_rel_pos
from torch import Tensor, nn


def decomposed_rel_pos_bias(
    q: Tensor, rel_pos_h: Tensor, rel_pos_w: Tensor, q_size: tuple[int, int], k_size: tuple[int, int]
) -> Tensor:
    """MViTv2's decomposed relative-position bias, as segment-anything's ``add_decomposed_rel_pos`` adds it.

    Args:
        q: the *unscaled* queries [B*heads, q_h*q_w, C] (SAM adds the bias to ``(q * scale) @ k^T``
            but computes it from the raw q).
        rel_pos_h, rel_pos_w: the block's relative-position tables [2*size-1, C].
        q_size, k_size: (h, w) of the query and key grids.

    Returns:
        The additive bias [B*heads, q_h*q_w, k_h*k_w] in the dtype of ``q``.
    """
    q_h, q_w = q_size
    k_h, k_w = k_size
    rh = get_rel_pos(q_h, k_h, rel_pos_h).to(q.dtype)  # [q_h, k_h, C]
    rw = get_rel_pos(q_w, k_w, rel_pos_w).to(q.dtype)  # [q_w, k_w, C]
    b, _, dim = q.shape
    r_q = q.reshape(b, q_h, q_w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)  # [B*heads, q_h, q_w, k_h]
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)  # [B*heads, q_h, q_w, k_w]
    bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return bias.reshape(b, q_h * q_w, k_h * k_w)


class SdpaAttention(Attention):
    """segment-anything's ``Attention`` with the same parameters, run by ``scaled_dot_product_attention``.

    Instances are made by re-classing an existing ``Attention`` (:func:`accelerate_encoder`); nothing
    is copied or re-initialised.
    """

    def forward(self, x: Tensor) -> Tensor:
        """[B, H, W, dim] tokens of a window (or of the whole grid) -> [B, H, W, dim]."""
        b, h, w, _ = x.shape
        # q, k, v: [B, heads, H*W, C], from the one qkv projection as in the official forward.
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = None
        if self.use_rel_pos:
            flat_q = q.reshape(b * self.num_heads, h * w, -1)
            bias = decomposed_rel_pos_bias(flat_q, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w))
            bias = bias.view(b, self.num_heads, h * w, h * w).to(q.dtype)
        # SDPA's default scale is head_dim ** -0.5, the official ``self.scale``.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B, heads, H*W, C]
        out = out.transpose(1, 2).reshape(b, h, w, -1)
        return self.proj(out)


class FastImageEncoderViT(ImageEncoderViT):
    """segment-anything's ``ImageEncoderViT`` whose residual stream and neck stay in float32 under autocast.

    Under a bf16 autocast the official forward carries the residual stream in bf16 (the patch
    embedding's output dtype) and runs the neck's ``LayerNorm2d`` in bf16; both add error at every
    block. Here only the matmuls inside the blocks run in low precision: the stream is upcast after
    the patch embedding, and the neck (two convolutions, under 1% of the FLOPs) runs in float32.
    Without autocast the result is the official one.
    """

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, S, S] normalised, padded images -> [B, 256, S/16, S/16] embeddings."""
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        x = x.float()
        for block in self.blocks:
            x = block(x)
        with torch.autocast(x.device.type, enabled=False):
            return self.neck(x.permute(0, 3, 1, 2).float())


def accelerate_encoder(image_encoder: nn.Module) -> nn.Module:
    """Switch a ViT ``image_encoder`` to :class:`FastImageEncoderViT` and :class:`SdpaAttention`, in place.

    Returns the same module. Idempotent. Weights and ``state_dict`` keys do not change (the modules
    are re-classed, not rebuilt); :func:`restore_encoder` undoes it. Other encoders (the tiny SAM's
    :class:`~wps_sam.sam.conv_encoder.ConvImageEncoder`, whose attention is already SDPA) are
    returned as they are.
    """
    if type(image_encoder) is ImageEncoderViT:
        image_encoder.__class__ = FastImageEncoderViT
    elif not isinstance(image_encoder, FastImageEncoderViT):
        return image_encoder
    for block in image_encoder.blocks:
        if type(block.attn) is Attention:
            block.attn.__class__ = SdpaAttention
        elif not isinstance(block.attn, SdpaAttention):
            raise TypeError(f"unexpected attention module {type(block.attn).__name__} in the SAM encoder")
    return image_encoder


def restore_encoder(image_encoder: nn.Module) -> nn.Module:
    """Back to segment-anything's own forward and attention, in place; returns ``image_encoder``."""
    if not isinstance(image_encoder, ImageEncoderViT):
        return image_encoder
    if type(image_encoder) is FastImageEncoderViT:
        image_encoder.__class__ = ImageEncoderViT
    for block in image_encoder.blocks:
        if type(block.attn) is SdpaAttention:
            block.attn.__class__ = Attention
    return image_encoder


def is_accelerated(image_encoder: ImageEncoderViT) -> bool:
    return isinstance(image_encoder, FastImageEncoderViT) and all(
        isinstance(block.attn, SdpaAttention) for block in image_encoder.blocks
    )


def relative_error(x: Tensor, reference: Tensor) -> float:
    """``||x - reference|| / ||reference||`` (Frobenius norms, computed in float64)."""
    diff = (x.double() - reference.double()).norm()
    return float(diff / reference.double().norm().clamp_min(1e-30))


class EncoderRunner:
    """Runs a frozen SAM image encoder fast: SDPA attention, a low-precision autocast, optional compile.

    Args:
        image_encoder: SAM's image encoder; accelerated in place (:func:`accelerate_encoder`).
        dtype: autocast dtype (``torch.bfloat16`` or ``torch.float16``), or ``None`` for float32.
            ``"auto"``: bf16 on CUDA, float32 elsewhere (bf16 matmuls are slow on most CPUs).
        compile: wrap the encoder in ``torch.compile`` (the caller picks ``compile_mode``); the first
            call then takes a while.
        compile_mode: passed to ``torch.compile`` (``None``, ``"max-autotune"``, ...).

    Calling it maps [B, 3, S, S] normalised, padded images to [B, 256, h, w] embeddings (S/16 for the
    ViTs, S/8 for the tiny SAM) on the encoder's device, in float32 (the low-precision result upcast; see :meth:`__call__`).
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        dtype: torch.dtype | str | None = "auto",
        compile: bool = False,
        compile_mode: str | None = None,
    ) -> None:
        self.image_encoder = accelerate_encoder(image_encoder).eval()
        for p in self.image_encoder.parameters():
            p.requires_grad_(False)
        if dtype == "auto":
            dtype = torch.bfloat16 if self.device.type == "cuda" else None
        if dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be None, float32, bfloat16 or float16, got {dtype!r}")
        self.dtype: torch.dtype | None = None if dtype == torch.float32 else dtype
        self.compiled = compile
        self._forward: torch.nn.Module = self.image_encoder
        if compile:
            self._forward = torch.compile(self.image_encoder, mode=compile_mode)

    @property
    def device(self) -> torch.device:
        return next(self.image_encoder.parameters()).device

    @property
    def module(self) -> torch.nn.Module:
        """The encoder as it runs: the ``torch.compile`` wrapper when compiled, else the module itself."""
        return self._forward

    @property
    def precision(self) -> str:
        """A short tag of the numerics, part of an embedding cache's key: ``sdpa-fp32``, ``sdpa-bf16``."""
        names = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
        return f"sdpa-{names[self.dtype]}"

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        """[B, 3, S, S] -> [B, 256, h, w] float32 embeddings (computed in ``dtype``)."""
        images = images.to(self.device, non_blocking=True)
        with self._autocast():
            return self._forward(images).float()
