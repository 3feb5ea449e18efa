"""RoIAlign from interpolation matrices equals torchvision's, values and gradients."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

from wps_sam.modeling.roi_pooling import roi_align_grouped


def _boxes(b: int, k: int, size: int) -> torch.Tensor:
    """[B, K, 4] x1y1x2y2 in cells: ordinary, tiny, empty, partly and wholly outside the map."""
    g = torch.Generator().manual_seed(0)
    centre = torch.rand(b, k, 2, generator=g) * (size + 6) - 3
    half = torch.rand(b, k, 2, generator=g) * size / 3
    half[:, 0] = 0.0  # an empty box
    half[:, 1] = 0.05  # a box far inside one cell
    boxes = torch.cat([centre - half, centre + half], dim=-1)
    boxes[:, 2] = torch.tensor([-size, -size, 2 * size, 2 * size])  # covers the map and beyond
    boxes[:, 3] = torch.tensor([size + 1.5, 0.0, size + 3.0, 2.0])  # beyond the right edge
    return boxes


@pytest.mark.parametrize(("bins", "sampling_ratio", "h", "w"), [(7, 2, 16, 16), (3, 1, 8, 12), (4, 3, 5, 9)])
def test_values_and_gradients_are_torchvisions(bins, sampling_ratio, h, w):
    torch.manual_seed(0)
    b, k, c = 3, 12, 5
    features = torch.randn(b, c, h, w, dtype=torch.float64, requires_grad=True)
    boxes = _boxes(b, k, max(h, w)).double()
    rois = torch.cat([torch.arange(b).repeat_interleave(k)[:, None].double(), boxes.reshape(-1, 4)], dim=1)
    expected = roi_align(features, rois, bins, 1.0, sampling_ratio, aligned=True)
    pooled = roi_align_grouped(features, boxes, bins, sampling_ratio)
    assert pooled.shape == (b, k, c, bins, bins)
    torch.testing.assert_close(pooled.reshape(b * k, c, bins, bins), expected)
    grad = torch.randn_like(expected)
    (expected_grad,) = torch.autograd.grad(expected, features, grad)
    (got,) = torch.autograd.grad(pooled.reshape_as(expected), features, grad)
    torch.testing.assert_close(got, expected_grad)


def test_each_image_pools_only_its_own_features():
    features = torch.zeros(2, 1, 4, 4)
    features[1] = 1.0
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0]]).repeat(2, 1, 1)
    pooled = roi_align_grouped(features, boxes, 2)
    assert pooled[0].abs().max() == 0 and torch.allclose(pooled[1], torch.ones(1, 1, 2, 2))
