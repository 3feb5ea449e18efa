"""PaperProtocol against hand-computed cases, and its row-wise IoU against smp's arithmetic."""

import pytest
import torch

from wps_sam.evaluation.paper_protocol import PaperProtocol

S = 4


def box_mask(rows: slice, cols: slice, value: float | bool = True) -> torch.Tensor:
    m = torch.zeros(S, S, dtype=torch.float32 if isinstance(value, float) else torch.bool)
    m[rows, cols] = value
    return m


def all_eligible(n: int) -> torch.Tensor:
    return torch.ones(n, dtype=torch.bool)


def test_probabilities_cross_threshold_only_when_summed() -> None:
    gt = box_mask(slice(0, 2), slice(0, 2))[None]
    q0 = box_mask(slice(0, 2), slice(0, 3), 0.3)  # alone: nothing reaches 0.5
    q1 = box_mask(slice(0, 2), slice(0, 2), 0.3)
    both, alone = PaperProtocol("image"), PaperProtocol("image")
    both.update(torch.stack([q0, q1]), torch.tensor([0, 0]), gt, torch.tensor([0]), all_eligible(1))
    alone.update(q0[None], torch.tensor([0]), gt, torch.tensor([0]), all_eligible(1))
    assert both.compute()["miou"] == 1.0 and both.compute()["macc"] == 1.0
    assert alone.compute()["miou"] == 0.0  # empty prediction: TP 0, FN 4
    assert alone.compute()["macc"] == pytest.approx(12 / 16)
    # a query of another class does not add to the sum
    other = PaperProtocol("image")
    other.update(torch.stack([q0, q1]), torch.tensor([0, 1]), gt, torch.tensor([0]), all_eligible(1))
    assert other.compute()["miou"] == 0.0


def test_threshold_is_inclusive_like_smp() -> None:
    gt = box_mask(slice(0, 1), slice(0, 1))[None]
    q = box_mask(slice(0, 1), slice(0, 1), 0.25)
    proto = PaperProtocol("image")
    proto.update(torch.stack([q, q]), torch.tensor([2, 2]), gt, torch.tensor([2]), all_eligible(1))
    assert proto.compute()["miou"] == 1.0  # 0.25 + 0.25 = 0.5 >= 0.5


def test_smp_row_quirk_hand_case() -> None:
    # gt: row 0, cols 0-1; prediction: row 0 cols 0-1 and row 1 col 0 (one false positive)
    gt = box_mask(slice(0, 1), slice(0, 2))[None]
    pred = (gt[0] | box_mask(slice(1, 2), slice(0, 1))).float()[None]
    rows, image = PaperProtocol(), PaperProtocol("image")
    for proto in (rows, image):
        proto.update(pred, torch.tensor([0]), gt, torch.tensor([0]), all_eligible(1))
    # per row: row 0 IoU 1, row 1 IoU 0 (FP only), rows 2-3 empty -> 1 (smp's zero_division)
    assert rows.compute()["miou"] == pytest.approx((1 + 0 + 1 + 1) / 4)
    assert image.compute()["miou"] == pytest.approx(2 / 3)
    # accuracy: the mean of per-row accuracies equals the whole-square accuracy
    assert rows.compute()["macc"] == pytest.approx(15 / 16)
    assert image.compute()["macc"] == pytest.approx(15 / 16)


def test_padding_pixels_are_true_negatives() -> None:
    # picture the valid image as the top 2 rows; rows 2-3 are padding and count as TN
    gt = box_mask(slice(0, 1), slice(0, 1))[None]
    pred = box_mask(slice(0, 1), slice(0, 2), 0.9)[None]  # 1 TP, 1 FP
    proto = PaperProtocol("image")
    proto.update(pred, torch.tensor([0]), gt, torch.tensor([0]), all_eligible(1))
    assert proto.compute()["macc"] == pytest.approx(15 / 16)  # not 7/8 over the valid area


def test_image_without_kept_query_is_one_zero_entry() -> None:
    gt = torch.stack(
        [
            box_mask(slice(0, 1), slice(None)),
            box_mask(slice(1, 2), slice(None)),
            box_mask(slice(2, 3), slice(None)),
        ]
    )
    proto = PaperProtocol()
    proto.update(
        torch.zeros(0, S, S), torch.zeros(0, dtype=torch.long), gt, torch.tensor([0, 1, 2]), all_eligible(3)
    )
    perfect = box_mask(slice(0, 1), slice(None), 1.0)[None]
    proto.update(perfect, torch.tensor([0]), gt[:1], torch.tensor([0]), all_eligible(1))
    out = proto.compute()
    assert out["entries"] == 2 and out["null_images"] == 1
    assert out["miou"] == pytest.approx(0.5) and out["macc"] == pytest.approx(0.5)


def test_missing_category_scores_zero_and_extra_category_is_ignored() -> None:
    gt = torch.stack([box_mask(slice(0, 1), slice(None)), box_mask(slice(3, 4), slice(None))])
    pred = torch.stack([box_mask(slice(0, 1), slice(None), 1.0), box_mask(slice(2, 3), slice(None), 1.0)])
    proto = PaperProtocol()
    # gt classes 0 and 1; predictions of classes 0 and 5 (5 is not in the gt: no entry)
    proto.update(pred, torch.tensor([0, 5]), gt, torch.tensor([0, 1]), all_eligible(2))
    out = proto.compute()
    assert out["entries"] == 2 and out["failed_parts"] == 1 and out["matched_parts"] == 1
    assert out["miou"] == pytest.approx(0.5) and out["macc"] == pytest.approx(0.5)


def test_gt_masks_of_one_category_are_united() -> None:
    gt = torch.stack([box_mask(slice(0, 2), slice(0, 2)), box_mask(slice(1, 3), slice(1, 3))])
    union = gt.any(0).float()[None]
    proto = PaperProtocol("image")
    proto.update(union, torch.tensor([4]), gt, torch.tensor([4, 4]), all_eligible(2))
    assert proto.compute()["miou"] == 1.0 and proto.compute()["entries"] == 1


def test_ineligible_annotations_are_skipped() -> None:
    gt = torch.stack([box_mask(slice(0, 1), slice(None)), box_mask(slice(2, 3), slice(None))])
    pred = box_mask(slice(0, 1), slice(None), 1.0)[None]
    proto = PaperProtocol()
    # class 1's polygon is ineligible: no "failed part" entry for it
    proto.update(pred, torch.tensor([0]), gt, torch.tensor([0, 1]), torch.tensor([True, False]))
    assert proto.compute()["entries"] == 1 and proto.compute()["miou"] == 1.0
    # an image whose annotations are all ineligible is skipped, even without kept queries
    proto.update(
        torch.zeros(0, S, S),
        torch.zeros(0, dtype=torch.long),
        gt,
        torch.tensor([0, 1]),
        torch.tensor([False, False]),
    )
    assert proto.compute()["entries"] == 1 and proto.compute()["null_images"] == 0


def _smp_micro_imagewise_on_2d(pred_sum: torch.Tensor, gt_sum: torch.Tensor) -> tuple[float, float]:
    """The arithmetic smp applies to a 2-D [S, S] input, written out step by step (float32)."""
    output = torch.where(pred_sum >= 0.5, 1, 0)
    target = torch.where(gt_sum.int() >= 0.5, 1, 0)
    batch, classes = target.shape  # [S, S] unpacks as batch = rows, classes = pixels of a row
    output, target = output.view(batch, classes, -1), target.view(batch, classes, -1)
    tp = (output * target).sum(2)
    fp = output.sum(2) - tp
    fn = target.sum(2) - tp
    tn = torch.prod(torch.tensor([])) - (tp + fp + fn)  # prod of no dims = 1
    tp, fp, fn, tn = tp.sum(1), fp.sum(1), fn.sum(1), tn.sum(1)
    iou = tp / (tp + fp + fn)
    acc = (tp + tn) / (tp + fp + fn + tn)
    iou = torch.where(torch.isnan(iou), torch.tensor(1.0), iou)
    return float(iou.mean()), float(acc.mean())


def test_rows_mode_matches_smp_arithmetic_on_random_cases() -> None:
    g = torch.Generator().manual_seed(0)
    size = 16
    for _ in range(20):
        probs = torch.rand(3, size, size, generator=g) * (torch.rand(3, size, size, generator=g) > 0.6)
        gt = torch.rand(2, size, size, generator=g) > 0.7
        gt[:, : size // 3] = False  # some empty rows, as padding
        proto = PaperProtocol()
        proto.update(probs, torch.tensor([1, 1, 1]), gt, torch.tensor([1, 1]), all_eligible(2))
        expected = _smp_micro_imagewise_on_2d(probs[0] + probs[1] + probs[2], gt[0].int() + gt[1].int())
        assert proto.compute()["miou"] == pytest.approx(expected[0], abs=1e-6)
        assert proto.compute()["macc"] == pytest.approx(expected[1], abs=1e-6)


def test_merge_equals_single_and_state_round_trip() -> None:
    g = torch.Generator().manual_seed(3)
    images = []
    for i in range(6):
        k = i % 3  # includes images without kept queries
        images.append(
            (
                torch.rand(k, S, S, generator=g),
                torch.randint(0, 3, (k,), generator=g),
                torch.rand(2, S, S, generator=g) > 0.5,
                torch.randint(0, 3, (2,), generator=g),
                all_eligible(2),
            )
        )
    single, a, b = PaperProtocol(), PaperProtocol(), PaperProtocol()
    for i, args in enumerate(images):
        single.update(*args)
        (a if i < 3 else b).update(*args)
    merged = PaperProtocol.from_state_dict(a.state_dict()).merge(b).compute()
    expected = single.compute()
    assert merged["entries"] == expected["entries"] and merged["null_images"] == expected["null_images"]
    assert merged["miou"] == pytest.approx(expected["miou"]) and merged["macc"] == pytest.approx(
        expected["macc"]
    )
    with pytest.raises(ValueError):
        a.merge(PaperProtocol("image"))
    assert PaperProtocol().compute()["miou"] is None
