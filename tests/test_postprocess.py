"""Query selection, composition of the semantic map, and the ground-truth semantic map."""

import numpy as np
import torch

from wps_sam.postprocess import compose_semantic_map, select_queries, semantic_map_from_gt


def test_select_queries_drops_no_part_and_low_scores() -> None:
    logits = torch.tensor(
        [
            [5.0, 0.0, 0.0],  # class 0, confident
            [0.0, 0.0, 5.0],  # "no part" (index C = 2)
            [0.1, 0.0, 0.0],  # class 0, barely above the others
            [0.0, 3.0, 0.0],  # class 1
        ]
    )
    keep, labels, scores = select_queries(logits)
    assert keep.tolist() == [0, 2, 3] and labels.tolist() == [0, 0, 1]
    assert torch.allclose(scores, logits.softmax(-1)[keep, labels])
    keep, labels, _ = select_queries(logits, score_threshold=0.5)
    assert keep.tolist() == [0, 3] and labels.tolist() == [0, 1]
    keep, labels, scores = select_queries(torch.zeros(0, 3))
    assert keep.numel() == labels.numel() == scores.numel() == 0


def test_compose_semantic_map_overlap_hand_case() -> None:
    # two queries; pixel by pixel (p0, p1) and the expected owner
    p0 = torch.tensor([[0.9, 0.6, 0.5, 0.0, 0.2]])
    p1 = torch.tensor([[0.7, 0.95, 0.55, 0.0, 0.4]])
    labels = torch.tensor([3, 1])
    scores = torch.tensor([0.9, 0.6])
    out = compose_semantic_map(torch.stack([p0, p1]), labels, scores)
    # px0: 0.81 vs 0.42 -> q0 (label 3 -> 4); px1: 0.54 vs 0.57 -> q1 (label 1 -> 2);
    # px2: q0 not above 0.5, so q1 even though 0.9*0.5 > 0.6*0.55; px3, px4: nobody -> background
    assert out.tolist() == [[4, 2, 2, 0, 0]]
    assert out.dtype == torch.long


def test_compose_semantic_map_matches_per_pixel_rule() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(5, 6, 7, generator=g)
    labels = torch.randint(0, 4, (5,), generator=g)
    scores = torch.rand(5, generator=g)
    out = compose_semantic_map(probs, labels, scores, mask_threshold=0.4)
    for y in range(6):
        for x in range(7):
            cands = [(float(scores[k] * probs[k, y, x]), k) for k in range(5) if probs[k, y, x] > 0.4]
            expected = int(labels[max(cands)[1]]) + 1 if cands else 0
            assert int(out[y, x]) == expected


def test_compose_semantic_map_no_query() -> None:
    out = compose_semantic_map(torch.zeros(0, 3, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0))
    assert out.shape == (3, 4) and not out.any()


def test_semantic_map_from_gt_smaller_part_wins() -> None:
    big = np.zeros((4, 4), dtype=bool)
    big[:3, :3] = True
    small = np.zeros((4, 4), dtype=bool)
    small[1, 1] = True
    for masks, labels in (([big, small], [0, 2]), ([small, big], [2, 0])):
        out = semantic_map_from_gt(np.stack(masks), np.array(labels))
        expected = np.zeros((4, 4), dtype=np.int64)
        expected[:3, :3] = 1
        expected[1, 1] = 3
        assert out.tolist() == expected.tolist()
    # equal areas: the part that comes first wins, whatever the order of the others
    column, row = np.zeros((2, 2), dtype=bool), np.zeros((2, 2), dtype=bool)
    column[:, 0], row[0] = True, True
    out = semantic_map_from_gt(np.stack([column, row, column]), np.array([4, 5, 6]))
    assert out.tolist() == [[5, 6], [5, 0]]
    empty = semantic_map_from_gt(torch.zeros(0, 2, 3, dtype=torch.bool), torch.zeros(0, dtype=torch.long))
    assert empty.shape == (2, 3) and not empty.any()
