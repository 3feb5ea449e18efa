"""Test-time prompt variants of a trained box run, each applied alike to the ground-truth-box oracle.

The box target compares wps-sam-box with the tiny SAM prompted with the true boxes; a change to how
the boxes are prompted or decoded moves both, so each variant here is scored on both and judged by
their ratio. Variants (none is in the package; each patches one step for the length of its run):

- ``base``: as ``wps-sam eval`` (the reference);
- ``multimask``: SAM's three masks per box, the one its IoU head rates best (as for single clicks);
- ``scale<F>``: every box scaled by F about its centre (clipped to the frame), e.g. ``scale1.1``;
- ``boxpoint``: each box with its centre as a foreground point, in one prompt;
- ``iou<P>_<T>``: each part's score times SAM's predicted IoU to the power P when the masks are
  composed, and the parts whose predicted IoU is below T dropped (the oracle composes alike, drops
  none), e.g. ``iou1_0``, ``iou0_0.5``.

    python benchmarks/inference_variants.py DEMO_DIR base multimask scale1.1 boxpoint iou1_0

prints one JSON line per variant: the box run's and the oracle's standard mIoU (%) on the held-out
split (the embeddings computed once, as ``wps-sam eval`` computes them) and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from wps_sam.data.datasets import PartSegmentationDataset, collate_parts
from wps_sam.data.transforms import SamTransform
from wps_sam.demo import baselines
from wps_sam.demo.runner import finished_run
from wps_sam.engine.loop import encoder_autocast
from wps_sam.evaluation.evaluator import evaluate
from wps_sam.modeling import wps_sam as ws
from wps_sam.postprocess import compose_semantic_map, select_queries
from wps_sam.sam.decoder import PromptMaskDecoder, masks_to_frame
from wps_sam.sam.teacher import TeacherTokens


@contextlib.contextmanager
def patched(owner: type, name: str, value) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def scaled_boxes(factor: float, side: int):
    original = TeacherTokens.encode

    def encode(self, boxes=None, points=None):
        if boxes is not None:
            centre, half = (
                (boxes[..., :2] + boxes[..., 2:]) / 2,
                (boxes[..., 2:] - boxes[..., :2]) / 2 * factor,
            )
            boxes = torch.cat([centre - half, centre + half], -1).clamp(0, side)
        return original(self, boxes, points)

    return patched(TeacherTokens, "encode", encode)


def boxes_with_centres():
    original = TeacherTokens.encode

    def encode(self, boxes=None, points=None):
        if boxes is None:
            return original(self, boxes, points)
        flat = boxes.reshape(-1, 4).float()
        centres = ((flat[:, :2] + flat[:, 2:]) / 2)[:, None]
        with torch.autocast(flat.device.type, enabled=False):
            sparse, _ = self.prompt_encoder(
                points=(centres, torch.ones(len(flat), 1)), boxes=flat, masks=None
            )
        return sparse.reshape(*boxes.shape[:-1], *sparse.shape[1:])

    return patched(TeacherTokens, "encode", encode)


def best_of_three():
    original = PromptMaskDecoder.forward

    def forward(self, image_embeddings, tokens, multimask_output=False):
        logits, iou = original(self, image_embeddings, tokens, multimask_output=True)
        return ws.best_rated_masks(logits, iou), iou.max(-1).values

    return patched(PromptMaskDecoder, "forward", forward)


def rated_by_iou(power: float, floor: float):
    """WPSSAM.predict and the oracle with SAM's predicted IoU in the scores (one image at a time)."""

    @torch.no_grad()
    def predict(self, image_embeddings, score_threshold=0.0, point_multimask=False, mirrored_embeddings=None):
        outputs = self(image_embeddings, mirrored_embeddings)
        parts = []
        for b, logits in enumerate(outputs["pred_logits"]):
            idx, labels, scores = select_queries(logits, score_threshold)
            masks, iou = self.decoder(
                image_embeddings[b : b + 1].expand(len(idx), -1, -1, -1),
                outputs["pred_tokens"][b, idx][:, None],
            )
            iou = iou.reshape(len(idx)).clamp(0, 1)
            keep = iou >= floor
            parts.append(
                ws.PartPrediction(
                    labels[keep], (scores * iou**power)[keep], masks[:, 0].float()[keep], idx[keep]
                )
            )
        return parts

    @torch.no_grad()
    def oracle(self, i):
        entry = self.index.images[i]
        size = (entry.height, entry.width)
        if not entry.parts:
            return torch.zeros(size, dtype=torch.long)
        boxes = self.transform.apply_boxes(np.stack([p.box for p in entry.parts]), size)
        logits, iou = self.decoder(
            self.embeddings[i : i + 1].float(), self.teacher(boxes=torch.from_numpy(boxes))[None]
        )
        frame = self.transform.image_size, self.transform.input_size(size), size
        probs = masks_to_frame(logits[0], *frame).sigmoid()
        weights = iou.reshape(-1).clamp(0, 1) ** power
        return compose_semantic_map(probs, baselines._labels(entry), weights, self.threshold)

    stack = contextlib.ExitStack()
    stack.enter_context(patched(ws.WPSSAM, "predict", predict))
    stack.enter_context(patched(baselines.SamBoxOracle, "__call__", oracle))
    return stack


def variant(name: str, side: int):
    if name == "base":
        return contextlib.nullcontext()
    if name == "multimask":
        return best_of_three()
    if name == "boxpoint":
        return boxes_with_centres()
    if name.startswith("scale"):
        return scaled_boxes(float(name[5:]), side)
    if name.startswith("iou"):
        power, floor = (float(x) for x in name[3:].split("_"))
        return rated_by_iou(power, floor)
    raise SystemExit(f"unknown variant {name!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("demo", type=Path, help="the --out folder of a finished `wps-sam demo`")
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--run", default="wps-sam-box", help="the box run under DEMO/runs")
    args = parser.parse_args()
    predictor, index = finished_run(args.demo, args.run, "cpu")
    model, cfg = predictor.model, predictor.cfg
    dataset = PartSegmentationDataset(index, SamTransform(model.image_size), point_mode="box_center")
    own, mirrored = [], []
    with torch.no_grad(), encoder_autocast(predictor.device, cfg.train.amp, cfg.train.cpu_amp):
        for start in range(0, len(dataset), 8):
            images = collate_parts([dataset[i] for i in range(start, min(start + 8, len(dataset)))])["images"]
            own.append(model.embed(images).float())
            mirrored.append(model.embed(images, mirrored=True).float())
    embeddings, mirrored_embeddings = torch.cat(own), torch.cat(mirrored)
    sam = SimpleNamespace(
        prompt_encoder=model.teacher.prompt_encoder,
        mask_decoder=model.decoder.mask_decoder,
        image_encoder=model.image_encoder,
    )
    gt_maps = [baselines.gt_semantic_map(entry) for entry in index.images]
    for name in args.variants:
        with variant(name, model.image_size):
            run = evaluate(
                model, index, cfg, predictor.device, progress=False,
                embeddings=embeddings, mirrored_embeddings=mirrored_embeddings,
            )  # fmt: skip
            oracle = baselines.score(
                baselines.SamBoxOracle(sam, index, embeddings), gt_maps, index.class_names, "oracle", False
            )
        box, reference = round(100 * run["miou"], 2), round(100 * oracle["miou"], 2)
        print(
            json.dumps({"variant": name, "box": box, "oracle": reference, "ratio": round(box / reference, 4)})
        )


if __name__ == "__main__":
    main()
