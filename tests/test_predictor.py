"""Inference pieces: only kept queries are decoded, and boxes come from the masks."""

import torch

from wps_sam.build import build_wps_sam
from wps_sam.config import load_config
from wps_sam.postprocess import select_queries
from wps_sam.predictor import _mask_boxes


def test_mask_boxes_by_hand():
    masks = torch.zeros(3, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:7] = True
    masks[1, 0, 11] = True
    expected = torch.tensor([[3.0, 2, 7, 5], [11, 0, 12, 1], [0, 0, 0, 0]])
    assert torch.equal(_mask_boxes(masks), expected)
    assert _mask_boxes(torch.zeros(0, 4, 4, dtype=torch.bool)).shape == (0, 4)


def test_predict_decodes_exactly_the_kept_queries(mini_sam):
    cfg = load_config(overrides=["prompter.enc_layers=1", "prompter.dec_layers=1", "prompter.hidden_dim=32",
                                 "prompter.nheads=2", "prompter.dim_feedforward=64", "prompter.num_queries=6"])
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
