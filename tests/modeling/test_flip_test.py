"""Test-time mirroring of the dense prompter (``inference.flip_test``), pinned by exact constructions."""

from __future__ import annotations

import pytest
import torch

from wps_sam.build import build_wps_sam
from wps_sam.config import load_config
from wps_sam.errors import ConfigError
from wps_sam.modeling.dense_prompter import DensePrompter, average_with_mirror
from wps_sam.predictor import _with_inference

C = 3
GRID = (8, 8)


def _mirror(dense: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The maps an exactly mirror-equivariant prompter gives for the mirror image."""
    out = {"heatmap": dense["heatmap"].flip(-1)}
    for key in ("geometry", "point_geometry"):
        if key in dense:
            flipped = dense[key].flip(2)
            out[key] = torch.cat([1 - flipped[..., :1], flipped[..., 1:]], dim=-1)
    return out


@pytest.mark.parametrize("geometry_dims", [(4,), (2,), (4, 2)])
def test_averaging_with_an_exact_mirror_changes_nothing(geometry_dims):
    g = torch.Generator().manual_seed(0)
    dense = {"heatmap": torch.randn(2, C, *GRID, generator=g) * 3}
    for key, dims in zip(("geometry", "point_geometry"), geometry_dims):
        dense[key] = torch.rand(2, *GRID, dims, generator=g)
    merged = average_with_mirror(dense, _mirror(dense))
    assert merged.keys() == dense.keys()
    torch.testing.assert_close(merged["heatmap"].sigmoid(), dense["heatmap"].sigmoid())  # probabilities
    for key in dense.keys() - {"heatmap"}:
        torch.testing.assert_close(merged[key], dense[key])


def test_a_part_seen_only_in_the_mirror_comes_back_at_its_own_place():
    prompter = DensePrompter(C, "box", embed_size=GRID, width=16, dilations=(1,), max_parts=3).eval()
    y, x = 2, 1
    box = torch.tensor([0.17, 0.30, 0.10, 0.20])  # centre inside cell (2, 1) of the 8 x 8 grid
    dense = {"heatmap": torch.full((1, C, *GRID), -20.0), "geometry": torch.rand(1, *GRID, 4)}
    dense["geometry"][0, y, x] = box + torch.tensor([0.02, 0.0, 0.0, 0.0])
    mirrored = {"heatmap": torch.full((1, C, *GRID), -20.0), "geometry": torch.rand(1, *GRID, 4)}
    mirrored["heatmap"][0, 1, y, GRID[1] - 1 - x] = torch.logit(torch.tensor(0.8))
    mirrored["geometry"][0, y, GRID[1] - 1 - x] = torch.tensor([1 - box[0], box[1], box[2], box[3]])
    out = prompter.peaks(average_with_mirror(dense, mirrored))
    labels = out["pred_logits"][0].argmax(-1)
    assert labels.tolist() == [1, C, C]  # one part, of class 1 (C is "no part")
    torch.testing.assert_close(out["pred_logits"][0, 0, 1].sigmoid(), torch.tensor(0.4), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["pred_geometry"][0, 0], box + torch.tensor([0.01, 0.0, 0.0, 0.0]))


def test_the_model_mirrors_the_whole_input_frame_and_decodes_from_the_image_itself(mini_sam):
    cfg = load_config(overrides=["train.recipe=dense", "prompter.dense_width=16", "inference.flip_test=true"])
    model = build_wps_sam(cfg, C, mini_sam).eval()
    images = torch.randn(1, 3, mini_sam.image_encoder.img_size, mini_sam.image_encoder.img_size)
    with torch.no_grad():
        model.prompter.heatmap[-1].bias.fill_(2.0)  # confident peaks: parts to decode
        torch.testing.assert_close(
            model.embed(images, mirrored=True), mini_sam.image_encoder(images.flip(-1))
        )
        embeddings, mirrored = model.embed(images), model.embed(images, mirrored=True)
        outputs = model(embeddings, mirrored)
        expected = model.prompter.peaks(
            average_with_mirror(model.prompter.dense(embeddings), model.prompter.dense(mirrored))
        )
        (pred,) = model.predict(embeddings, mirrored_embeddings=mirrored)
        masks, _ = model.decoder(embeddings, outputs["pred_tokens"][:, pred.query_idx])
    torch.testing.assert_close(outputs["pred_geometry"], expected["pred_geometry"])
    assert len(pred.query_idx) > 0
    torch.testing.assert_close(pred.mask_logits, masks[0], atol=1e-4, rtol=1e-4)


def test_only_the_dense_prompter_mirrors_and_only_at_test_time(mini_sam):
    with pytest.raises(ConfigError, match="flip_test"):
        load_config(overrides=["train.recipe=paper", "inference.flip_test=true"])
    with pytest.raises(ConfigError, match="dense prompter"):
        _with_inference(
            load_config(overrides=["train.recipe=paper"]), ["inference.flip_test=true"], "model.safetensors"
        )
    assert load_config().inference.flip_test  # the default (dense) recipe mirrors; a run can stop it
    assert not _with_inference(
        load_config(), ["inference.flip_test=false"], "model.safetensors"
    ).inference.flip_test
    paper = build_wps_sam(
        load_config(overrides=["train.recipe=paper", "prompter.num_queries=4"]), C, mini_sam
    )
    embeddings = torch.randn(1, 256, *mini_sam.prompt_encoder.image_embedding_size)
    with pytest.raises(ValueError, match="no test-time mirroring"):
        paper.eval()(embeddings, embeddings)
    dense = DensePrompter(C, "box", embed_size=GRID, width=16, dilations=(1,))
    small = torch.randn(1, 256, *GRID)
    with pytest.raises(ValueError, match="for evaluation"):
        dense.train()(small, small)
    with pytest.raises(ValueError, match="must match"):
        dense.eval()(small, small[..., :4])
