"""The Hungarian matcher against brute force, batched against single images, and its edge cases."""

from __future__ import annotations

import itertools

import pytest
import torch

from wps_sam.modeling.matcher import HungarianMatcher

NUM_CLASSES = 3


def random_batch(
    sizes: list[int], num_queries: int, seed: int, token_shape: tuple[int, int] = (2, 4)
) -> tuple[dict, list[dict]]:
    """Outputs and targets whose class and token costs are of similar size, so both matter."""
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_logits": 2 * torch.randn(len(sizes), num_queries, NUM_CLASSES + 1, generator=g),
        "pred_tokens": torch.randn(len(sizes), num_queries, *token_shape, generator=g),
    }
    targets = [
        {
            "labels": torch.randint(0, NUM_CLASSES, (n,), generator=g),
            "tokens": torch.randn(n, *token_shape, generator=g),
        }
        for n in sizes
    ]
    return outputs, targets


def cost_matrix(
    logits: torch.Tensor, tokens: torch.Tensor, target: dict, matcher: HungarianMatcher
) -> torch.Tensor:
    """[Q, N] costs of one image, written out in float64."""
    prob = logits.double().softmax(-1)[:, target["labels"]]
    diff = tokens.double().flatten(1)[:, None] - target["tokens"].double().flatten(1)[None]
    return matcher.cost_class * -prob + matcher.cost_token * diff.norm(dim=-1)


def brute_force_min(cost: torch.Tensor) -> float:
    """Minimum total cost over every injective assignment of min(Q, N) pairs."""
    num_queries, num_parts = cost.shape
    if num_parts <= num_queries:  # part j -> query perm[j]
        return min(
            float(sum(cost[q, j] for j, q in enumerate(p)))
            for p in itertools.permutations(range(num_queries), num_parts)
        )
    return min(
        float(sum(cost[i, j] for i, j in enumerate(p)))
        for p in itertools.permutations(range(num_parts), num_queries)
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("cost_class", "cost_token"), [(10.0, 1.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0)])
def test_matches_brute_force(seed: int, cost_class: float, cost_token: float) -> None:
    num_queries = 2 + seed % 4  # 2..5
    sizes = [seed % 4, 3, 1]  # includes N = 0 and, for Q = 2, N > Q
    outputs, targets = random_batch(sizes, num_queries, seed)
    matcher = HungarianMatcher(cost_class, cost_token)
    for b, ((rows, cols), target) in enumerate(zip(matcher(outputs, targets), targets)):
        cost = cost_matrix(outputs["pred_logits"][b], outputs["pred_tokens"][b], target, matcher)
        n = min(num_queries, len(target["labels"]))
        assert len(rows) == len(cols) == n
        assert len(set(rows.tolist())) == len(set(cols.tolist())) == n  # one-to-one
        if n:
            assert float(cost[rows, cols].sum()) == pytest.approx(brute_force_min(cost), rel=1e-5, abs=1e-5)


def test_batched_equals_single_images() -> None:
    outputs, targets = random_batch([3, 0, 5, 1], num_queries=4, seed=0)
    matcher = HungarianMatcher()
    batched = matcher(outputs, targets)
    for b, target in enumerate(targets):
        single = matcher({k: v[b : b + 1] for k, v in outputs.items()}, [target])[0]
        assert torch.equal(batched[b][0], single[0]) and torch.equal(batched[b][1], single[1])


def test_empty_targets() -> None:
    outputs, targets = random_batch([0, 0], num_queries=4, seed=1)
    for rows, cols in HungarianMatcher()(outputs, targets):
        assert rows.dtype == cols.dtype == torch.int64
        assert rows.numel() == cols.numel() == 0


def test_more_parts_than_queries() -> None:
    outputs, targets = random_batch([6], num_queries=3, seed=2)
    rows, cols = HungarianMatcher()(outputs, targets)[0]
    assert rows.tolist() == [0, 1, 2]  # every query is used, three parts are left out
    assert len(set(cols.tolist())) == 3 and all(0 <= c < 6 for c in cols.tolist())


def test_costs_in_float32_under_low_precision() -> None:
    outputs, targets = random_batch([3, 2], num_queries=5, seed=3, token_shape=(2, 256))
    low = {k: v.bfloat16() for k, v in outputs.items()}
    matcher = HungarianMatcher()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = matcher(low, targets)
    reference = matcher({k: v.float() for k, v in low.items()}, targets)
    for (r1, c1), (r2, c2) in zip(under_autocast, reference):
        assert torch.equal(r1, r2) and torch.equal(c1, c2)


def test_bad_inputs_raise() -> None:
    outputs, targets = random_batch([2], num_queries=3, seed=4)
    matcher = HungarianMatcher()
    with pytest.raises(ValueError, match="labels"):
        matcher(outputs, [{**targets[0], "labels": torch.tensor([0, NUM_CLASSES])}])  # C is "no part"
    with pytest.raises(ValueError, match="values per part"):
        matcher(outputs, [{**targets[0], "tokens": torch.randn(2, 2, 5)}])
    with pytest.raises(ValueError, match="not finite"):
        matcher({**outputs, "pred_tokens": outputs["pred_tokens"] * float("nan")}, targets)
    with pytest.raises(ValueError, match="batch of 1"):
        matcher(outputs, targets * 2)
