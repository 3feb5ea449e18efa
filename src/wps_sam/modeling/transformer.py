"""The prompter's encoder-decoder transformer, after DETR (``detr/models/transformer.py``).

Same layers, same order of operations and the same parameter names as DETR (and so as the official
WPS-SAM prompter, which is DETR's transformer), with two changes:

* tensors are batch-first: ``[B, N, D]`` rather than ``[N, B, D]``;
* attention is computed with ``F.scaled_dot_product_attention`` (fused kernels on GPU). Its weights
  are laid out as ``nn.MultiheadAttention``'s (``in_proj_weight``, ``in_proj_bias``, ``out_proj``), so
  DETR-style state dicts load unchanged.

There is no padding mask: the prompter always sees a full, fixed-size grid. The decoder's query
self-attention takes an optional mask (which queries may attend to which): denoising queries and the
query groups of one-to-many training see only their own group.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameters, batch-first.

    Args:
        embed_dim: channel dimension D of queries, keys and values.
        num_heads: number of heads; must divide ``embed_dim``.
        dropout: dropout on the attention weights (training only).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """query [B, Nq, D], key and value [B, Nk, D] -> [B, Nq, D].

        ``attn_mask``: bool [Nq, Nk], True where a query may attend to a key (every query row must
        allow at least one key).
        """
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = self._split_heads(F.linear(query, w_q, b_q))
        k = self._split_heads(F.linear(key, w_k, b_k))
        v = self._split_heads(F.linear(value, w_v, b_v))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        batch, _, num_queries, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, num_queries, self.embed_dim))

    def _split_heads(self, x: Tensor) -> Tensor:
        """[B, N, D] -> [B, heads, N, D / heads]."""
        batch, n, _ = x.shape
        return x.view(batch, n, self.num_heads, self.embed_dim // self.num_heads).transpose(1, 2)


class TransformerEncoderLayer(nn.Module):
    """Self-attention (positions added to queries and keys) and a ReLU FFN; post- or pre-norm."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, normalize_before: bool
    ) -> None:
        super().__init__()
        self.self_attn = Attention(d_model, nhead, dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def _ffn(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        """src [B, HW, D], pos [B or 1, HW, D] -> [B, HW, D]."""
        if self.normalize_before:
            src2 = self.norm1(src)
            q = k = src2 + pos
            src = src + self.dropout1(self.self_attn(q, k, src2))
            return src + self.dropout2(self._ffn(self.norm2(src)))
        q = k = src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(q, k, src)))
        return self.norm2(src + self.dropout2(self._ffn(src)))


class TransformerDecoderLayer(nn.Module):
    """Query self-attention, cross-attention to the memory and a ReLU FFN; post- or pre-norm.

    Query positions are added to the queries (and keys) of the self-attention and to the queries of
    the cross-attention; memory positions to the keys of the cross-attention, as in DETR.
    """

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, normalize_before: bool
    ) -> None:
        super().__init__()
        self.self_attn = Attention(d_model, nhead, dropout)
        self.multihead_attn = Attention(d_model, nhead, dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def _ffn(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        pos: Tensor,
        query_pos: Tensor,
        self_attn_mask: Tensor | None = None,
    ) -> Tensor:
        """tgt [B, Q, D], memory [B, HW, D], pos [B or 1, HW, D], query_pos [B or 1, Q, D] -> [B, Q, D].

        ``self_attn_mask``: bool [Q, Q], which queries each query may attend to (all when None).
        """
        if self.normalize_before:
            tgt2 = self.norm1(tgt)
            q = k = tgt2 + query_pos
            tgt = tgt + self.dropout1(self.self_attn(q, k, tgt2, self_attn_mask))
            tgt2 = self.norm2(tgt)
            tgt = tgt + self.dropout2(self.multihead_attn(tgt2 + query_pos, memory + pos, memory))
            return tgt + self.dropout3(self._ffn(self.norm3(tgt)))
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt, self_attn_mask)))
        tgt = self.norm2(tgt + self.dropout2(self.multihead_attn(tgt + query_pos, memory + pos, memory)))
        return self.norm3(tgt + self.dropout3(self._ffn(tgt)))


class TransformerEncoder(nn.Module):
    """A stack of encoder layers; a final LayerNorm only for pre-norm layers (DETR)."""

    def __init__(self, layer: TransformerEncoderLayer, num_layers: int, norm: nn.Module | None) -> None:
        super().__init__()
        self.layers = _clones(layer, num_layers)
        self.norm = norm

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        """src [B, HW, D], pos [B or 1, HW, D] -> [B, HW, D]."""
        for layer in self.layers:
            src = layer(src, pos)
        return src if self.norm is None else self.norm(src)


class TransformerDecoder(nn.Module):
    """A stack of decoder layers followed by a LayerNorm (DETR)."""

    def __init__(
        self, layer: TransformerDecoderLayer, num_layers: int, norm: nn.Module, return_intermediate: bool
    ) -> None:
        super().__init__()
        self.layers = _clones(layer, num_layers)
        self.norm = norm
        self.return_intermediate = return_intermediate

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor) -> Tensor:
        """tgt [B, Q, D] -> [B, Q, D], or [L, B, Q, D] with ``return_intermediate``."""
        intermediate = []
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos)
            if self.return_intermediate:
                intermediate.append(self.norm(tgt))
        if self.return_intermediate:
            return torch.stack(intermediate)
        return self.norm(tgt)


class Transformer(nn.Module):
    """DETR's encoder-decoder: the encoder refines the feature grid, learned queries decode it.

    Args:
        d_model: channel dimension D.
        nhead: attention heads; must divide ``d_model``.
        num_encoder_layers: encoder depth; may be 0 (the decoder then reads the grid as it is).
        num_decoder_layers: decoder depth (>= 1).
        dim_feedforward: hidden width of the FFNs.
        dropout: dropout in attention and FFNs.
        normalize_before: pre-norm layers (plus a final encoder LayerNorm, as DETR); post-norm if False.
        return_intermediate: return every decoder layer's output (each through the final LayerNorm),
            stacked as [L, B, Q, D], rather than the last one only.
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.0,
        normalize_before: bool = False,
        return_intermediate: bool = False,
    ) -> None:
        super().__init__()
        if num_encoder_layers < 0 or num_decoder_layers < 1:
            raise ValueError(
                "need num_encoder_layers >= 0 and num_decoder_layers >= 1, "
                f"got {num_encoder_layers} and {num_decoder_layers}"
            )
        encoder_layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, normalize_before)
        decoder_layer = TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, normalize_before)
        encoder_norm = nn.LayerNorm(d_model) if normalize_before else None
        self.encoder = TransformerEncoder(encoder_layer, num_encoder_layers, encoder_norm)
        self.decoder = TransformerDecoder(
            decoder_layer, num_decoder_layers, nn.LayerNorm(d_model), return_intermediate
        )
        self.d_model = d_model
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # DETR: Xavier-uniform on every matrix (attention projections and FFN weights).
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def encode(self, src: Tensor, pos_embed: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder's memory [B, HW, D] of a grid ``src`` [B, D, H, W], and the grid's positions
        [B or 1, HW, D] flattened alike (``pos_embed`` [B or 1, D, H, W])."""
        memory = src.flatten(2).transpose(1, 2)
        pos = pos_embed.flatten(2).transpose(1, 2).to(memory.dtype)
        return self.encoder(memory, pos), pos

    def forward(self, src: Tensor, pos_embed: Tensor, query_embed: Tensor) -> Tensor:
        """Decode ``Q`` queries from a feature grid.

        Args:
            src: features [B, D, H, W].
            pos_embed: positional embedding of the grid, [B or 1, D, H, W].
            query_embed: query positions [Q, D]; the decoder's initial targets are zeros (DETR).

        Returns:
            The last decoder layer's output after the final LayerNorm, [B, Q, D];
            [L, B, Q, D] with ``return_intermediate``.
        """
        memory, pos = self.encode(src, pos_embed)
        query_pos = query_embed.unsqueeze(0).to(memory.dtype)  # [1, Q, D]
        tgt = torch.zeros(src.shape[0], *query_embed.shape, dtype=memory.dtype, device=memory.device)
        return self.decoder(tgt, memory, pos, query_pos)


def _clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))
