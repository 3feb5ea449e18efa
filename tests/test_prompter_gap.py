"""benchmarks/prompter_gap.py: its pairing, its repaired prompts and its recall by size, by hand."""

from types import SimpleNamespace

import torch
from benchmarks.prompter_gap import (
    centre_scores,
    pair_parts,
    recall_by_class,
    recall_by_size,
    repaired_prompts,
)

GT_BOXES = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 0, 50, 10]])
GT_LABELS = torch.tensor([0, 1, 2])


def test_pairs_are_one_to_one_from_iou_0_3():
    pred = torch.tensor([[0.0, 0, 10, 12], [1, 1, 11, 11], [20, 20, 24, 24], [60, 60, 70, 70]])
    pairs, iou = pair_parts(pred, GT_BOXES)
    # the two boxes on part 0 share it (the better one wins); 16% overlap with part 1 is no pair
    assert pairs == {0: 0} and iou.shape == (4, 3) and float(iou[2, 1]) < 0.3
    assert pair_parts(torch.zeros(0, 4), GT_BOXES)[0] == {}


def test_repairing_everything_and_adding_the_misses_gives_the_ground_truth():
    boxes = torch.tensor([[1.0, 1, 11, 11], [60, 60, 70, 70]])  # part 0, found as class 2; an extra
    labels, scores = torch.tensor([2, 1]), torch.tensor([0.5, 0.25])
    pairs, _ = pair_parts(boxes, GT_BOXES)
    assert pairs == {0: 0}
    b, lab, s = repaired_prompts("all-repaired+missed", boxes, labels, scores, GT_BOXES, GT_LABELS, pairs)
    assert torch.equal(b, GT_BOXES) and torch.equal(lab, GT_LABELS) and s.tolist() == [0.5, 1.0, 1.0]
    b, lab, _ = repaired_prompts("gt-class", boxes, labels, scores, GT_BOXES, GT_LABELS, pairs)
    assert torch.equal(b, boxes) and lab.tolist() == [0, 1]
    b, lab, s = repaired_prompts("drop-unpaired", boxes, labels, scores, GT_BOXES, GT_LABELS, pairs)
    assert torch.equal(b, boxes[:1]) and lab.tolist() == [2] and s.tolist() == [0.5]
    assert torch.equal(labels, torch.tensor([2, 1]))  # the inputs are left as they were


def test_recall_by_size_bins_parts_and_splits_the_misses_by_their_heat_map_score():
    sides = torch.tensor([5.0, 8, 15, 60, 70])
    found = torch.tensor([True, False, False, True, False])
    scores = torch.tensor([0.9, 0.1, 0.4, 0.8, 0.2])
    table = recall_by_size(sides, found, scores, threshold=0.3)
    assert list(table) == ["0-12", "12-20", "20-30", "30-50", "50-inf"]
    assert table["0-12"] == {
        "parts": 2,
        "found": 0.5,
        "missed_below_threshold": 1,
        "missed_above_threshold": 0,
    }
    assert table["12-20"] == {
        "parts": 1,
        "found": 0.0,
        "missed_below_threshold": 0,
        "missed_above_threshold": 1,
    }
    assert table["20-30"] == {
        "parts": 0,
        "found": None,
        "missed_below_threshold": 0,
        "missed_above_threshold": 0,
    }
    assert table["50-inf"]["found"] == 0.5 and table["50-inf"]["missed_below_threshold"] == 1
    # a set prompter has no heat maps: sizes and recall only
    assert recall_by_size(sides, found, None, None)["0-12"] == {"parts": 2, "found": 0.5}


def test_recall_by_class_counts_each_class_found_seen_and_its_paired_iou():
    labels = torch.tensor([0, 0, 2, 0])
    sides = torch.tensor([10.0, 20, 30, 30])
    paired_iou = torch.tensor([0.8, 0.6, 0.4, 0.0])  # part 3 unpaired
    right_class = torch.tensor([True, False, True, False])  # part 1 paired with another class
    scores = torch.tensor([0.9, 0.5, 0.35, 0.1])
    table = recall_by_class(labels, ["a", "b", "c"], sides, paired_iou, right_class, scores, 0.3)
    assert list(table) == ["a", "c"]  # a class with no part has no row
    assert table["a"] == {
        "parts": 3,
        "mean_side_px": 20.0,
        "found": 0.667,
        "found_with_class": 0.333,
        "mean_paired_iou": 0.467,
        "seen": 0.667,
    }
    assert table["c"]["found"] == 0.0 and table["c"]["seen"] == 1.0
    assert (
        "seen"
        not in recall_by_class(labels, ["a", "b", "c"], sides, paired_iou, right_class, None, None)["a"]
    )


def test_centre_scores_read_the_part_class_around_its_centre_cell_averaged_with_the_mirror():
    def dense(embeddings):  # [1, C=2, 4, 4] heat-map logits: embeddings carry the probabilities
        return {"heatmap": torch.logit(embeddings)}

    heat = torch.full((1, 2, 4, 4), 0.1)
    heat[0, 1, 0, 0] = 0.9  # class 1, cell (x 0, y 0): within 3x3 of cell (1, 1), not of (3, 3)
    model = SimpleNamespace(prompter=SimpleNamespace(dense=dense), image_size=32)
    boxes = torch.tensor([[8.0, 8, 16, 16], [24, 24, 32, 32], [8, 8, 16, 16]])  # cells (1, 1), (3, 3), (1, 1)
    labels = torch.tensor([1, 1, 0])
    assert torch.allclose(centre_scores(model, heat, None, boxes, labels), torch.tensor([0.9, 0.1, 0.1]))
    # the mirror's cell (3, 0) maps back to (0, 0): the views average to 0.5 there
    mirrored = torch.full((1, 2, 4, 4), 0.1)
    averaged = centre_scores(model, heat, mirrored, boxes, labels)
    assert torch.allclose(averaged, torch.tensor([0.5, 0.1, 0.1]), atol=1e-5)
