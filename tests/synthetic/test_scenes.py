"""The generic-shape world of the tiny SAM's pre-training: determinism, laminar targets, primitives."""

from __future__ import annotations

import numpy as np

from wps_sam.synthetic.scenes import ShapesConfig, SyntheticShapes
from wps_sam.synthetic.shapes import (
    SHAPES,
    capsule_mask,
    draw_shape,
    paint,
    polygon_mask,
    random_look,
    shaded,
    smooth_noise,
)


def test_scenes_are_deterministic_and_consistent():
    a, b = SyntheticShapes(seed=3), SyntheticShapes(seed=3)
    for i in range(3):
        (img1, m1), (img2, m2) = a[i], b[i]
        assert np.array_equal(img1, img2) and np.array_equal(m1, m2)
        assert img1.shape == (256, 256, 3) and img1.dtype == np.uint8
        assert m1.ndim == 3 and m1.shape[1:] == (256, 256) and m1.dtype == bool and len(m1) >= 1
        assert (m1.reshape(len(m1), -1).sum(1) >= ShapesConfig().min_area).all()
    assert not np.array_equal(a[0][0], SyntheticShapes(seed=4)[0][0])


def test_targets_are_laminar_and_distinct():
    # Wholes, pieces, groups and details: two targets are disjoint or one holds the other (SA-1B's
    # granularities), and no target repeats another.
    for i in range(6):
        _, masks = SyntheticShapes(seed=0, cfg=ShapesConfig(p_assembly=0.6))[i]
        flat = masks.reshape(len(masks), -1).astype(np.int64)
        inter = flat @ flat.T
        area = np.diag(inter)
        for j in range(len(masks)):
            for k in range(j + 1, len(masks)):
                assert inter[j, k] in (0, area[j], area[k])
                assert not (inter[j, k] == area[j] == area[k])


def test_assemblies_have_thin_pieces_and_groups():
    cfg = ShapesConfig(p_split=0, p_attached=0, p_nested=0, p_assembly=1.0, min_objects=1, max_objects=1)
    thin = groups = 0
    for i in range(12):
        _, masks = SyntheticShapes(seed=1, cfg=cfg)[i]
        areas = masks.reshape(len(masks), -1).sum(1)
        thin += int((areas < 0.1 * areas.max()).sum())
        groups += len(masks) > 3
    assert thin > 0 and groups > 0


def test_primitives_stay_in_range():
    rng = np.random.default_rng(0)
    for kind in SHAPES:
        m = draw_shape(rng, kind, 64, 32, 32, 12)
        assert m.shape == (64, 64) and m.any() and not m.all()
    n = smooth_noise(rng, 64, 8, 3)
    assert n.shape == (3, 64, 64) and n.min() >= 0 and n.max() <= 1
    cap = capsule_mask(64, np.array([10.0, 10.0]), np.array([50.0, 10.0]), 3.0, 3.0)
    assert cap[10, 10] and cap[10, 50] and cap[13, 30] and not cap[15, 30] and not cap[10, 55]
    tri = polygon_mask(64, np.array([[10.0, 10.0], [50.0, 10.0], [30.0, 40.0]]))
    assert tri[20, 30] and not tri[45, 30] and not tri[5, 30]


def test_looks_paint_in_range_and_shading_keeps_the_texture():
    rng = np.random.default_rng(2)
    for _ in range(12):
        look = random_look(rng)
        img = paint(rng, look, 32)
        assert img.shape == (32, 32, 3) and img.min() >= 0 and img.max() <= 255
        other = shaded(rng, look)
        assert other.kind == look.kind and other.scale == look.scale
    crop = paint(rng, random_look(rng), 32, (slice(4, 10), slice(0, 32)))
    assert crop.shape == (6, 32, 3)
