"""The ONNX graph (prompter + SAM mask decoder) runs in onnxruntime as the model runs in torch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wps_sam.build import build_wps_sam
from wps_sam.config import load_config
from wps_sam.onnx_graph import PartDecoderGraph, export_image_encoder, export_onnx

ort = pytest.importorskip("onnxruntime", reason="the onnx extra is part of [dev]")

SMALL_SET = ["train.recipe=paper", "prompter.enc_layers=1", "prompter.dec_layers=1", "prompter.hidden_dim=32",
             "prompter.nheads=2", "prompter.dim_feedforward=64", "prompter.num_queries=6"]  # fmt: skip
SMALL_DENSE = ["train.recipe=dense", "prompter.dense_width=16"]


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    "overrides, multimask",
    [
        (SMALL_SET, False),
        ([*SMALL_DENSE, "data.supervision=point"], True),
        ([*SMALL_DENSE, "prompter.dense_refine=true"], False),
    ],
    ids=["set-prompter-boxes", "dense-points-multimask", "dense-boxes-refined"],
)
def test_onnx_matches_torch_and_the_kept_queries(mini_sam, tmp_path, overrides, multimask):
    torch.manual_seed(0)
    model = build_wps_sam(load_config(overrides=overrides), 3, mini_sam).eval()
    dense = hasattr(model.prompter, "heatmap")
    with torch.no_grad():
        if dense:
            model.prompter.heatmap[-1].bias.fill_(3.0)  # peaks everywhere: every query a part
        else:
            model.prompter.class_embed.bias.copy_(torch.tensor([0.0, 0.5, 0.2, 0.4]))
    path = export_onnx(model, tmp_path / "wps_sam.onnx", ["head", "body", "tail"], point_multimask=multimask)
    session = _session(path)
    assert json.loads(session.get_modelmeta().custom_metadata_map["class_names"]) == ["head", "body", "tail"]
    for batch in (1, 3):  # dynamic batch
        embeddings = torch.randn(batch, 256, 16, 16)
        labels, scores, masks = session.run(None, {"image_embeddings": embeddings.numpy()})
        with torch.no_grad():
            want = PartDecoderGraph(model, multimask)(embeddings)
            predictions = model.predict(embeddings, point_multimask=multimask)
        assert np.array_equal(labels, want[0].numpy()) and set(np.unique(labels)) <= {-1, 0, 1, 2}
        assert np.abs(scores - want[1].numpy()).max() <= 1e-4
        assert np.abs(masks - want[2].numpy()).max() <= 1e-4
        for b, pred in enumerate(predictions):  # the consumer's rule gives WPSSAM.predict's queries
            kept = np.flatnonzero(labels[b] >= 0)
            assert kept.tolist() == pred.query_idx.tolist() and len(kept)
            assert np.array_equal(labels[b, kept], pred.labels.numpy())
            assert np.abs(masks[b, kept] - pred.mask_logits.numpy()).max() <= 1e-4


def test_encoder_export_matches(mini_sam, tmp_path):
    model = build_wps_sam(load_config(overrides=SMALL_DENSE), 3, mini_sam).eval()
    session = _session(export_image_encoder(model, tmp_path / "encoder.onnx"))
    images = torch.randn(2, 3, 256, 256)
    (got,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        want = model.image_encoder(images).numpy()
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-3
