"""The WPS-SAM prompter: SAM's image embedding in, part classes and SAM prompt tokens out.

Architecture of the official WPS-SAM code (``model_reproductive.py``): stride-2 convolutions shrink
SAM's 64x64 embedding to 16x16, a DETR transformer (:mod:`.transformer`) decodes learned queries
against it with a learned positional embedding, and two heads read each query: a class over the
part classes plus "no part", and the sparse prompt tokens that SAM's mask decoder takes in place of
the tokens its prompt encoder would make from a box or a point.

Parameter names follow the official ones where the structure is the same, so an official
checkpoint remaps by prefix: ``conv_layers.`` -> ``neck.``, ``prompter.`` -> ``transformer.``,
``coords_embed.`` -> ``token_embed.`` (``pos_embed``, ``query_embed``, ``class_embed`` unchanged).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .transformer import Transformer

if TYPE_CHECKING:
    from ..config import PrompterConfig

# The grid the transformer attends over is at most this many cells on a side (16x16 in the paper).
MAX_GRID_SIDE = 16
# SAM's prompt-embedding width: the channels of its image embedding and of its prompt tokens.
SAM_EMBED_DIM = 256


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a [B, C, H, W] map (segment-anything's, eps 1e-6).

    Defined here rather than imported so that the prompter does not pull in segment_anything (and
    torchvision) on import; the parameters are named as SAM's and the official prompter's.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def default_num_downsample(embed_size: tuple[int, int]) -> int:
    """Stride-2 convolutions needed to bring ``embed_size`` to at most 16x16 (2 for 64x64, 0 for 16x16)."""
    n, side = 0, max(embed_size)
    while side > MAX_GRID_SIDE:
        side, n = math.ceil(side / 2), n + 1
    return n


class Prompter(nn.Module):
    """Predicts ``num_queries`` (class, prompt tokens) pairs from a SAM image embedding.

    Args:
        num_classes: number of part classes C; the class head has C + 1 outputs, the last "no part".
        embed_dim: channels of SAM's image embedding (256).
        embed_size: (H, W) of SAM's image embedding: 64x64 for vit_b/l/h, 16x16 for tiny.
        num_queries: Q, the number of part proposals per image.
        hidden_dim: width D of the transformer.
        nheads: attention heads.
        enc_layers: transformer encoder depth (may be 0).
        dec_layers: transformer decoder depth.
        dim_feedforward: FFN width in the transformer.
        dropout: dropout in the transformer.
        pre_norm: pre-norm transformer layers (post-norm, DETR's default, if False).
        num_tokens: T, sparse prompt tokens per query (2: a box makes two corner tokens).
        token_dim: width of each prompt token (SAM's prompt embedding width, 256).
        num_downsample: stride-2 convolutions (3x3, LayerNorm2d, GELU) before the transformer;
            ``None`` for as many as bring the grid to at most 16x16.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int = SAM_EMBED_DIM,
        embed_size: tuple[int, int] = (64, 64),
        num_queries: int = 25,
        hidden_dim: int = 256,
        nheads: int = 8,
        enc_layers: int = 6,
        dec_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.0,
        pre_norm: bool = False,
        num_tokens: int = 2,
        token_dim: int = SAM_EMBED_DIM,
        num_downsample: int | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1 or num_queries < 1 or num_tokens < 1:
            raise ValueError(
                f"num_classes, num_queries and num_tokens must be positive, "
                f"got {num_classes}, {num_queries}, {num_tokens}"
            )
        if hidden_dim % nheads:
            raise ValueError(f"hidden_dim ({hidden_dim}) must be divisible by nheads ({nheads})")
        if num_downsample is None:
            num_downsample = default_num_downsample(embed_size)
        if num_downsample < 0:
            raise ValueError(f"num_downsample must be >= 0 or None, got {num_downsample}")

        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.embed_size = tuple(embed_size)
        self.num_queries = num_queries
        self.num_tokens = num_tokens
        self.token_dim = token_dim

        layers: list[nn.Module] = []
        grid = self.embed_size
        for i in range(num_downsample):
            in_dim = embed_dim if i == 0 else hidden_dim
            layers += [
                nn.Conv2d(in_dim, hidden_dim, kernel_size=3, stride=2, padding=1),
                LayerNorm2d(hidden_dim),
                nn.GELU(),
            ]
            grid = ((grid[0] + 1) // 2, (grid[1] + 1) // 2)
        if num_downsample == 0 and embed_dim != hidden_dim:
            layers.append(nn.Conv2d(embed_dim, hidden_dim, kernel_size=1))
        self.neck = nn.Sequential(*layers)
        self.grid_size = grid

        self.transformer = Transformer(
            d_model=hidden_dim,
            nhead=nheads,
            num_encoder_layers=enc_layers,
            num_decoder_layers=dec_layers,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            normalize_before=pre_norm,
        )
        # Learned, as in the official code (DETR's sine embedding would also do).
        self.pos_embed = nn.Parameter(torch.zeros(1, hidden_dim, *grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.token_embed = nn.Sequential(
            nn.Linear(hidden_dim, 2 * hidden_dim),
            nn.GELU(),
            nn.Linear(2 * hidden_dim, num_tokens * token_dim),
        )

    def forward(self, image_embeddings: Tensor) -> dict[str, Tensor]:
        """Predict classes and prompt tokens for every query.

        Args:
            image_embeddings: SAM's image embedding [B, embed_dim, H, W] with (H, W) == ``embed_size``.

        Returns:
            ``{"pred_logits": [B, Q, C + 1], "pred_tokens": [B, Q, T, token_dim]}``; index C of the
            logits is "no part".
        """
        if image_embeddings.dim() != 4 or image_embeddings.shape[1] != self.embed_dim:
            raise ValueError(
                f"Prompter expects an image embedding [B, {self.embed_dim}, H, W], "
                f"got shape {tuple(image_embeddings.shape)}"
            )
        size = tuple(image_embeddings.shape[-2:])
        if size != self.embed_size:
            raise ValueError(
                f"Prompter was built for a {self.embed_size[0]}x{self.embed_size[1]} image embedding "
                f"(a {self.grid_size[0]}x{self.grid_size[1]} learned positional embedding after "
                f"downsampling) but got {size[0]}x{size[1]}; build it with embed_size={size} "
                "for this SAM"
            )
        src = self.neck(image_embeddings)  # [B, D, h, w]
        hs = self.transformer(src, self.pos_embed, self.query_embed.weight)  # [B, Q, D]
        tokens = self.token_embed(hs)
        return {
            "pred_logits": self.class_embed(hs),
            "pred_tokens": tokens.view(*hs.shape[:2], self.num_tokens, self.token_dim),
        }


def build_prompter(cfg: PrompterConfig, num_classes: int, embed_size: tuple[int, int]) -> Prompter:
    """The prompter for ``num_classes`` part classes on a SAM whose image embedding is ``embed_size``."""
    return Prompter(
        num_classes=num_classes,
        embed_size=embed_size,
        num_queries=cfg.num_queries,
        hidden_dim=cfg.hidden_dim,
        nheads=cfg.nheads,
        enc_layers=cfg.enc_layers,
        dec_layers=cfg.dec_layers,
        dim_feedforward=cfg.dim_feedforward,
        dropout=cfg.dropout,
        pre_norm=cfg.pre_norm,
        num_tokens=cfg.num_tokens,
        num_downsample=cfg.num_downsample,
    )
