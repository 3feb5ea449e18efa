"""TeacherTokens: parity with segment-anything's prompt encoder, batching, freezing, precision."""

import pytest
import torch

from wps_sam.sam.backbones import build_sam
from wps_sam.sam.teacher import TeacherTokens


def random_boxes(n: int, size: int = 256) -> torch.Tensor:
    """n XYXY boxes in pixels of a size x size input frame."""
    corners = torch.rand(n, 2, 2) * size
    return torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=1)


@pytest.fixture
def teacher(mini_sam) -> TeacherTokens:
    return TeacherTokens(mini_sam.prompt_encoder)


def test_box_tokens_match_segment_anything(teacher, mini_sam):
    boxes = random_boxes(5)
    expected, _ = mini_sam.prompt_encoder(points=None, boxes=boxes, masks=None)
    tokens = teacher(boxes=boxes)
    assert tokens.shape == (5, 2, 256) and tokens.dtype == torch.float32
    torch.testing.assert_close(tokens, expected, rtol=0, atol=0)


def test_point_tokens_match_segment_anything(teacher, mini_sam):
    points = torch.rand(5, 2) * 256
    expected, _ = mini_sam.prompt_encoder(points=(points[:, None], torch.ones(5, 1)), boxes=None, masks=None)
    tokens = teacher(points=points)
    assert tokens.shape == (5, 2, 256)
    torch.testing.assert_close(tokens, expected, rtol=0, atol=0)
    # The second token is SAM's padding token, the same for every point.
    torch.testing.assert_close(tokens[:, 1], tokens[:1, 1].expand(5, -1))


@pytest.mark.parametrize("kind", ["boxes", "points"])
def test_batched_equals_per_prompt(teacher, kind):
    prompts = random_boxes(7) if kind == "boxes" else torch.rand(7, 2) * 256
    batched = teacher(**{kind: prompts})
    single = torch.cat([teacher(**{kind: prompts[i : i + 1]}) for i in range(7)])
    torch.testing.assert_close(batched, single)


@pytest.mark.parametrize("kind,width", [("boxes", 4), ("points", 2)])
def test_no_prompts_give_empty_tokens(teacher, kind, width):
    tokens = teacher(**{kind: torch.zeros(0, width)})
    assert tokens.shape == (0, 2, 256) and tokens.dtype == torch.float32


def test_exactly_one_prompt_kind(teacher):
    with pytest.raises(ValueError, match="exactly one"):
        teacher()
    with pytest.raises(ValueError, match="exactly one"):
        teacher(boxes=random_boxes(2), points=torch.rand(2, 2))
    with pytest.raises(ValueError, match="Nx4"):
        teacher(boxes=torch.rand(2, 2))


def test_frozen_in_code():
    with pytest.warns(UserWarning, match="random weights"):
        sam = build_sam("tiny", "random", frozen=False)
    teacher = TeacherTokens(sam.prompt_encoder).train()
    assert not teacher.training and not teacher.prompt_encoder.training
    assert not any(p.requires_grad for p in sam.prompt_encoder.parameters())
    boxes = random_boxes(3).requires_grad_()
    tokens = teacher(boxes=boxes)
    assert not tokens.requires_grad
    assert all(p.grad is None for p in sam.prompt_encoder.parameters())


def test_float32_under_bf16_autocast(teacher):
    boxes, points = random_boxes(4), torch.rand(4, 2) * 256
    with torch.autocast("cpu", dtype=torch.bfloat16):
        box_tokens, point_tokens = teacher(boxes=boxes), teacher(points=points)
    assert box_tokens.dtype == point_tokens.dtype == torch.float32
    # Computed in float32, not merely cast to it: bf16 Fourier features would be far off.
    torch.testing.assert_close(box_tokens, teacher(boxes=boxes))
    torch.testing.assert_close(point_tokens, teacher(points=points))
