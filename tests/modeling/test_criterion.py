"""The set criterion against a per-image reference, and its edge cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from wps_sam.config import LossConfig
from wps_sam.modeling.criterion import SetCriterion, build_criterion
from wps_sam.modeling.matcher import HungarianMatcher

NUM_CLASSES = 3
NUM_QUERIES = 5
TOKEN_SHAPE = (2, 256)


def random_batch(sizes: list[int], seed: int, requires_grad: bool = False) -> tuple[dict, list[dict]]:
    """Token distances (~3) and class costs (up to 10) of comparable size, so both drive matching."""
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_logits": 2 * torch.randn(len(sizes), NUM_QUERIES, NUM_CLASSES + 1, generator=g),
        "pred_tokens": 0.1 * torch.randn(len(sizes), NUM_QUERIES, *TOKEN_SHAPE, generator=g),
    }
    targets = [
        {
            "labels": torch.randint(0, NUM_CLASSES, (n,), generator=g),
            "tokens": 0.1 * torch.randn(n, *TOKEN_SHAPE, generator=g),
        }
        for n in sizes
    ]
    for v in outputs.values():
        v.requires_grad_(requires_grad)
    return outputs, targets


def make_criterion(cost_class: float = 10.0, cost_token: float = 1.0) -> SetCriterion:
    return SetCriterion(
        NUM_CLASSES, HungarianMatcher(cost_class, cost_token), {"loss_ce": 5.0, "loss_token": 20.0}
    )


def reference(outputs: dict, targets: list[dict], cost_class: float = 10.0, cost_token: float = 1.0) -> dict:
    """The official training step, image by image, in float64.

    Per image: its own cost matrix, ``linear_sum_assignment``, the mean cross-entropy over its Q
    queries and the mean smooth-L1 over its matched tokens; then the mean over images (as the official
    ``train.py``). ``loss_token_pooled`` is the mean over every matched token element of the batch
    instead, which is what :class:`SetCriterion` computes: the two agree when every image has the same
    number of parts.
    """
    ce, token, acc, recall, matches = [], [], [], [], []
    pooled_sum, pooled_count = 0.0, 0
    for logits, tokens, target in zip(outputs["pred_logits"], outputs["pred_tokens"], targets):
        logits, tokens = logits.detach().double(), tokens.detach().double().flatten(1)
        teacher = target["tokens"].double().flatten(1)
        distance = (tokens[:, None] - teacher[None]).norm(dim=-1)  # [Q, N]
        cost = cost_class * -logits.softmax(-1)[:, target["labels"]] + cost_token * distance
        rows, cols = (torch.as_tensor(x) for x in linear_sum_assignment(cost.numpy()))
        matches.append((rows, cols))
        labels = torch.full((len(logits),), NUM_CLASSES)
        labels[rows] = target["labels"][cols]
        ce.append(F.cross_entropy(logits, labels))
        acc.append((logits.argmax(-1) == labels).double().mean())
        if len(rows):
            token.append(F.smooth_l1_loss(tokens[rows], teacher[cols]))
            recall.append((logits.argmax(-1)[rows] == labels[rows]).double().mean())
            pooled_sum += F.smooth_l1_loss(tokens[rows], teacher[cols], reduction="sum")
            pooled_count += tokens[rows].numel()
    return {
        "loss_ce": torch.stack(ce).mean(),
        "loss_token_per_image": torch.stack(token).mean(),
        "loss_token_pooled": pooled_sum / pooled_count,
        "class_acc": torch.stack(acc).mean(),
        "match_recall_per_image": torch.stack(recall).mean(),
        "matches": matches,
    }


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a.double(), b.double(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_equals_per_image_reference_when_sizes_are_equal(seed: int) -> None:
    outputs, targets = random_batch([3, 3, 3], seed)
    criterion = make_criterion()
    losses = criterion(outputs, targets)
    ref = reference(outputs, targets)
    for (rows, cols), (ref_rows, ref_cols) in zip(criterion.matcher(outputs, targets), ref["matches"]):
        assert torch.equal(rows, ref_rows) and torch.equal(cols, ref_cols)
    assert close(losses["loss_ce"], ref["loss_ce"])
    assert close(losses["loss_token"], ref["loss_token_per_image"])
    assert close(losses["class_acc"], ref["class_acc"])
    assert close(losses["match_recall"], ref["match_recall_per_image"])
    assert losses["num_matched"].item() == 9


@pytest.mark.parametrize("seed", range(3))
def test_pools_matched_tokens_when_sizes_differ(seed: int) -> None:
    outputs, targets = random_batch([1, 4, 0, 7], seed)  # includes N = 0 and N > Q
    losses = make_criterion()(outputs, targets)
    ref = reference(outputs, targets)
    # Cross-entropy is a mean over Q queries per image, and Q is the same for all: per-image == pooled.
    assert close(losses["loss_ce"], ref["loss_ce"])
    assert close(losses["class_acc"], ref["class_acc"])
    assert close(losses["loss_token"], ref["loss_token_pooled"])
    assert losses["num_matched"].item() == 1 + 4 + 0 + NUM_QUERIES


def test_empty_batch() -> None:
    outputs, targets = random_batch([0, 0], seed=0, requires_grad=True)
    criterion = make_criterion()
    losses = criterion(outputs, targets)
    no_part = torch.full((2 * NUM_QUERIES,), NUM_CLASSES)
    assert close(losses["loss_ce"], F.cross_entropy(outputs["pred_logits"].flatten(0, 1), no_part))
    assert losses["loss_token"].item() == 0.0
    assert losses["num_matched"].item() == 0 and losses["match_recall"].item() == 0.0
    criterion.weighted_total(losses).backward()
    assert outputs["pred_tokens"].grad is not None and not outputs["pred_tokens"].grad.any()
    assert outputs["pred_logits"].grad.abs().sum() > 0


def test_token_loss_shrinks_as_tokens_approach_the_teacher() -> None:
    _, targets = random_batch([2], seed=1)
    teacher = targets[0]["tokens"]
    g = torch.Generator().manual_seed(2)
    # Queries 0 and 1 near parts 0 and 1; queries 2..4 far from everything, so the matching stays put.
    start = torch.cat(
        [teacher + 0.03 * torch.randn(teacher.shape, generator=g), 5 + torch.zeros(3, *TOKEN_SHAPE)]
    )
    goal = torch.cat([teacher, start[2:]])
    logits = torch.zeros(1, NUM_QUERIES, NUM_CLASSES + 1)
    criterion = make_criterion()
    values = []
    for alpha in (0.0, 0.5, 0.9, 1.0):
        tokens = (start + alpha * (goal - start)).unsqueeze(0)
        values.append(criterion({"pred_logits": logits, "pred_tokens": tokens}, targets)["loss_token"].item())
    assert values == sorted(values, reverse=True) and len(set(values)) == len(values)
    assert values[-1] == pytest.approx(0.0, abs=1e-12)


def test_gradient_step_lowers_the_total() -> None:
    outputs, targets = random_batch([2, 3], seed=3, requires_grad=True)
    criterion = make_criterion()
    total = criterion.weighted_total(criterion(outputs, targets))
    total.backward()
    # Only matched queries' tokens are distilled.
    matched = torch.zeros(2, NUM_QUERIES, dtype=torch.bool)
    for b, (rows, _) in enumerate(criterion.matcher(outputs, targets)):
        matched[b, rows] = True
    token_grad = outputs["pred_tokens"].grad.flatten(2).abs().sum(-1)
    assert (token_grad[matched] > 0).all() and (token_grad[~matched] == 0).all()
    with torch.no_grad():
        stepped = {k: v - 0.01 * v.grad for k, v in outputs.items()}
    assert criterion.weighted_total(criterion(stepped, targets)) < total


def test_weighted_total_and_builder() -> None:
    criterion = build_criterion(
        LossConfig(cost_class=2.0, cost_token=3.0, weight_ce=5.0, weight_token=20.0), 3
    )
    assert criterion.weight_dict == {"loss_ce": 5.0, "loss_token": 20.0, "loss_geom": 5.0, "loss_giou": 2.0}
    assert (criterion.matcher.cost_class, criterion.matcher.cost_token) == (2.0, 3.0)
    outputs, targets = random_batch([2, 1], seed=4)
    losses = criterion(outputs, targets)
    assert close(criterion.weighted_total(losses), 5.0 * losses["loss_ce"] + 20.0 * losses["loss_token"])
    with pytest.raises(KeyError, match="loss_token"):
        criterion.weighted_total({"loss_ce": losses["loss_ce"]})
    with pytest.raises(ValueError, match="loss_mask"):
        SetCriterion(3, HungarianMatcher(), {"loss_mask": 1.0})


def test_losses_are_float32_for_low_precision_outputs() -> None:
    outputs, targets = random_batch([2, 2], seed=5)
    losses = make_criterion()({k: v.bfloat16() for k, v in outputs.items()}, targets)
    assert all(v.dtype == torch.float32 for v in losses.values())


def test_eos_coef_weights_the_no_part_class():
    import torch.nn.functional as F

    from wps_sam.modeling.criterion import SetCriterion
    from wps_sam.modeling.matcher import HungarianMatcher

    torch.manual_seed(0)
    outputs = {"pred_logits": torch.randn(2, 5, 4), "pred_tokens": torch.randn(2, 5, 2, 8)}
    targets = [{"labels": torch.tensor([0, 2]), "tokens": torch.randn(2, 2, 8)},
               {"labels": torch.tensor([1]), "tokens": torch.randn(1, 2, 8)}]  # fmt: skip
    weights = {"loss_ce": 1.0, "loss_token": 1.0}
    plain = SetCriterion(3, HungarianMatcher(), weights)(outputs, targets)
    weighted = SetCriterion(3, HungarianMatcher(), weights, eos_coef=0.1)(outputs, targets)
    matches = HungarianMatcher()(outputs, targets)
    target_classes = torch.full((2, 5), 3)
    for b, (q, t) in enumerate(matches):
        target_classes[b, q] = targets[b]["labels"][t]
    logits = outputs["pred_logits"].flatten(0, 1)
    expected = F.cross_entropy(logits, target_classes.flatten(), torch.tensor([1.0, 1.0, 1.0, 0.1]))
    torch.testing.assert_close(weighted["loss_ce"], expected)
    torch.testing.assert_close(plain["loss_ce"], F.cross_entropy(logits, target_classes.flatten()))
