"""The convergence remedies of the prompter, each pinned by a property."""

from __future__ import annotations

import copy

import pytest
import torch

from wps_sam.config import LossConfig
from wps_sam.modeling.criterion import build_criterion
from wps_sam.modeling.denoising import Denoiser
from wps_sam.modeling.dense_criterion import (
    DenseCriterion,
    build_dense_criterion,
    geometry_samples,
    target_heatmap,
)
from wps_sam.modeling.dense_prompter import DensePrompter
from wps_sam.modeling.geometry import normalise, sine_embedding, to_pixels
from wps_sam.modeling.prompter import Prompter
from wps_sam.modeling.proposals import assign_cells, cell_anchors
from wps_sam.modeling.queries import DenoisingQueries, QueryRecipe, group_attention_mask
from wps_sam.modeling.transformer import Transformer
from wps_sam.sam.teacher import TeacherTokens

C = 4
SMALL = dict(num_queries=5, hidden_dim=64, nheads=4, enc_layers=1, dec_layers=2, dim_feedforward=128)
EMBED = (16, 16)


def _prompter(**recipe) -> Prompter:
    torch.manual_seed(0)
    return Prompter(C, embed_size=EMBED, **SMALL, recipe=QueryRecipe(**recipe))


def _dn(batch: int = 2, per_group: int = 3, groups: int = 2, seed: int = 0) -> DenoisingQueries:
    g = torch.Generator().manual_seed(seed)
    n = groups * per_group
    return DenoisingQueries(
        labels=torch.randint(0, C, (batch, n), generator=g),
        geometry=torch.rand(batch, n, 4, generator=g) * 0.5 + 0.25,
        tokens=torch.randn(batch, n, 2, 256, generator=g),
        part_index=torch.arange(per_group).repeat(groups)[None].expand(batch, -1).clone(),
        groups=groups,
        per_group=per_group,
    )


def test_paper_prompter_is_detrs_transformer_exactly():
    prompter = _prompter().eval()
    emb = torch.randn(2, 256, *EMBED)
    hs = prompter.transformer(prompter.neck(emb), prompter.pos_embed, prompter.query_embed.weight)
    out = prompter(emb)
    torch.testing.assert_close(out["pred_logits"], prompter.class_embed(hs), rtol=0, atol=0)
    assert set(out) == {"pred_logits", "pred_tokens"}


@pytest.mark.parametrize("recipe", [{}, {"geometry": "box"}, {"two_stage": True, "geometry": "box"}])
def test_denoising_and_matching_queries_never_see_each_other(recipe):
    prompter = _prompter(denoising=True, aux_loss=True, groups=2, **recipe).train()
    emb = torch.randn(2, 256, *EMBED)
    a = prompter(emb, _dn(seed=0))
    b = prompter(emb, _dn(seed=1))  # other noised queries
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"])
    for la, lb in zip(a["aux_outputs"], b["aux_outputs"]):
        torch.testing.assert_close(la["pred_logits"], lb["pred_logits"])
    plain = prompter(emb)  # no denoising queries at all: the matching queries are the same
    torch.testing.assert_close(a["pred_logits"], plain["pred_logits"])
    # ... and one denoising group does not see another: change group 1 only.
    dn = _dn(seed=0)
    other = copy.deepcopy(dn)
    other.tokens[:, 3:] = torch.randn_like(other.tokens[:, 3:])
    c = prompter(emb, other)
    torch.testing.assert_close(a["dn_outputs"]["pred_logits"][:, :3], c["dn_outputs"]["pred_logits"][:, :3])
    assert not torch.allclose(a["dn_outputs"]["pred_logits"][:, 3:], c["dn_outputs"]["pred_logits"][:, 3:])


def test_query_groups_are_independent_and_inference_keeps_the_first():
    prompter = _prompter(groups=3, aux_loss=True)
    emb = torch.randn(1, 256, *EMBED)
    train_out = prompter.train()(emb)
    assert train_out["pred_logits"].shape == (1, 15, C + 1)
    eval_out = prompter.eval()(emb)
    assert eval_out["pred_logits"].shape == (1, 5, C + 1)
    torch.testing.assert_close(train_out["pred_logits"][:, :5], eval_out["pred_logits"])
    mask = group_attention_mask([2, 2, 1])
    assert mask.tolist() == [
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 0, 1],
    ]


def test_auxiliary_loss_of_the_first_layer_is_the_final_loss_of_a_one_layer_decoder():
    deep = _prompter(aux_loss=True, geometry="box")
    torch.manual_seed(1)
    shallow = Prompter(C, embed_size=EMBED, **{**SMALL, "dec_layers": 1}, recipe=QueryRecipe(geometry="box"))
    state = {k: v for k, v in deep.state_dict().items() if k in shallow.state_dict()}
    shallow.load_state_dict(state)
    emb = torch.randn(2, 256, *EMBED)
    targets = [_target(2, 0), _target(1, 1)]
    criterion = build_criterion(LossConfig(), C)
    deep_out, shallow_out = deep(emb), shallow(emb)
    for out in (deep_out, shallow_out, *deep_out["aux_outputs"]):
        out["pred_tokens"] = torch.zeros(*out["pred_logits"].shape[:2], 2, 256)
    deep_losses, shallow_losses = criterion(deep_out, targets), criterion(shallow_out, targets)
    for key in ("loss_ce", "loss_geom", "loss_giou", "loss_token"):
        torch.testing.assert_close(deep_losses[f"{key}_0"], shallow_losses[key])
    # A one-layer decoder has no auxiliary term, so switching them on changes nothing.
    assert not any(k.endswith("_0") for k in shallow_losses)


def _target(n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, generator=g) * 0.6 + 0.2
    size = torch.rand(n, 2, generator=g) * 0.2 + 0.05
    return {
        "labels": torch.randint(0, C, (n,), generator=g),
        "tokens": torch.zeros(n, 2, 256),
        "geometry": torch.cat([centre, size], 1),
    }


def test_geometry_tokens_are_segment_anythings_tokens(mini_sam):
    teacher = TeacherTokens(mini_sam.prompt_encoder)
    boxes = torch.tensor([[10.0, 20.0, 100.0, 120.0], [0.0, 0.0, 255.0, 255.0]])
    geometry = normalise(boxes, "box", 256).requires_grad_(True)
    ours = teacher.encode(boxes=to_pixels(geometry, "box", 256))
    official, _ = mini_sam.prompt_encoder(points=None, boxes=boxes, masks=None)
    torch.testing.assert_close(ours, official, atol=1e-4, rtol=1e-4)
    ours.sum().backward()  # the geometry gets a gradient through SAM's frozen encoder
    assert geometry.grad is not None and geometry.grad.abs().sum() > 0
    assert all(p.grad is None for p in mini_sam.prompt_encoder.parameters())
    points = torch.tensor([[30.0, 40.0]])
    official, _ = mini_sam.prompt_encoder(points=(points[:, None], torch.ones(1, 1)), boxes=None, masks=None)
    torch.testing.assert_close(teacher.encode(points=points), official)


def test_geometry_head_starts_at_its_anchors_and_refines_per_layer():
    prompter = _prompter(geometry="box", aux_loss=True)
    out = prompter(torch.randn(1, 256, *EMBED))
    anchors = prompter.query_anchor.sigmoid()[None]
    # Zero-initialised refinement heads: every layer's geometry is the anchor at the start.
    torch.testing.assert_close(out["aux_outputs"][0]["pred_geometry"], anchors)
    torch.testing.assert_close(out["pred_geometry"], anchors)
    assert out["pred_token_residual"].abs().max() == 0  # tokens start as SAM's tokens of the anchor


def test_two_stage_anchors_are_the_best_proposals():
    prompter = _prompter(two_stage=True, geometry="box").eval()
    with torch.no_grad():
        prompter.proposals.class_head.bias.zero_()
        prompter.proposals.class_head.weight.zero_()
    out = prompter(torch.randn(1, 256, *EMBED))
    enc = out["enc_outputs"]
    assert enc["pred_logits"].shape == (1, 256, C + 1) and enc["pred_geometry"].shape == (1, 256, 4)
    # Proposals start at their cells' anchors: two cells wide, centred on their cells.
    torch.testing.assert_close(enc["pred_geometry"][0], cell_anchors((16, 16), "box"))


def test_cells_answer_for_the_parts_around_them():
    anchors = cell_anchors((8, 8), "box")
    parts = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.52, 0.52, 0.1, 0.1], [0.1, 0.9, 0.01, 0.01]])
    owner = assign_cells(anchors, parts, (8, 8), radius=1.5).view(8, 8)
    assert owner[4, 4] == 1  # the small part wins where both could answer
    assert owner[2, 2] == 0 and owner[0, 0] == -1
    assert owner[7, 0] == 2  # a part smaller than a cell still has its own cell
    points = torch.tensor([[0.2, 0.2]])
    assert (assign_cells(cell_anchors((8, 8), "point"), points, (8, 8), 1.0) == 0).sum() == 4


def test_denoiser_noise_stays_near_the_truth():
    torch.manual_seed(0)
    denoiser = Denoiser("box", C, groups=3, box_noise=0.4, label_noise=0.0)
    truth = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    noised = denoiser.noised(truth.expand(1000, -1))
    assert ((noised[:, :2] - truth[:, :2]).abs() <= truth[:, 2:] / 2 * 0.4 + 1e-6).all()
    assert ((noised[:, 2:] / truth[:, 2:] - 1).abs() <= 0.4 + 1e-6).all()


def test_sine_embedding_shapes_and_range():
    e = sine_embedding(torch.rand(3, 5, 4), 32)
    assert e.shape == (3, 5, 128) and e.abs().max() <= 1


def test_dense_heatmap_peaks_at_part_centres_and_inference_keeps_peaks_above_threshold():
    geometry = torch.tensor([[0.5, 0.5, 0.25, 0.25], [0.1, 0.1, 0.1, 0.1]])
    heat = target_heatmap(torch.tensor([1, 1]), geometry, C, (16, 16))
    assert heat[1, 8, 8] == 1 and heat[1, 1, 1] == 1 and heat[0].max() == 0
    assert 0 < heat[1, 8, 9] < 1
    prompter = DensePrompter(
        C, "box", embed_size=EMBED, width=16, dilations=(1,), max_parts=4, peak_threshold=0.3
    )
    dense = {"heatmap": torch.full((1, C, 16, 16), -10.0), "geometry": torch.rand(1, 16, 16, 4)}
    dense["heatmap"][0, 2, 3, 4] = torch.logit(torch.tensor(0.6))
    dense["heatmap"][0, 0, 10, 10] = torch.logit(torch.tensor(0.2))
    out = prompter.peaks(dense)
    kept = out["pred_logits"].argmax(-1)[0]
    assert kept.tolist().count(C) == 3 and 2 in kept.tolist()  # only the peak above 0.3 is a part
    torch.testing.assert_close(out["pred_geometry"][0, 0], dense["geometry"][0, 3, 4])


def test_box_spread_widens_box_bumps_and_their_geometry_weights_and_leaves_points_alone():
    geometry = torch.tensor([[0.5, 0.5, 0.375, 0.375], [0.1, 0.1, 0.0, 0.0]])  # a 6-cell box, a point
    has_box = torch.tensor([True, False])
    narrow = target_heatmap(torch.tensor([0, 1]), geometry, C, (16, 16), has_box)
    wide = target_heatmap(torch.tensor([0, 1]), geometry, C, (16, 16), has_box, box_spread=2.0)
    # the box's bump, twice as wide, reads at 2d what the narrow one reads at d; still 1 at the centre
    assert wide[0, 8, 8] == 1
    torch.testing.assert_close(wide[0, 8, 10], narrow[0, 8, 9])
    torch.testing.assert_close(wide[1], narrow[1])  # the point's bump is a click's, whatever box_spread
    idx = torch.tensor([0, 1])
    part, _, weight = geometry_samples(geometry, idx, (16, 16), radius=2, has_box=has_box)
    _, _, wider = geometry_samples(geometry, idx, (16, 16), 2, has_box, box_spread=2.0)
    on_box = part == 0
    assert (wider[on_box] >= weight[on_box]).all() and (wider[on_box] > weight[on_box]).any()
    torch.testing.assert_close(wider[~on_box], weight[~on_box])
    criterion = build_dense_criterion(LossConfig(box_spread=2.0), C, geometry_radius=2)
    assert criterion.box_spread == 2.0


def test_dense_criterion_is_low_when_the_heatmap_is_right():
    targets = [{"labels": torch.tensor([1]), "geometry": torch.tensor([[0.5, 0.5, 0.25, 0.25]])}]
    criterion = DenseCriterion(C, {"loss_heatmap": 1.0, "loss_geom": 1.0, "loss_giou": 1.0})
    right = torch.logit(
        target_heatmap(targets[0]["labels"], targets[0]["geometry"], C, (16, 16)).clamp(1e-4, 1 - 1e-4)
    )
    geometry = torch.zeros(1, 16, 16, 4)
    geometry[0, 8, 8] = targets[0]["geometry"][0]
    good = criterion({"heatmap": right[None], "geometry": geometry}, targets)
    bad = criterion({"heatmap": torch.zeros(1, C, 16, 16), "geometry": torch.zeros(1, 16, 16, 4)}, targets)
    assert good["loss_heatmap"] < 1e-3 * bad["loss_heatmap"]
    assert good["loss_geom"] == 0 and good["loss_giou"] < 1e-5 and bad["loss_geom"] > 0
    assert good["match_recall"] == 1


def test_centre_cells_alone_learn_geometry_at_radius_zero():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(5, 4, generator=g) * 0.5 + 0.25
    targets = [
        {"labels": torch.tensor([0, 1, 2]), "geometry": gt[:3]},
        {"labels": torch.tensor([3, 1]), "geometry": gt[3:]},
    ]
    outputs = {"heatmap": torch.zeros(2, C, 16, 16), "geometry": torch.rand(2, 16, 16, 4, generator=g)}
    losses = DenseCriterion(C, {"loss_geom": 1.0}, geometry_radius=0)(outputs, targets)
    cells = (gt[:, :2] * 16).long()
    at_centres = outputs["geometry"][torch.tensor([0, 0, 0, 1, 1]), cells[:, 1], cells[:, 0]]
    torch.testing.assert_close(losses["loss_geom"], (at_centres - gt).abs().sum(-1).mean())


def test_cells_around_a_centre_learn_the_part_whose_bump_is_highest_there():
    # a large part centred at cell (8, 8) and a small one centred at (10, 8) of the same image
    gt = torch.tensor([[8.5 / 16, 8.5 / 16, 0.5, 0.5], [10.5 / 16, 8.5 / 16, 0.1, 0.1]])
    part, cells, weight = geometry_samples(gt, torch.tensor([0, 0]), (16, 16), radius=2)
    owner = {tuple(c): p for p, c in zip(part.tolist(), cells.tolist())}
    assert len(owner) == len(part)  # every cell learns one part
    assert owner[(8, 8)] == 0 and owner[(10, 8)] == 1 and owner[(6, 6)] == 0
    assert owner[(9, 8)] == 0  # the large part's bump (1 cell from its centre) beats the small one's
    assert weight[(part == 0) & (cells == torch.tensor([8, 8])).all(1)].item() == 1
    same_image_apart = geometry_samples(gt, torch.tensor([0, 1]), (16, 16), radius=2)[0]
    assert (same_image_apart == 1).sum() == 25  # in different images nothing is shared


def test_a_cell_beside_the_centre_can_reach_the_centre_with_a_geometry_radius():
    torch.manual_seed(0)
    near = DensePrompter(C, "box", embed_size=EMBED, width=16, dilations=(1,), geometry_radius=1)
    inside = DensePrompter(C, "box", embed_size=EMBED, width=16, dilations=(1,))
    raw = torch.full((1, 4, 16, 16), -1.5)
    assert (near._cell_geometry(raw)[0, 4, 4, 0] * 16).item() == pytest.approx(4 + 0.5 - 1.5)
    assert 4 < (inside._cell_geometry(raw)[0, 4, 4, 0] * 16).item() < 5
    zero = torch.zeros(1, 4, 16, 16)  # both start at the cell's middle
    torch.testing.assert_close(near._cell_geometry(zero), inside._cell_geometry(zero))


def test_maps_read_any_grid_and_dense_holds_the_trained_one():
    torch.manual_seed(0)
    prompter = DensePrompter(C, "box", embed_size=EMBED, width=16, dilations=(1,), geometry_radius=2).eval()
    embedding = torch.randn(1, 256, 16, 16)
    for key, value in prompter.dense(embedding).items():
        torch.testing.assert_close(prompter.maps(embedding)[key], value)
    wide = torch.randn(1, 256, 20, 24)
    maps = prompter.maps(wide)
    assert maps["heatmap"].shape == (1, C, 20, 24) and maps["geometry"].shape == (1, 20, 24, 4)
    # an untrained head predicts each cell's middle, normalised to the wider grid's frame
    cells = torch.zeros(1, 4, 20, 24)
    torch.testing.assert_close(
        prompter._cell_geometry(cells)[0, 3, 5, :2], torch.tensor([5.5 / 24, 3.5 / 20])
    )
    with pytest.raises(ValueError, match="expects an image embedding"):
        prompter.dense(wide)


def test_transformer_encode_is_the_encoder():
    transformer = Transformer(
        d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=64
    )
    src, pos = torch.randn(2, 32, 4, 4), torch.randn(1, 32, 4, 4)
    memory, flat_pos = transformer.encode(src, pos)
    assert memory.shape == (2, 16, 32) and flat_pos.shape == (1, 16, 32)
