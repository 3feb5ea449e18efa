"""The prompter and its transformer: shapes, gradients, input checks, attention parity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wps_sam.config import PrompterConfig
from wps_sam.modeling.prompter import Prompter, build_prompter, default_num_downsample
from wps_sam.modeling.transformer import Attention, Transformer

NUM_CLASSES = 4
SMALL = dict(num_queries=5, hidden_dim=64, nheads=4, enc_layers=2, dec_layers=2, dim_feedforward=128)


@pytest.mark.parametrize(
    ("embed_size", "num_downsample", "grid"),
    [((64, 64), 2, (16, 16)), ((16, 16), 0, (16, 16))],  # vit_b/l/h-like and tiny-like
)
def test_output_shapes(embed_size: tuple[int, int], num_downsample: int, grid: tuple[int, int]) -> None:
    torch.manual_seed(0)
    prompter = Prompter(NUM_CLASSES, embed_size=embed_size, **SMALL)
    assert default_num_downsample(embed_size) == num_downsample
    assert prompter.grid_size == grid
    assert tuple(prompter.pos_embed.shape) == (1, 64, *grid)
    convs = [m for m in prompter.neck if isinstance(m, nn.Conv2d)]
    # Two stride-2 convs, or a 1x1 projection 256 -> 64 when there is nothing to downsample.
    assert [c.stride for c in convs] == ([(2, 2)] * 2 if num_downsample else [(1, 1)])

    out = prompter(torch.randn(2, 256, *embed_size))
    assert set(out) == {"pred_logits", "pred_tokens"}
    assert out["pred_logits"].shape == (2, 5, NUM_CLASSES + 1)
    assert out["pred_tokens"].shape == (2, 5, 2, 256)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    prompter = Prompter(NUM_CLASSES, embed_size=(64, 64), **SMALL)
    with torch.no_grad():  # leave the zero biases of the initialisation, as after a training step
        for p in prompter.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    out = prompter(torch.randn(2, 256, 64, 64))
    # Random projections: a plain sum of LayerNorm-ed features has no gradient.
    loss = (out["pred_logits"] * torch.randn_like(out["pred_logits"])).sum()
    loss = loss + (out["pred_tokens"] * torch.randn_like(out["pred_tokens"])).sum()
    loss.backward()
    # DETR's decoder starts from zero targets, so its first self-attention attends over equal (zero)
    # values: its output is the value bias whatever the weights, and its input projections never get
    # a gradient (beyond rounding). The same holds in DETR and in the official prompter.
    dead = "transformer.decoder.layers.0.self_attn.in_proj_weight"
    for name, p in prompter.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert name == dead or p.grad.abs().sum() > 1e-6, name


def test_pre_norm_and_no_encoder() -> None:
    torch.manual_seed(0)
    prompter = Prompter(NUM_CLASSES, embed_size=(16, 16), **{**SMALL, "enc_layers": 0}, pre_norm=True)
    assert len(prompter.transformer.encoder.layers) == 0
    assert prompter.transformer.encoder.norm is not None  # DETR: pre-norm adds a final encoder norm
    out = prompter(torch.randn(1, 256, 16, 16))
    assert out["pred_tokens"].shape == (1, 5, 2, 256)


def test_wrong_embedding_raises() -> None:
    prompter = Prompter(NUM_CLASSES, embed_size=(64, 64), **SMALL)
    with pytest.raises(ValueError, match="64x64 image embedding"):
        prompter(torch.randn(1, 256, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, 256, H, W\]"):
        prompter(torch.randn(1, 128, 64, 64))


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="divisible"):
        Prompter(NUM_CLASSES, hidden_dim=60, nheads=8)
    with pytest.raises(ValueError, match="num_decoder_layers"):
        Transformer(d_model=32, nhead=4, num_decoder_layers=0)


def test_build_prompter_from_config() -> None:
    cfg = PrompterConfig(
        num_queries=3, hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1, dim_feedforward=64
    )
    prompter = build_prompter(cfg, num_classes=7, embed_size=(64, 64))
    assert prompter.grid_size == (16, 16)
    assert prompter.query_embed.num_embeddings == 3
    out = prompter(torch.randn(1, 256, 64, 64))
    assert out["pred_logits"].shape == (1, 3, 8)
    assert out["pred_tokens"].shape == (1, 3, 2, 256)


def test_attention_matches_multihead_attention() -> None:
    torch.manual_seed(0)
    ours = Attention(32, 4)
    nn.init.normal_(ours.in_proj_bias)
    reference = nn.MultiheadAttention(32, 4, batch_first=True)
    # Same parameter names and shapes: the state dicts are interchangeable.
    reference.load_state_dict(ours.state_dict())
    q, kv = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    torch.testing.assert_close(ours(q, kv, kv), reference(q, kv, kv, need_weights=False)[0])


def test_transformer_intermediate_outputs() -> None:
    torch.manual_seed(0)
    transformer = Transformer(
        d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=3, dim_feedforward=64
    )
    src, pos, queries = torch.randn(2, 32, 4, 4), torch.randn(1, 32, 4, 4), torch.randn(5, 32)
    last = transformer(src, pos, queries)
    transformer.decoder.return_intermediate = True
    stacked = transformer(src, pos, queries)
    assert last.shape == (2, 5, 32) and stacked.shape == (3, 2, 5, 32)
    torch.testing.assert_close(stacked[-1], last)
