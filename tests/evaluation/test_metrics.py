"""ConfusionMatrix: hand-counted cases, absent and predicted-only classes, merging, JSON safety."""

import json

import pytest
import torch

from wps_sam.evaluation.metrics import ConfusionMatrix


def test_hand_counted_three_classes() -> None:
    # (gt, pred) pairs: (0,0) x2, (0,1), (1,1) x3, (2,2), (2,0)
    gt = torch.tensor([[0, 0, 1, 1], [0, 2, 2, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 2, 0, 1]])
    cm = ConfusionMatrix(3)
    cm.update(pred, gt)
    assert cm.matrix.tolist() == [[2, 1, 0], [0, 3, 0], [1, 0, 1]]
    out = cm.compute(["background", "a", "b"])
    # background: TP 2, FP 1, FN 1 -> IoU 2/4, acc 2/3
    # a:          TP 3, FP 1, FN 0 -> IoU 3/4, acc 1
    # b:          TP 1, FP 0, FN 1 -> IoU 1/2, acc 1/2
    ious = [e["iou"] for e in out["per_class"]]
    accs = [e["acc"] for e in out["per_class"]]
    assert ious == pytest.approx([0.5, 0.75, 0.5])
    assert accs == pytest.approx([2 / 3, 1.0, 0.5])
    assert out["miou"] == pytest.approx(1.75 / 3)
    assert out["macc"] == pytest.approx((2 / 3 + 1.0 + 0.5) / 3)
    assert out["pixel_acc"] == pytest.approx(6 / 8)
    assert [e["name"] for e in out["per_class"]] == ["background", "a", "b"]


def test_absent_and_predicted_only_classes() -> None:
    # class 2 is predicted but never in the ground truth; class 3 is neither
    gt = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 2, 1, 1])
    cm = ConfusionMatrix(4)
    cm.update(pred, gt)
    out = cm.compute(["a", "b", "c"])  # part names only: background is prepended
    per = {e["name"]: e for e in out["per_class"]}
    assert per["background"]["iou"] == pytest.approx(0.5) and per["background"]["acc"] == pytest.approx(0.5)
    assert per["a"]["iou"] == 1.0 and per["a"]["acc"] == 1.0
    assert per["b"]["iou"] == 0.0 and per["b"]["acc"] is None  # false positives only
    assert per["c"]["iou"] is None and per["c"]["acc"] is None  # absent everywhere: excluded
    assert out["miou"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert out["macc"] == pytest.approx((0.5 + 1.0) / 2)
    json.dumps(out, allow_nan=False)


def test_background_counts_like_any_class() -> None:
    cm = ConfusionMatrix(2)
    cm.update(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 0], [0, 1]]))
    out = cm.compute(["background", "part"])
    # background IoU 3/4, part IoU 0 (missed): both enter the mean
    assert out["miou"] == pytest.approx((0.75 + 0.0) / 2)
    assert out["macc"] == pytest.approx((1.0 + 0.0) / 2)


def test_merge_equals_single() -> None:
    g = torch.Generator().manual_seed(1)
    preds = [torch.randint(0, 5, (7, 9), generator=g) for _ in range(6)]
    gts = [torch.randint(0, 5, (7, 9), generator=g) for _ in range(6)]
    single, a, b = ConfusionMatrix(5), ConfusionMatrix(5), ConfusionMatrix(5)
    for i, (p, t) in enumerate(zip(preds, gts)):
        single.update(p, t)
        (a if i % 2 else b).update(p, t)
    assert torch.equal(a.merge(b).matrix, single.matrix)
    names = [f"c{i}" for i in range(5)]
    assert a.compute(names) == single.compute(names)


def test_empty_and_invalid() -> None:
    cm = ConfusionMatrix(3)
    out = cm.compute(["bg", "a", "b"])
    assert out["miou"] is None and out["macc"] is None and out["pixel_acc"] is None
    with pytest.raises(ValueError):
        cm.update(torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError):
        cm.update(torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError):
        cm.compute(["only-one"])
    with pytest.raises(ValueError):
        cm.merge(ConfusionMatrix(4))
