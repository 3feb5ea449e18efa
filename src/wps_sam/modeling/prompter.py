"""The WPS-SAM prompter: SAM's image embedding in, part classes and SAM prompt tokens out.

Architecture of the official WPS-SAM code (``model_reproductive.py``): stride-2 convolutions shrink
SAM's 64x64 embedding to 16x16, a DETR transformer (:mod:`.transformer`) decodes learned queries
against it with a learned positional embedding, and two heads read each query: a class over the
part classes plus "no part", and the sparse prompt tokens that SAM's mask decoder takes in place of
the tokens its prompt encoder would make from a box or a point.

Parameter names follow the official ones where the structure is the same, so an official
checkpoint remaps by prefix: ``conv_layers.`` -> ``neck.``, ``prompter.`` -> ``transformer.``,
``coords_embed.`` -> ``token_embed.`` (``pos_embed``, ``query_embed``, ``class_embed`` unchanged).

The faster recipes switch on remedies for DETR's slow convergence (:class:`~.queries.QueryRecipe`):
per-layer outputs for auxiliary losses, per-query geometry refined layer by layer, two-stage query
selection (:mod:`.proposals`), query groups and denoising queries; with every switch off the
computation is the paper's, operation for operation.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .geometry import GEOMETRY_DIMS, inverse_sigmoid, sine_embedding
from .proposals import EncoderProposals
from .queries import DenoisingQueries, QueryRecipe, group_attention_mask
from .standardize import InputStandardizer
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


def _token_head(hidden_dim: int, token_values: int) -> nn.Sequential:
    """The official token head: query [.., D] -> [.., T * token_dim] prompt-token values."""
    return nn.Sequential(
        nn.Linear(hidden_dim, 2 * hidden_dim), nn.GELU(), nn.Linear(2 * hidden_dim, token_values)
    )


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
        recipe: the convergence remedies switched on (default: none, the paper's prompter).
        point_head: mixed supervision: a second token head per query, the tokens of its part's
            point (``"pred_point_tokens"``) beside the box head's (``"pred_tokens"``); only with
            the paper's token head (no geometry, two-stage or denoising queries).
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
        recipe: QueryRecipe = QueryRecipe(),
        point_head: bool = False,
    ) -> None:
        super().__init__()
        if point_head and (recipe.geometry is not None or recipe.two_stage or recipe.denoising):
            raise ValueError("point_head needs the paper's token head: no geometry, two_stage or denoising")
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
        if not recipe.uses_anchors:  # the paper's learned query positions (one set per group)
            self.query_embed = nn.Embedding(num_queries * recipe.groups, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        if recipe.geometry is None:  # the paper's token head
            self.token_embed = _token_head(hidden_dim, num_tokens * token_dim)
        if point_head:
            self.point_token_embed = _token_head(hidden_dim, num_tokens * token_dim)
        self.has_point_head = point_head
        self.recipe = recipe
        self._build_recipe(recipe, hidden_dim, num_classes, num_tokens * token_dim, dec_layers)

    def _build_recipe(
        self, recipe: QueryRecipe, hidden_dim: int, num_classes: int, token_values: int, dec_layers: int
    ) -> None:
        """The modules of the switches that are on (none for the paper's prompter)."""
        kind = recipe.parts  # the geometry of the head, the proposals and the denoising anchors
        dims = GEOMETRY_DIMS[kind]
        if recipe.standardize_input:
            self.standardizer = InputStandardizer(self.embed_dim)
        if recipe.uses_anchors:
            # A query's position is the sine embedding of its anchor; its content starts learned.
            self.anchor_pos = nn.Sequential(
                nn.Linear(dims * hidden_dim // 2, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim)
            )
            self.query_content = nn.Embedding(self.num_queries * recipe.groups, hidden_dim)
        if recipe.geometry is not None and not recipe.two_stage:
            # Learned anchors, spread over the frame (uniform centres; boxes a fifth of the side).
            anchors = torch.rand(self.num_queries * recipe.groups, dims)
            if dims == 4:
                anchors[:, 2:] = 0.2
            self.query_anchor = nn.Parameter(inverse_sigmoid(anchors))
        if recipe.two_stage:
            self.proposals = EncoderProposals(hidden_dim, num_classes, kind, self.grid_size)
        if recipe.geometry is not None:
            # One refinement head per decoder layer; the tokens' residual over SAM's own tokens
            # starts at zero, so a query's tokens start as SAM's tokens of its geometry.
            self.geometry_embed = nn.ModuleList(
                nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, dims))
                for _ in range(dec_layers)
            )
            for head in self.geometry_embed:
                nn.init.zeros_(head[-1].weight)
                nn.init.zeros_(head[-1].bias)
            self.token_residual = nn.Sequential(
                nn.Linear(hidden_dim, 2 * hidden_dim), nn.GELU(), nn.Linear(2 * hidden_dim, token_values)
            )
            nn.init.zeros_(self.token_residual[-1].weight)
            nn.init.zeros_(self.token_residual[-1].bias)
        if recipe.denoising:
            self.dn_label_embed = nn.Embedding(num_classes, hidden_dim)
            self.dn_token_proj = nn.Linear(token_values, hidden_dim)

    @property
    def standardizes_input(self) -> bool:
        return self.recipe.standardize_input

    @torch.no_grad()
    def set_input_stats(self, mean: Tensor, std: Tensor) -> None:
        """Per-channel mean and std [embed_dim] of the training embeddings (``standardize_input``)."""
        if not self.recipe.standardize_input:
            raise ValueError("set_input_stats: the prompter was built without standardize_input")
        self.standardizer.set_stats(mean, std)

    def forward(self, image_embeddings: Tensor, denoising: DenoisingQueries | None = None) -> dict:
        """Predict classes and prompt tokens (or geometry) for every query.

        Args:
            image_embeddings: SAM's image embedding [B, embed_dim, H, W] with (H, W) == ``embed_size``.
            denoising: noised ground truth for denoising queries (training with ``recipe.denoising``).

        Returns:
            The last decoder layer's outputs for the Q queries (Q x groups in training):
            ``"pred_logits"`` [B, Q, C + 1] (index C is "no part") and either ``"pred_tokens"``
            [B, Q, T, token_dim] (the paper's token head) or ``"pred_geometry"`` [B, Q, G] with
            ``"pred_token_residual"`` [B, Q, T, token_dim] (``recipe.geometry``: the tokens are SAM's
            tokens of that geometry plus the residual; :meth:`WPSSAM.complete_tokens` adds them);
            with ``point_head`` also ``"pred_point_tokens"`` [B, Q, T, token_dim].
            With the recipe's switches also ``"aux_outputs"`` (the earlier layers, same keys),
            ``"enc_outputs"`` (two-stage proposals: ``"pred_logits"`` [B, HW, C + 1],
            ``"pred_geometry"`` [B, HW, G], the cells' ``"anchors"`` and the ``"grid"``) and ``"dn_outputs"`` (the denoising queries, same keys,
            with their own ``"aux_outputs"``).
        """
        self._check_input(image_embeddings)
        recipe = self.recipe
        x = image_embeddings
        if recipe.standardize_input:
            x = self.standardizer(x)
        memory, pos = self.transformer.encode(self.neck(x), self.pos_embed)  # [B, HW, D]
        groups = recipe.groups if self.training else 1
        queries, out = self._matching_queries(memory, groups)
        sizes = [self.num_queries] * groups
        if denoising is not None:
            if not recipe.denoising:
                raise ValueError("denoising queries given to a prompter built without recipe.denoising")
            dn = self._denoising_queries(denoising)
            queries = {k: torch.cat([queries[k], dn[k]], dim=1) for k in queries}
            sizes += [denoising.per_group] * denoising.groups
        mask = group_attention_mask(sizes, memory.device) if len(sizes) > 1 else None
        layers = self._decode(memory, pos, queries, mask)
        matching = self.num_queries * groups
        out |= self._outputs([{k: v[:, :matching] for k, v in layer.items()} for layer in layers])
        if denoising is not None:
            out["dn_outputs"] = self._outputs(
                [{k: v[:, matching:] for k, v in layer.items()} for layer in layers]
            )
        return out

    def _check_input(self, image_embeddings: Tensor) -> None:
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

    def _matching_queries(self, memory: Tensor, groups: int) -> tuple[dict[str, Tensor], dict]:
        """The matching queries' ``content`` [B, N, D] and ``pos`` [B, N, D] (learned) or ``anchor``
        [B, N, G] (anchored recipes), and the two-stage proposals' outputs."""
        b, n = memory.shape[0], self.num_queries * groups
        if not self.recipe.uses_anchors:
            content = torch.zeros(b, n, memory.shape[-1], dtype=memory.dtype, device=memory.device)
            pos = self.query_embed.weight[:n][None].expand(b, -1, -1).to(memory.dtype)
            return {"content": content, "pos": pos}, {}
        content = self.query_content.weight[:n][None].expand(b, -1, -1).to(memory.dtype)
        if not self.recipe.two_stage:
            return {"content": content, "anchor": self.query_anchor[:n].sigmoid()[None].expand(b, -1, -1)}, {}
        logits, geometry = self.proposals(memory)
        top = EncoderProposals.select(logits, self.num_queries)  # [B, Q]
        anchor = geometry.gather(1, top[..., None].expand(-1, -1, geometry.shape[-1])).detach()
        anchor = anchor.repeat(1, groups, 1)  # the groups share the proposals, not their content
        enc = {"pred_logits": logits, "pred_geometry": geometry, "anchors": self.proposals.anchors}
        enc = {"enc_outputs": enc | {"grid": self.grid_size}}
        return {"content": content, "anchor": anchor}, enc

    def _denoising_queries(self, dn: DenoisingQueries) -> dict[str, Tensor]:
        """Denoising queries: content from the noised label and SAM's tokens of the noised geometry."""
        tokens = self.dn_token_proj(dn.tokens.flatten(2).to(self.dn_token_proj.weight.dtype))
        content = self.dn_label_embed(dn.labels) + tokens
        if self.recipe.uses_anchors:
            return {"content": content, "anchor": dn.geometry}
        return {"content": torch.zeros_like(content), "pos": content}

    def _decode(
        self, memory: Tensor, pos: Tensor, queries: dict[str, Tensor], mask: Tensor | None
    ) -> list[dict[str, Tensor]]:
        """Run the decoder; per layer the normalised output ``hs`` [B, N, D] (and refined ``geometry``)."""
        decoder = self.transformer.decoder
        tgt, anchor = queries["content"], queries.get("anchor")
        layers = []
        for i, layer in enumerate(decoder.layers):
            query_pos = (
                queries["pos"]
                if anchor is None
                else self.anchor_pos(sine_embedding(anchor, self.transformer.d_model // 2).to(tgt.dtype))
            )
            tgt = layer(tgt, memory, pos, query_pos, mask)
            hs = decoder.norm(tgt)
            step = {"hs": hs}
            if self.recipe.geometry is not None:
                step["geometry"] = (inverse_sigmoid(anchor) + self.geometry_embed[i](hs).float()).sigmoid()
                anchor = step["geometry"].detach()  # Deformable DETR: no gradient through the anchors
            layers.append(step)
        return layers

    def _outputs(self, layers: list[dict[str, Tensor]]) -> dict:
        """Heads on every layer's output; the last layer's are the outputs, the others ``aux_outputs``."""
        heads = [self._heads(layer) for layer in layers]
        out = heads[-1]
        if self.recipe.aux_loss:
            out["aux_outputs"] = heads[:-1]
        return out

    def _heads(self, layer: dict[str, Tensor]) -> dict[str, Tensor]:
        hs = layer["hs"]
        lead = hs.shape[:2]
        out = {"pred_logits": self.class_embed(hs)}
        if self.has_point_head:
            out["pred_point_tokens"] = self.point_token_embed(hs).view(*lead, self.num_tokens, self.token_dim)
        if self.recipe.geometry is None:
            out["pred_tokens"] = self.token_embed(hs).view(*lead, self.num_tokens, self.token_dim)
        else:
            out["pred_geometry"] = layer["geometry"]
            out["pred_token_residual"] = self.token_residual(hs).view(*lead, self.num_tokens, self.token_dim)
        return out


def build_prompter(
    cfg: PrompterConfig, num_classes: int, embed_size: tuple[int, int], supervision: str = "box"
) -> Prompter:
    """The prompter for ``num_classes`` part classes on a SAM whose image embedding is ``embed_size``;
    its geometry head (when ``cfg.geometry_head``) predicts the geometry of ``supervision``; mixed
    supervision gives every query a box and a point token head."""
    parts = "box" if supervision == "mixed" else supervision
    recipe = QueryRecipe(
        aux_loss=cfg.aux_loss,
        geometry=parts if cfg.geometry_head else None,
        two_stage=cfg.two_stage,
        groups=cfg.groups,
        denoising=cfg.dn_groups > 0,
        standardize_input=cfg.standardize_input,
        parts=parts,
    )
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
        recipe=recipe,
        point_head=supervision == "mixed",
    )
