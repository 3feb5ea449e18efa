"""Weak point labels: the interior point and the box centre."""

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt
from tests.data.fixtures import rectangle_polygon, uncompressed_rle

from wps_sam.data.coco import PartInstance, instance_mask
from wps_sam.data.targets import box_centers, interior_point, weak_points


def _full_edt(mask: np.ndarray) -> np.ndarray:
    """Distance to the boundary on the whole image, the border counting as boundary."""
    return distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


def _l_shape() -> np.ndarray:
    """An L whose box centre falls outside it: a thick vertical bar and a thinner foot."""
    mask = np.zeros((40, 30), dtype=bool)
    mask[2:38, 2:12] = True  # vertical bar, 10 wide
    mask[30:38, 2:28] = True  # foot, 8 high
    return mask


def _rle_part(mask: np.ndarray, label: int = 0) -> PartInstance:
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
    return PartInstance(ann_id=1, label=label, box=box, segmentation=uncompressed_rle(mask), is_polygon=False)


def test_interior_point_of_l_shape_is_inside_and_farthest():
    mask = _l_shape()
    point = weak_points([_rle_part(mask)], *mask.shape)[0]
    col, row = int(point[0]), int(point[1])
    assert point[0] == col + 0.5 and point[1] == row + 0.5  # a pixel centre
    assert mask[row, col]
    distance = _full_edt(mask)
    assert distance[row, col] == distance.max()
    # Ties go to the first pixel in raster order.
    assert (row, col) == np.unravel_index(np.argmax(distance), distance.shape)
    # The official box centre misses this part.
    cx, cy = box_centers(_rle_part(mask).box[None])[0]
    assert not mask[int(cy), int(cx)]


def test_ties_resolve_in_raster_order():
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:6, 3:7] = True  # 4x4 square: its 4 centre pixels tie
    np.testing.assert_array_equal(interior_point(mask), [4.5, 3.5])


def test_image_border_counts_as_boundary():
    mask = np.ones((7, 7), dtype=bool)
    np.testing.assert_array_equal(interior_point(mask), [3.5, 3.5])
    mask = np.zeros((7, 9), dtype=bool)
    mask[:, :3] = True  # a bar along the left border: its centre column, not column 0
    assert interior_point(mask)[0] == 1.5


def test_windowed_transform_equals_full_image():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :40]
    for _ in range(20):
        mask = np.zeros((32, 40), dtype=bool)
        for _ in range(3):
            cy, cx, r = rng.uniform(0, 32), rng.uniform(0, 40), rng.uniform(2, 9)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        if not mask.any():
            continue
        distance = _full_edt(mask)
        row, col = np.unravel_index(np.argmax(distance), distance.shape)
        np.testing.assert_array_equal(interior_point(mask), [col + 0.5, row + 0.5])


def test_empty_mask_has_no_interior_point():
    assert interior_point(np.zeros((5, 5), dtype=bool)) is None


def test_box_center_mode_and_parts_without_masks():
    box = np.array([2.0, 4.0, 12.0, 10.0], dtype=np.float32)
    with_mask = PartInstance(1, 0, box, [rectangle_polygon(2, 4, 12, 10)], True)
    boxes_only = PartInstance(2, 1, box, None, False)
    np.testing.assert_array_equal(weak_points([with_mask, boxes_only], 20, 20, "box_center"), [[7, 7]] * 2)
    interior = weak_points([with_mask, boxes_only], 20, 20, "interior")
    np.testing.assert_array_equal(interior[1], [7, 7])  # no mask: box centre
    assert instance_mask(with_mask, 20, 20)[int(interior[0, 1]), int(interior[0, 0])]


def test_multi_polygon_part_point_lies_in_a_piece():
    polygons = [rectangle_polygon(1, 1, 6, 6), rectangle_polygon(12, 2, 22, 14)]
    part = PartInstance(1, 0, np.array([1, 1, 22, 14], dtype=np.float32), polygons, True)
    x, y = weak_points([part], 16, 24)[0]
    assert 12 <= x <= 22 and 2 <= y <= 14  # the larger piece holds the farthest pixel


def test_no_parts_and_unknown_mode():
    assert weak_points([], 10, 10).shape == (0, 2)
    with pytest.raises(ValueError, match="unknown point mode"):
        weak_points([], 10, 10, mode="centroid")
