"""Inference pieces: only kept queries are decoded, and boxes come from the masks."""

import dataclasses

import pytest
import torch

from wps_sam.build import build_wps_sam
from wps_sam.config import load_config
from wps_sam.errors import ConfigError
from wps_sam.postprocess import select_queries
from wps_sam.predictor import _mask_boxes, _with_inference


def test_mask_boxes_by_hand():
    masks = torch.zeros(3, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:7] = True
    masks[1, 0, 11] = True
    expected = torch.tensor([[3.0, 2, 7, 5], [11, 0, 12, 1], [0, 0, 0, 0]])
    assert torch.equal(_mask_boxes(masks), expected)
    assert _mask_boxes(torch.zeros(0, 4, 4, dtype=torch.bool)).shape == (0, 4)


def test_predict_decodes_exactly_the_kept_queries(mini_sam):
    cfg = load_config(overrides=["train.recipe=paper", "prompter.enc_layers=1", "prompter.dec_layers=1",
                                 "prompter.hidden_dim=32", "prompter.nheads=2", "prompter.dim_feedforward=64",
                                 "prompter.num_queries=6"])  # fmt: skip
    model = build_wps_sam(cfg, 3, mini_sam).eval()
    with torch.no_grad():
        model.prompter.class_embed.bias.copy_(torch.tensor([0.0, 0.5, 0.2, 0.4]))  # some kept, some not
        embeddings = torch.randn(3, 256, 16, 16)
        outputs = model.prompter(embeddings)
        all_masks, _ = model.decoder(embeddings, outputs["pred_tokens"])
        predictions = model.predict(embeddings)
    for b, pred in enumerate(predictions):
        idx, labels, scores = select_queries(outputs["pred_logits"][b])
        assert torch.equal(pred.query_idx, idx) and torch.equal(pred.labels, labels)
        torch.testing.assert_close(pred.mask_logits, all_masks[b, idx], atol=1e-4, rtol=1e-4)


def test_a_batch_with_no_kept_query_decodes_nothing(mini_sam):
    cfg = load_config(overrides=["train.recipe=dense", "prompter.dense_width=16"])
    model = build_wps_sam(cfg, 3, mini_sam).eval()
    with torch.no_grad():
        model.prompter.heatmap[-1].bias.fill_(-9.0)  # no cell reaches the peak threshold
        predictions = model.predict(torch.randn(2, 256, 16, 16))
    assert [len(p.labels) for p in predictions] == [0, 0]
    assert all(p.mask_logits.shape == (0, 64, 64) for p in predictions)


def test_point_multimask_keeps_the_best_rated_of_three_masks(mini_sam):
    cfg = load_config(overrides=["train.recipe=dense", "data.supervision=point", "prompter.dense_width=16"])
    model = build_wps_sam(cfg, 3, mini_sam).eval()
    with torch.no_grad():
        model.prompter.heatmap[-1].bias.fill_(3.0)  # every cell a confident part: peaks everywhere
        embeddings = torch.randn(2, 256, 16, 16)
        outputs = model(embeddings)
        three, iou = model.decoder(embeddings, outputs["pred_tokens"], multimask_output=True)
        single = model.predict(embeddings)
        multi = model.predict(embeddings, point_multimask=True)
    for b in range(2):
        idx = multi[b].query_idx
        assert len(idx) and torch.equal(idx, single[b].query_idx)
        best = three[b, idx, iou[b, idx].argmax(-1)]
        torch.testing.assert_close(multi[b].mask_logits, best, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(single[b].mask_logits, multi[b].mask_logits)


def test_inference_overrides_change_only_the_inference_settings():
    cfg = load_config(overrides=["train.recipe=dense"])
    tuned = _with_inference(cfg, ["inference.peak_threshold=0.4", "inference.flip_test=false"], "w")
    assert (tuned.inference.peak_threshold, tuned.inference.flip_test) == (0.4, False)
    assert dataclasses.replace(tuned, inference=cfg.inference) == cfg
    with pytest.raises(ConfigError, match=r"only inference settings.*\['train.lr'\]"):
        _with_inference(cfg, ["inference.peak_threshold=0.4", "train.lr=1"], "w")
    with pytest.raises(ConfigError, match=r"^w \+ overrides: inference.peak_threshold must be in"):
        _with_inference(cfg, ["inference.peak_threshold=2"], "w")
