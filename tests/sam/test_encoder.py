"""The fast image encoder: parity with segment-anything's attention, precision budget, weights untouched."""

from __future__ import annotations

import copy
import warnings
from functools import partial

import pytest
import torch
from segment_anything.modeling import ImageEncoderViT
from segment_anything.modeling.image_encoder import Attention, add_decomposed_rel_pos

from wps_sam.sam.backbones import build_sam
from wps_sam.sam.encoder import (
    EncoderRunner,
    SdpaAttention,
    accelerate_encoder,
    decomposed_rel_pos_bias,
    is_accelerated,
    relative_error,
    restore_encoder,
)


@pytest.fixture
def one_thread():
    """One intra-op thread: encoder runs on a shared 2-core CPU stall when threads oversubscribe it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomise_rel_pos(encoder: ImageEncoderViT, std: float) -> ImageEncoderViT:
    """SAM initialises the relative-position tables to zero, which would hide a wrong bias."""
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            if "rel_pos" in name:
                p.normal_(0.0, std)
    return encoder


def tiny_encoder(std: float = 0.5) -> ImageEncoderViT:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return randomise_rel_pos(build_sam("vit_mini", "random").image_encoder, std)


def odd_encoder() -> ImageEncoderViT:
    """Windows that do not tile the 10x10 grid (padding), a global block, non-square windows' tables."""
    torch.manual_seed(1)
    encoder = ImageEncoderViT(
        img_size=160,
        patch_size=16,
        embed_dim=48,
        depth=2,
        num_heads=3,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=4,
        global_attn_indexes=(1,),
        out_chans=32,
    )
    return randomise_rel_pos(encoder.eval(), 0.5)


def test_bias_equals_add_decomposed_rel_pos():
    torch.manual_seed(0)
    q = torch.randn(6, 5 * 7, 16)
    rel_h, rel_w = torch.randn(9, 16), torch.randn(13, 16)
    zeros = torch.zeros(6, 35, 35)
    expected = add_decomposed_rel_pos(zeros, q, rel_h, rel_w, (5, 7), (5, 7))
    torch.testing.assert_close(decomposed_rel_pos_bias(q, rel_h, rel_w, (5, 7), (5, 7)), expected)


@pytest.mark.parametrize("make", [tiny_encoder, odd_encoder], ids=["tiny", "padded-windows"])
def test_fp32_parity_with_segment_anything(make, one_thread):
    encoder = make()
    x = torch.randn(2, 3, encoder.img_size, encoder.img_size)
    with torch.no_grad():
        expected = encoder(x)
        out = accelerate_encoder(encoder)(x)
    assert relative_error(out, expected) < 1e-5
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_within_budget(one_thread):
    """The issue's budget: relative error <= 1e-2 against the official float32 encoder."""
    encoder = tiny_encoder(std=0.1)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        expected = encoder(x)
    runner = EncoderRunner(encoder, dtype=torch.bfloat16)
    out = runner(x)
    assert out.dtype == torch.float32 and out.shape == (1, 256, 16, 16)
    assert runner.precision == "sdpa-bf16"
    err = relative_error(out, expected)
    assert 0 < err <= 1e-2


def test_weights_and_keys_untouched_and_reversible():
    encoder = tiny_encoder()
    before = copy.deepcopy(encoder.state_dict())
    accelerate_encoder(encoder)
    accelerate_encoder(encoder)  # idempotent
    assert is_accelerated(encoder)
    assert all(type(b.attn) is SdpaAttention for b in encoder.blocks)
    after = encoder.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    restore_encoder(encoder)
    assert not is_accelerated(encoder) and type(encoder) is ImageEncoderViT
    assert all(type(b.attn) is Attention for b in encoder.blocks)


def test_runner_defaults_on_cpu():
    runner = EncoderRunner(tiny_encoder())
    assert runner.dtype is None and runner.precision == "sdpa-fp32"  # bf16 only by default on CUDA
    assert not any(p.requires_grad for p in runner.image_encoder.parameters())
    with pytest.raises(ValueError):
        EncoderRunner(tiny_encoder(), dtype=torch.int8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_vit_b_bf16_on_cuda():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        encoder = randomise_rel_pos(build_sam("vit_b", "random").image_encoder, 0.1).cuda()
    x = torch.randn(2, 3, 1024, 1024, device="cuda")
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            expected = encoder(x)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    out = EncoderRunner(encoder)(x)  # bf16 autocast on CUDA
    assert relative_error(out, expected) <= 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_runner_on_cuda():
    encoder = tiny_encoder(std=0.1).cuda()
    x = torch.randn(2, 3, 256, 256, device="cuda")
    with torch.no_grad():
        expected = encoder(x)
    runner = EncoderRunner(encoder, compile=True)
    assert runner.module is not runner.image_encoder and runner.module.img_size == 256
    assert relative_error(runner(x), expected) <= 1e-2
