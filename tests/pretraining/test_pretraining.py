"""Properties of the tiny-SAM pre-training: the synthetic scenes, the losses and a two-step run."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from wps_sam.pretraining.losses import dice_loss, mask_iou, sigmoid_focal_loss
from wps_sam.pretraining.shapes import ShapesConfig, SyntheticShapes, draw_shape, smooth_noise
from wps_sam.pretraining.trainer import (
    PretrainConfig,
    evaluate_prompted_miou,
    mask_box,
    predict_masks_batched,
    pretrain_tiny_sam,
    sample_prompts,
)
from wps_sam.sam.backbones import build_sam


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_random_sam():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_sam("tiny", checkpoint="random")


def test_scenes_are_deterministic_and_consistent():
    a, b = SyntheticShapes(seed=3), SyntheticShapes(seed=3)
    for i in range(3):
        (img1, m1), (img2, m2) = a[i], b[i]
        assert np.array_equal(img1, img2) and np.array_equal(m1, m2)
        assert img1.shape == (256, 256, 3) and img1.dtype == np.uint8
        assert m1.ndim == 3 and m1.shape[1:] == (256, 256) and m1.dtype == bool and len(m1) >= 1
        assert (m1.reshape(len(m1), -1).sum(1) >= ShapesConfig().min_area).all()
    assert not np.array_equal(a[0][0], SyntheticShapes(seed=4)[0][0])


def test_pieces_do_not_overlap_but_unions_cover_them():
    _, masks = SyntheticShapes(seed=0)[1]
    flat = masks.reshape(len(masks), -1)
    inter = flat.astype(np.int32) @ flat.T.astype(np.int32)
    area = np.diag(inter)
    for i in range(len(masks)):
        for j in range(len(masks)):
            # Two targets either are disjoint or one contains the other (a piece inside its object).
            if i != j and inter[i, j]:
                assert inter[i, j] in (area[i], area[j])


def test_shapes_and_noise_stay_in_range():
    rng = np.random.default_rng(0)
    for kind in ("ellipse", "rectangle", "polygon", "blob", "ring", "star", "curve"):
        m = draw_shape(rng, kind, 64, 32, 32, 12)
        assert m.shape == (64, 64) and m.any() and not m.all()
    n = smooth_noise(rng, 64, 8, 3)
    assert n.shape == (3, 64, 64) and n.min() >= 0 and n.max() <= 1


def test_focal_and_dice_match_hand_values():
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 0.5]]])
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    p = torch.sigmoid(logits)
    # Focal per pixel: alpha_t (1 - p_t)^2 (-log p_t), alpha_t = 0.25 on positives, 0.75 on negatives.
    p_t = torch.where(target > 0, p, 1 - p)
    alpha_t = torch.where(target > 0, 0.25, 0.75)
    expected = (alpha_t * (1 - p_t) ** 2 * -torch.log(p_t)).mean()
    assert torch.allclose(sigmoid_focal_loss(logits, target), expected[None], atol=1e-6)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    assert torch.allclose(dice_loss(logits, target), dice[None], atol=1e-6)
    assert math.isclose(mask_iou(logits, target).item(), 1 / 3, rel_tol=1e-6)  # pred {1,3}, gt {0,1}


def test_prompts_lie_in_their_masks():
    rng = np.random.default_rng(0)
    _, masks = SyntheticShapes(seed=1)[0]
    p = sample_prompts(rng, masks, 6, PretrainConfig(p_box=0.5), n_points=3)
    for j, t in enumerate(p["target"]):
        x, y = p["coords"][j, 0].astype(int)
        assert masks[t][y, x]  # the first point is always positive
        for (x, y), label in zip(p["coords"][j].astype(int), p["labels"][j]):
            assert masks[t][y, x] == bool(label)
    box = mask_box(masks[0])
    ys, xs = np.nonzero(masks[0])
    assert list(box) == [xs.min(), ys.min(), xs.max(), ys.max()]


def test_batched_decoder_matches_segment_anything():
    sam = _tiny_random_sam()
    emb = torch.randn(2, 256, 16, 16)
    boxes = torch.tensor([[10.0, 20.0, 100.0, 120.0], [50.0, 60.0, 200.0, 210.0]])
    sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
    with torch.no_grad():
        masks, iou = predict_masks_batched(sam, emb[[0, 1]], sparse, dense)
        for i in range(2):
            ref_m, ref_iou = sam.mask_decoder.predict_masks(
                emb[i : i + 1], sam.prompt_encoder.get_dense_pe(), sparse[i : i + 1], dense[i : i + 1]
            )
            assert torch.allclose(masks[i : i + 1], ref_m, atol=1e-4)
            assert torch.allclose(iou[i : i + 1], ref_iou, atol=1e-5)


def test_evaluation_runs_on_any_size():
    sam = _tiny_random_sam()
    image = np.zeros((120, 200, 3), np.uint8)
    masks = np.zeros((2, 120, 200), bool)
    masks[0, 10:50, 20:90] = True
    res = evaluate_prompted_miou(sam, [image], [masks])  # the empty mask is skipped
    assert res["n_masks"] == 1 and 0 <= res["box_miou"] <= 1 and 0 <= res["point_miou"] <= 1


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:SAM tiny has random weights")
def test_two_step_run_writes_loadable_weights(tmp_path):
    path = pretrain_tiny_sam(
        tmp_path,
        steps=2,
        batch_size=2,
        prompts_per_image=2,
        log_every=1,
        progress=False,
        eval_every=2,
        eval_images=1,
        eval_masks_per_image=2,
        warmup_steps=1,
        box_warmup_steps=2,
    )
    assert path.is_file() and path.stat().st_size <= 25 * 1024 * 1024
    sam = build_sam("tiny", checkpoint=path)
    assert sam.checkpoint_sha256 != "random"
    rows = [json.loads(line) for line in (tmp_path / "pretrain_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert rows[0]["box_warmup_steps"] == 2
    assert any("eval_box_miou" in r for r in rows)
    # A finished run resumes to a no-op.
    assert pretrain_tiny_sam(tmp_path, steps=2, batch_size=2, prompts_per_image=2, progress=False) == path
