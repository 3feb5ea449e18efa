"""benchmarks/prompter_gap.py: its pairing and its repaired prompts, by hand."""

import torch
from benchmarks.prompter_gap import pair_parts, repaired_prompts

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
