"""The tiny SAM's image encoder: a small residual CNN with global attention and a feature pyramid.

SAM's mask decoder works behind any encoder that hands it a 256-channel embedding (MobileSAM's
TinyViT, EfficientViT-SAM); what the tiny SAM needs is an encoder that learns fast per CPU FLOP and
keeps enough resolution for crisp part masks. So: ResNet basic blocks (He et al. 2016) at strides
4, 8, 16 and 32, two transformer layers over the stride-32 grid for image-wide context, a top-down
feature pyramid (Lin et al. 2017) back to stride 8, and SAM's own neck (1x1 conv, LayerNorm2d, 3x3
conv, LayerNorm2d). A 256 px input gives a 32x32 embedding, so SAM's decoder makes 128x128 masks
(the official ViTs: 64x64 embedding and 256x256 masks from 1024 px).

Like segment-anything's ``ImageEncoderViT`` it exposes ``img_size``, so ``Sam`` and ``SamPredictor``
use it unchanged.
"""

from __future__ import annotations

import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import Tensor, nn

# Output stride of the embedding: 256 px -> 32x32.
EMBED_STRIDE = 8


def _conv_bn(in_chans: int, out_chans: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_chans, out_chans, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_chans),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity shortcut: [B, C, H, W] -> same."""

    def __init__(self, chans: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(chans, chans)
        self.conv2 = _conv_bn(chans, chans, relu=False)
        nn.init.zeros_(self.conv2[1].weight)  # each block starts as the identity (Goyal et al. 2017)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.conv2(self.conv1(x)))


class GlobalAttentionBlock(nn.Module):
    """A pre-norm transformer layer over every cell of a [B, C, H, W] grid.

    A depthwise 3x3 convolution adds position (CPVT's conditional encoding), so the block works at any
    input size.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.pos(x)
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        q, k, v = self.qkv(self.norm1(t)).view(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        t = t + self.proj(attn)
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, h, w)


class ConvImageEncoder(nn.Module):
    """[B, 3, S, S] normalised images (SAM's ``preprocess``) -> [B, out_chans, S/8, S/8] embeddings.

    Args:
        img_size: side S of the (square, padded) input, as ``ImageEncoderViT.img_size``.
        widths: channels of the stem (stride 2) and of the four stages (strides 4, 8, 16, 32).
        depths: basic blocks in each of the four stages.
        attn_layers: transformer layers over the stride-32 grid.
        num_heads: their attention heads.
        fpn_dim: width of the feature pyramid.
        out_chans: channels of the embedding (SAM's prompt width, 256).
        embed_stride: 8 (the tiny SAM), or 16: the same pyramid average-pooled to half the grid (an
            ablation of the embedding's resolution, ``[B, out_chans, S/16, S/16]``).
    """

    def __init__(
        self,
        img_size: int = 256,
        widths: tuple[int, int, int, int, int] = (32, 64, 128, 192, 256),
        depths: tuple[int, int, int, int] = (1, 2, 2, 1),
        attn_layers: int = 2,
        num_heads: int = 8,
        fpn_dim: int = 128,
        out_chans: int = 256,
        embed_stride: int = EMBED_STRIDE,
    ) -> None:
        super().__init__()
        if img_size % 32:
            raise ValueError(f"img_size must be a multiple of 32, got {img_size}")
        if embed_stride not in (8, 16):
            raise ValueError(f"embed_stride must be 8 or 16, got {embed_stride}")
        self.img_size, self.embed_stride = img_size, embed_stride
        self.stem = _conv_bn(3, widths[0], stride=2)
        self.stages = nn.ModuleList(
            nn.Sequential(
                _conv_bn(widths[i], widths[i + 1], stride=2), *(BasicBlock(widths[i + 1]) for _ in range(d))
            )
            for i, d in enumerate(depths)
        )
        self.context = nn.Sequential(
            *(GlobalAttentionBlock(widths[4], num_heads) for _ in range(attn_layers))
        )
        # Top-down pyramid: stride 32 -> 16 -> 8, plus the stride-4 detail folded into stride 8.
        self.lateral = nn.ModuleList(nn.Conv2d(widths[i], fpn_dim, 1) for i in (2, 3, 4))
        self.detail = nn.Conv2d(widths[1], fpn_dim, 3, stride=2, padding=1)
        self.smooth = _conv_bn(fpn_dim, fpn_dim)
        self.neck = nn.Sequential(
            nn.Conv2d(fpn_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        s4, s8, s16, s32 = feats
        s32 = self.context(s32)
        p = self.lateral[2](s32)
        p = self.lateral[1](s16) + F.interpolate(p, size=s16.shape[-2:], mode="bilinear", align_corners=False)
        p = self.lateral[0](s8) + F.interpolate(p, size=s8.shape[-2:], mode="bilinear", align_corners=False)
        p = self.smooth(p + self.detail(s4))
        if self.embed_stride == 16:
            p = F.avg_pool2d(p, 2)
        return self.neck(p)
