"""SamTransform: SAM's preprocessing, and round trips between the original and input frames."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide

from wps_sam.data.transforms import PIXEL_MEAN, PIXEL_STD, SamTransform

SIZES = [(30, 50), (50, 30), (40, 40), (97, 13), (200, 150)]  # landscape, portrait, square, thin, downscale
S = 64


def _sam_way(image: np.ndarray, image_size: int) -> torch.Tensor:
    """segment-anything's path by hand: ResizeLongestSide, normalise, pad bottom/right."""
    resized = ResizeLongestSide(image_size).apply_image(image)
    x = torch.as_tensor(resized).permute(2, 0, 1).float()
    x = (x - torch.tensor(PIXEL_MEAN).view(3, 1, 1)) / torch.tensor(PIXEL_STD).view(3, 1, 1)
    return F.pad(x, (0, image_size - x.shape[2], 0, image_size - x.shape[1]))


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / max(1, float((a | b).sum()))


@pytest.mark.parametrize("size", SIZES)
def test_input_size_matches_segment_anything(size):
    assert SamTransform(S).input_size(size) == ResizeLongestSide.get_preprocess_shape(*size, S)


@pytest.mark.parametrize("size", SIZES)
def test_apply_image_equals_sam_preprocessing(size):
    image = np.random.default_rng(0).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    out = SamTransform(S).apply_image(image)
    assert out.shape == (3, S, S) and out.dtype == torch.float32
    torch.testing.assert_close(out, _sam_way(image, S), rtol=0, atol=1e-5)
    h, w = SamTransform(S).input_size(size)
    assert (out[:, h:, :] == 0).all() and (out[:, :, w:] == 0).all()


def test_apply_image_equals_sam_preprocess_module(mini_sam):
    size = mini_sam.image_encoder.img_size
    image = np.random.default_rng(1).integers(0, 256, size=(37, 52, 3), dtype=np.uint8)
    resized = torch.as_tensor(ResizeLongestSide(size).apply_image(image)).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        expected = mini_sam.preprocess(resized)[0]
    torch.testing.assert_close(SamTransform(size).apply_image(image), expected, rtol=0, atol=1e-5)


def test_apply_image_rejects_wrong_input():
    with pytest.raises(ValueError, match="uint8"):
        SamTransform(S).apply_image(np.zeros((4, 4, 3), dtype=np.float32))


@pytest.mark.parametrize("size", SIZES)
def test_boxes_and_points_match_segment_anything_and_round_trip(size):
    t = SamTransform(S)
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 1, size=(6, 2)) * [size[1], size[0]]
    boxes = np.concatenate([xy[:3], xy[:3] + rng.uniform(1, 5, size=(3, 2))], axis=1)
    np.testing.assert_allclose(
        t.apply_boxes(boxes, size), ResizeLongestSide(S).apply_boxes(boxes, size), atol=1e-4
    )
    np.testing.assert_allclose(
        t.apply_points(xy, size), ResizeLongestSide(S).apply_coords(xy, size), atol=1e-4
    )
    np.testing.assert_allclose(t.boxes_to_original(t.apply_boxes(boxes, size), size), boxes, atol=1e-3)
    np.testing.assert_allclose(t.points_to_original(t.apply_points(xy, size), size), xy, atol=1e-3)
    corners = np.array([[0.0, 0.0, size[1], size[0]]])
    np.testing.assert_allclose(t.apply_boxes(corners, size), [[0, 0, *t.input_size(size)[::-1]]], atol=1e-4)


def _shapes(size: tuple[int, int]) -> np.ndarray:
    """bool [2, H, W]: a rectangle and a disc, both well above one input pixel."""
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    rect = (yy >= h // 5) & (yy < 3 * h // 4) & (xx >= w // 4) & (xx < 4 * w // 5)
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2
    return np.stack([rect, disc])


@pytest.mark.parametrize("size", [(30, 50), (50, 30), (40, 40), (200, 150)])
def test_masks_round_trip(size):
    t = SamTransform(S)
    masks = _shapes(size)
    inp = t.apply_masks(masks, size)
    assert inp.shape == (2, S, S) and inp.dtype == torch.bool
    h, w = t.input_size(size)
    assert not inp[:, h:, :].any() and not inp[:, :, w:].any()
    back = t.masks_to_original(inp, size)
    assert back.shape == (2, *size) and back.dtype == torch.bool
    for k in range(2):
        assert _iou(back[k], torch.from_numpy(masks[k])) > 0.9
    probs = t.masks_to_original(inp.float(), size)
    assert probs.dtype == torch.float32 and probs.shape == (2, *size)
    for k in range(2):
        assert _iou(probs[k] > 0.5, torch.from_numpy(masks[k])) > 0.9


def test_masks_follow_boxes():
    """The resized mask's extent agrees with the transformed box within one input pixel."""
    size = (30, 50)
    t = SamTransform(S)
    mask = np.zeros((1, *size), dtype=bool)
    mask[0, 6:21, 10:41] = True  # box XYXY (10, 6, 41, 21)
    inp = t.apply_masks(mask, size)[0]
    ys, xs = torch.nonzero(inp, as_tuple=True)
    got = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
    np.testing.assert_allclose(got, t.apply_boxes(np.array([[10, 6, 41, 21]]), size)[0], atol=1.0)


def test_empty_masks():
    t = SamTransform(S)
    assert t.apply_masks(np.zeros((0, 10, 12), dtype=bool), (10, 12)).shape == (0, S, S)
    assert t.masks_to_original(torch.zeros(0, S, S), (10, 12)).shape == (0, 10, 12)
