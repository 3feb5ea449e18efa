"""The dense prompter's second stage (prompter.dense_refine), pinned by properties."""

from __future__ import annotations

import math

import pytest
import torch

from wps_sam.config import ConfigError, load_config
from wps_sam.modeling.box_refiner import (
    BoxJitter,
    BoxRefiner,
    apply_deltas,
    label_candidates,
)
from wps_sam.modeling.dense_criterion import DENSE_LOSS_KEYS, DenseCriterion
from wps_sam.modeling.dense_prompter import DensePrompter

C = 4
EMBED = (16, 16)


def _targets() -> list[dict[str, torch.Tensor]]:
    return [
        {
            "labels": torch.tensor([0, 3]),
            "geometry": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.4]]),
        },
        {"labels": torch.tensor([1]), "geometry": torch.tensor([[0.5, 0.5, 0.5, 0.5]])},
    ]


def _prompter() -> DensePrompter:
    torch.manual_seed(0)
    return DensePrompter(
        C, "box", embed_size=EMBED, width=16, dilations=(1, 2), standardize_input=False, refine=True
    )


def test_jitter_keeps_each_box_and_makes_copies_near_it_grouped_by_image():
    torch.manual_seed(0)
    targets = _targets()
    jittered = BoxJitter(copies=3)(targets)
    assert jittered.boxes.shape == (2, 4 * 2, 4)  # the largest image's 2 parts x (1 + 3 copies)
    # image 0: its 2 parts, then their copies; image 1: 1 part, its copies, then padding
    assert jittered.part_index.tolist() == [[0, 1] * 4, [0] * 4 + [-1] * 4]
    for image, t in enumerate(targets):
        gt = t["geometry"]
        torch.testing.assert_close(jittered.boxes[image, : len(gt)], gt)  # the ground truth first
        part = jittered.part_index[image, len(gt) : 4 * len(gt)]
        copies = jittered.boxes[image, len(gt) : 4 * len(gt)]
        shift = (copies[:, :2] - gt[part, :2]).abs() / gt[part, 2:]
        assert 0 < shift.max() < 0.6  # moved, by a fraction of the box
    assert jittered.valid.sum() == 4 * 3


def test_deltas_shift_in_box_sizes_and_scale_in_log_space():
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    torch.testing.assert_close(apply_deltas(boxes, torch.zeros(1, 4)), boxes)
    moved = apply_deltas(boxes, torch.tensor([[0.5, -0.25, math.log(2.0), 0.0]]))
    torch.testing.assert_close(moved, torch.tensor([[0.6, 0.4, 0.4, 0.4]]))


def test_candidates_are_labelled_by_overlap_within_their_own_image():
    gt = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])
    gt_image, gt_labels = torch.tensor([0, 1]), torch.tensor([2, 1])
    boxes = torch.tensor(
        [[0.3, 0.3, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2], [0.35, 0.3, 0.2, 0.2], [0.7, 0.7, 0.05, 0.05]]
    )
    image = torch.tensor([0, 1, 0, 1])
    labels, part = label_candidates(boxes, image, gt, gt_image, gt_labels, C)
    # exact box; the same box on the image without that part; IoU 0.6; IoU 1/16
    assert labels.tolist() == [2, C, 2, C]
    assert part[0] == 0 and part[2] == 0


def test_refiner_starts_as_the_identity_on_boxes():
    refiner = BoxRefiner(8, C)
    boxes = torch.tensor([[[0.5, 0.5, 0.3, 0.2]], [[0.2, 0.7, 0.1, 0.1]]])
    logits, refined = refiner(torch.randn(2, 8, *EMBED), boxes)
    assert logits.shape == (2, 1, C + 1)
    torch.testing.assert_close(refined, boxes)


def test_training_reads_the_peaks_and_the_jittered_boxes_and_the_criterion_trains_both_heads():
    prompter = _prompter().train()
    targets = _targets()
    jittered = BoxJitter()(targets)
    out = prompter(torch.randn(2, 256, *EMBED), denoising=jittered)
    assert len(out["refine_candidates"]) == 2 * prompter.max_parts + 4 * 3  # padding left out
    k = prompter.max_parts
    assert out["refine_image"].tolist() == [0] * (k + 8) + [1] * (k + 4)
    torch.testing.assert_close(out["refine_candidates"][k : k + 8], jittered.boxes[0])
    torch.testing.assert_close(out["refine_candidates"][-4:], jittered.boxes[1, :4])
    criterion = DenseCriterion(C, dict.fromkeys(DENSE_LOSS_KEYS, 1.0))
    losses = criterion(out, targets, jittered.part_index)
    criterion.weighted_total(losses).backward()
    refiner = prompter.refiner
    assert refiner.class_head.weight.grad.abs().sum() > 0 and refiner.delta_head.weight.grad.abs().sum() > 0
    assert prompter.stem.weight.grad.abs().sum() > 0  # the features learn from the refiner too


def test_exact_boxes_cost_no_refiner_box_loss():
    targets = _targets()
    gt = torch.cat([t["geometry"] for t in targets])
    outputs = {
        "refine_candidates": gt,
        "refine_image": torch.tensor([0, 0, 1]),
        "refine_logits": torch.zeros(3, C + 1),
        "refine_geometry": gt.clone(),
    }
    losses = DenseCriterion._refine_losses(outputs, gt, torch.tensor([0, 0, 1]), torch.tensor([0, 3, 1]), C)
    assert losses["loss_refine_geom"] == 0
    torch.testing.assert_close(losses["loss_refine_ce"], torch.tensor(math.log(C + 1)))


def test_inference_corrects_every_peaks_box_and_keeps_its_class_and_score():
    prompter = _prompter().eval()
    with torch.no_grad():  # a refiner that shifts every box right by half its width
        prompter.refiner.delta_head.bias.copy_(torch.tensor([0.5, 0.0, 0.0, 0.0]))
    emb = torch.randn(2, 256, *EMBED)
    dense = prompter.dense(emb)
    features = dense.pop("features")
    peaks = prompter.peaks(dense)
    out = prompter(emb)
    torch.testing.assert_close(out["pred_logits"], peaks["pred_logits"])
    expected = peaks["pred_geometry"].clone()
    expected[..., 0] += 0.5 * expected[..., 2]
    torch.testing.assert_close(out["pred_geometry"], expected)
    torch.testing.assert_close(prompter.refine_peaks(peaks, features)["pred_geometry"], expected)
    assert set(prompter(emb, emb.flip(-1))) == {"pred_logits", "pred_geometry"}


def test_jittered_boxes_need_the_refiner_in_training():
    plain = DensePrompter(C, "box", embed_size=EMBED, width=16, dilations=(1,), standardize_input=False)
    with pytest.raises(ValueError, match="refine"):
        plain.train()(torch.randn(1, 256, *EMBED), denoising=BoxJitter()(_targets()[:1]))
    with pytest.raises(ValueError, match="kind 'box'"):
        DensePrompter(C, "point", embed_size=EMBED, refine=True)


@pytest.mark.parametrize(
    "overrides",
    [
        ["prompter.dense_refine=true", "data.supervision=point"],
        ["prompter.dense_refine=true", "train.recipe=paper"],
    ],
)
def test_the_refiner_is_refused_where_there_are_no_dense_boxes(overrides):
    with pytest.raises(ConfigError, match="dense_refine"):
        load_config(None, overrides)


def test_non_finite_boxes_give_finite_outputs():
    refiner = BoxRefiner(8, C)
    boxes = torch.tensor(
        [[[float("nan"), 0.5, 0.2, 0.2], [0.5, 0.5, float("inf"), 0.3], [3.0, -2.0, 0.5, 0.5]]]
    )
    logits, _ = refiner(torch.randn(1, 8, *EMBED), boxes)
    assert torch.isfinite(logits).all()
