"""PromptMaskDecoder and the mask post-processing: parity with segment-anything."""

import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from wps_sam.sam.decoder import PromptMaskDecoder, masks_to_frame, masks_to_input_frame


@pytest.fixture
def decoder(mini_sam) -> PromptMaskDecoder:
    return PromptMaskDecoder(mini_sam.prompt_encoder, mini_sam.mask_decoder)


@pytest.mark.parametrize("multimask", [False, True])
def test_batched_equals_segment_anything_per_image(decoder, mini_sam, multimask):
    batch, queries = 2, 3
    embeddings = torch.randn(batch, 256, 16, 16)
    tokens = torch.randn(batch, queries, 2, 256)
    mask_logits, iou_pred = decoder(embeddings, tokens, multimask_output=multimask)

    image_pe = mini_sam.prompt_encoder.get_dense_pe()
    dense = mini_sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(queries, -1, 16, 16)
    expected = [
        mini_sam.mask_decoder(
            image_embeddings=embeddings[i : i + 1],
            image_pe=image_pe,
            sparse_prompt_embeddings=tokens[i],
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        for i in range(batch)
    ]
    expected_masks = torch.stack([masks for masks, _ in expected])  # [B,Q,M,64,64]
    expected_iou = torch.stack([iou for _, iou in expected])  # [B,Q,M]
    if not multimask:
        expected_masks, expected_iou = expected_masks[:, :, 0], expected_iou[:, :, 0]
    assert mask_logits.shape == expected_masks.shape
    assert iou_pred.shape == expected_iou.shape
    torch.testing.assert_close(mask_logits, expected_masks, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(iou_pred, expected_iou, rtol=1e-5, atol=1e-5)


def test_gradients_reach_tokens_not_sam(decoder):
    tokens = torch.randn(2, 3, 2, 256, requires_grad=True)
    decoder.train()
    assert not decoder.training
    mask_logits, iou_pred = decoder(torch.randn(2, 256, 16, 16), tokens)
    (mask_logits.mean() + iou_pred.mean()).backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in decoder.parameters())


def test_token_shape_is_checked(decoder):
    with pytest.raises(ValueError, match="tokens must have shape"):
        decoder(torch.randn(2, 256, 16, 16), torch.randn(3, 4, 2, 256))


def test_masks_to_frame_matches_postprocess_masks(mini_sam):
    original_size = (300, 200)  # (H, W), portrait: the padding is on the right
    input_size = ResizeLongestSide(256).get_preprocess_shape(*original_size, 256)
    mask_logits = torch.randn(2, 4, 3, 64, 64)
    frame = masks_to_frame(mask_logits, 256, input_size, original_size)
    expected = mini_sam.postprocess_masks(mask_logits.flatten(0, 1), input_size, original_size)
    assert frame.shape == (2, 4, 3, 300, 200)
    torch.testing.assert_close(frame, expected.reshape(2, 4, 3, 300, 200))


def test_masks_to_input_frame_keeps_the_padding():
    mask_logits = torch.randn(5, 64, 64)
    square = masks_to_input_frame(mask_logits, 256)
    assert square.shape == (5, 256, 256)
    torch.testing.assert_close(square, masks_to_frame(mask_logits, 256, (256, 256), (256, 256)))
    assert masks_to_frame(torch.zeros(0, 64, 64), 256, (256, 171), (300, 200)).shape == (0, 300, 200)


@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize("per_call", [1, 2, 5])
def test_calls_of_a_few_prompts_give_the_one_call_values(mini_sam, multimask, per_call):
    embeddings = torch.randn(3, 256, 16, 16)
    tokens = torch.randn(3, 4, 2, 256)
    one_call = PromptMaskDecoder(mini_sam.prompt_encoder, mini_sam.mask_decoder, cpu_prompts_per_call=12)
    chunked = PromptMaskDecoder(mini_sam.prompt_encoder, mini_sam.mask_decoder, cpu_prompts_per_call=per_call)
    expected_masks, expected_iou = one_call(embeddings, tokens, multimask_output=multimask)
    mask_logits, iou_pred = chunked(embeddings, tokens, multimask_output=multimask)
    assert mask_logits.shape == expected_masks.shape and iou_pred.shape == expected_iou.shape
    torch.testing.assert_close(mask_logits, expected_masks, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(iou_pred, expected_iou, rtol=1e-5, atol=1e-5)


def test_gradients_reach_tokens_through_every_call(mini_sam):
    decoder = PromptMaskDecoder(mini_sam.prompt_encoder, mini_sam.mask_decoder, cpu_prompts_per_call=2)
    tokens = torch.randn(2, 3, 2, 256, requires_grad=True)
    mask_logits, _ = decoder(torch.randn(2, 256, 16, 16), tokens)
    mask_logits.sum().backward()
    assert (tokens.grad.flatten(2).abs().sum(-1) > 0).all()  # every prompt of every image


def test_prompts_per_call_must_be_positive(mini_sam):
    with pytest.raises(ValueError, match="cpu_prompts_per_call"):
        PromptMaskDecoder(mini_sam.prompt_encoder, mini_sam.mask_decoder, cpu_prompts_per_call=0)
