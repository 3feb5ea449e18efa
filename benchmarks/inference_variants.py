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
  none), e.g. ``iou1_0``, ``iou0_0.5``;
- ``snap<A>``: each box prompts SAM once, and the tight box of SAM's mask (logits above 0, 128x128 in
  the input frame) moves the box by the fraction A towards it before the prompt that is kept (a box
  whose mask is empty stays), e.g. ``snap1``, ``snap0.5``; the oracle snaps its true boxes alike;
- ``vote<R>``: each peak's box is the mean of the boxes its class's cells within R cells of the
  peak predict, weighted by their heat-map score (the geometry radius trains those cells on the same
  part), e.g. ``vote1``; the oracle is unchanged;
- ``pointsmall<T>``: a box whose longer side is under T pixels of SAM's input frame prompts SAM as
  its centre, a single click, instead (the parts too small for SAM to read a box well), e.g.
  ``pointsmall24``; the oracle prompts its small true boxes alike;
- ``spow<P>``: each part's score to the power P when the masks are composed (``spow0``: a pixel goes
  to the most probable mask, whatever its part's score), e.g. ``spow0.5``; the oracle's scores are 1.

    python benchmarks/inference_variants.py DEMO_DIR base multimask scale1.1 boxpoint iou1_0

prints one JSON line per variant: the box run's and the oracle's standard mIoU (%) on the held-out
split (the embeddings computed once, as ``wps-sam eval`` computes them) and their ratio; ``--split
train --images 150`` scores the first 150 training images instead (how well the run fits the images
it learned from).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from wps_sam.cli.arguments import positive_int
from wps_sam.data.datasets import PartSegmentationDataset, collate_parts
from wps_sam.data.transforms import SamTransform
from wps_sam.demo import baselines
from wps_sam.demo.runner import finished_run
from wps_sam.engine.loop import encoder_autocast
from wps_sam.errors import WpsSamError
from wps_sam.evaluation.evaluator import evaluate
from wps_sam.modeling import wps_sam as ws
from wps_sam.modeling.dense_prompter import DensePrompter
from wps_sam.modeling.geometry import to_pixels
from wps_sam.postprocess import compose_semantic_map, select_queries
from wps_sam.predictor import _mask_boxes
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


def small_boxes_as_points(side_below: float):
    original = TeacherTokens.encode

    def encode(self, boxes=None, points=None):
        if boxes is None:
            return original(self, boxes, points)
        tokens = original(self, boxes, points)
        sides = (boxes[..., 2:] - boxes[..., :2]).amax(-1)
        centres = (boxes[..., :2] + boxes[..., 2:]) / 2
        small = (sides < side_below).to(tokens.device)[..., None, None]
        return torch.where(small, original(self, None, centres), tokens)

    return patched(TeacherTokens, "encode", encode)


def best_of_three():
    original = PromptMaskDecoder.forward

    def forward(self, image_embeddings, tokens, multimask_output=False):
        logits, iou = original(self, image_embeddings, tokens, multimask_output=True)
        return ws.best_rated_masks(logits, iou), iou.max(-1).values

    return patched(PromptMaskDecoder, "forward", forward)


def rated_by_iou(power: float, floor: float):
    """WPSSAM.predict and the oracle with SAM's predicted IoU in the scores (one image at a time)."""

    def decode_parts(model, outputs, b, kept, embeddings):
        idx, labels, scores = kept
        masks, iou = model.decoder(embeddings, outputs["pred_tokens"][b, idx][:, None])
        iou = iou.reshape(len(idx)).clamp(0, 1)
        keep = iou >= floor
        return ws.PartPrediction(
            labels[keep], (scores * iou**power)[keep], masks[:, 0].float()[keep], idx[keep]
        )

    def decode(oracle, embedding, boxes):
        logits, iou = oracle.decoder(embedding, oracle.teacher(boxes=boxes)[None])
        return logits[0], iou.reshape(-1).clamp(0, 1) ** power

    stack = contextlib.ExitStack()
    stack.enter_context(patched(ws.WPSSAM, "predict", predicting(decode_parts)))
    stack.enter_context(patched(baselines.SamBoxOracle, "__call__", oracle_decoding(decode)))
    return stack


def predicting(decode_parts):
    """``WPSSAM.predict`` one image at a time, each image's kept queries made a ``PartPrediction`` by
    ``decode_parts(model, outputs, b, (idx, labels, scores), embeddings [K, 256, h, w])``."""

    @torch.no_grad()
    def predict(self, image_embeddings, score_threshold=0.0, point_multimask=False, mirrored_embeddings=None):
        outputs = self(image_embeddings, mirrored_embeddings)
        parts = []
        for b, logits in enumerate(outputs["pred_logits"]):
            kept = select_queries(logits, score_threshold)
            embeddings = image_embeddings[b : b + 1].expand(len(kept[0]), -1, -1, -1)
            parts.append(decode_parts(self, outputs, b, kept, embeddings))
        return parts

    return predict


def oracle_decoding(decode):
    """``SamBoxOracle.__call__`` whose masks and composition weights come from ``decode(oracle,
    embedding [1, 256, h, w], true boxes [N, 4] in the input frame) -> (logits [N, m, m], [N])``."""

    @torch.no_grad()
    def oracle(self, i):
        entry = self.index.images[i]
        size = (entry.height, entry.width)
        if not entry.parts:
            return torch.zeros(size, dtype=torch.long)
        boxes = self.transform.apply_boxes(np.stack([p.box for p in entry.parts]), size)
        logits, weights = decode(self, self.embeddings[i : i + 1].float(), torch.from_numpy(boxes))
        frame = self.transform.image_size, self.transform.input_size(size), size
        probs = masks_to_frame(logits, *frame).sigmoid()
        return compose_semantic_map(probs, baselines._labels(entry), weights, self.threshold)

    return oracle


def mask_boxes(logits: torch.Tensor, boxes: torch.Tensor, side: int) -> torch.Tensor:
    """[N, 4] xyxy tight boxes of the masks ``logits`` [N, m, m] > 0 (input frame of side ``side``);
    ``boxes`` [N, 4] where a mask is empty."""
    on = logits > 0
    tight = _mask_boxes(on) * (side / logits.shape[-1])
    return torch.where(on.flatten(1).any(1)[:, None], tight, boxes)


def snap(teacher, decoder, embeddings: torch.Tensor, boxes: torch.Tensor, alpha: float) -> torch.Tensor:
    """Tokens [N, 2, 256] of ``boxes`` [N, 4] (one per row of ``embeddings`` [N, 256, h, w]) moved
    by ``alpha`` towards the tight boxes of the masks SAM decodes from them."""
    logits, _ = decoder(embeddings, teacher.encode(boxes=boxes)[:, None])
    side = teacher.prompt_encoder.input_image_size[0]
    tight = mask_boxes(logits[:, 0].float(), boxes, side)
    return teacher.encode(boxes=boxes + alpha * (tight - boxes))


def snapped(alpha: float):
    """WPSSAM.predict and the oracle with every box snapped (see ``snap<A>``; one image at a time)."""

    def decode_parts(model, outputs, b, kept, embeddings):
        idx, labels, scores = kept
        boxes = to_pixels(outputs["pred_geometry"][b, idx].float(), "box", model.image_size)
        tokens = snap(model.teacher, model.decoder, embeddings, boxes, alpha)
        masks, _ = model.decoder(embeddings, tokens[:, None])
        return ws.PartPrediction(labels, scores, masks[:, 0].float(), idx)

    def decode(oracle, embedding, boxes):
        embeddings = embedding.expand(len(boxes), -1, -1, -1)
        tokens = snap(oracle.teacher, oracle.decoder, embeddings, boxes.float(), alpha)
        logits, _ = oracle.decoder(embeddings, tokens[:, None])
        return logits[:, 0], torch.ones(len(boxes))

    stack = contextlib.ExitStack()
    stack.enter_context(patched(ws.WPSSAM, "predict", predicting(decode_parts)))
    stack.enter_context(patched(baselines.SamBoxOracle, "__call__", oracle_decoding(decode)))
    return stack


def voted(radius: int):
    """DensePrompter.peaks with every peak's geometry the score-weighted mean over its neighbourhood."""
    original = DensePrompter.peaks

    def peaks(self, dense):
        out = original(self, dense)
        heat = dense["heatmap"].float().sigmoid()  # [B, C, h, w]
        b, c, h, w = heat.shape
        _, labels, cell = self.peak_cells(dense["heatmap"])  # the peaks of ``out``, [B, K]
        k = 2 * radius + 1
        # each cell's neighbourhood: scores [B, C, h*w, k*k] and geometry [B, h*w, k*k, G]
        hood = F.unfold(heat, k, padding=radius).view(b, c, k * k, h * w).transpose(2, 3)
        geometry = dense["geometry"].float().permute(0, 3, 1, 2)  # [B, G, h, w]
        geo = F.unfold(geometry, k, padding=radius).view(b, -1, k * k, h * w).permute(0, 3, 2, 1)
        image = torch.arange(b)[:, None].expand_as(cell)
        weights = hood[image, labels, cell]  # [B, K, k*k]; zero-padded cells weigh nothing
        total = weights.sum(2, keepdim=True).clamp(min=1e-6)
        out["pred_geometry"] = (weights[..., None] * geo[image, cell]).sum(2) / total
        return out

    return patched(DensePrompter, "peaks", peaks)


def score_power(power: float):
    original = ws.WPSSAM.predict

    def predict(self, *args, **kwargs):
        parts = original(self, *args, **kwargs)
        for part in parts:
            part.scores = part.scores.clamp(min=1e-6) ** power
        return parts

    return patched(ws.WPSSAM, "predict", predict)


def variant(name: str, side: int):
    """The context manager that applies variant ``name`` (parsed now, applied when called)."""
    try:
        if name == "base":
            return contextlib.nullcontext
        if name == "multimask":
            return best_of_three
        if name == "boxpoint":
            return boxes_with_centres
        if name.startswith("scale"):
            factor = float(name[5:])
            return lambda: scaled_boxes(factor, side)
        if name.startswith("snap"):
            alpha = float(name[4:])
            return lambda: snapped(alpha)
        if name.startswith("vote"):
            radius = int(name[4:])
            return lambda: voted(radius)
        if name.startswith("pointsmall"):
            below = float(name[10:])
            return lambda: small_boxes_as_points(below)
        if name.startswith("spow"):
            power = float(name[4:])
            return lambda: score_power(power)
        if name.startswith("iou"):
            power, floor = (float(x) for x in name[3:].split("_"))
            return lambda: rated_by_iou(power, floor)
    except ValueError:
        raise SystemExit(f"variant {name!r}: its number does not parse (see the docstring)") from None
    raise SystemExit(f"unknown variant {name!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("demo", type=Path, help="the --out folder of a finished `wps-sam demo`")
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--run", default="wps-sam-box", help="the box run under DEMO/runs")
    parser.add_argument("--split", default="val", help="the split of the demo's data to score")
    parser.add_argument("--images", type=positive_int, help="score the split's first N images only")
    args = parser.parse_args()
    try:
        predictor, index = finished_run(args.demo, args.run, "cpu", args.split)
    except WpsSamError as error:
        raise SystemExit(str(error)) from None
    index = dataclasses.replace(index, images=index.images[: args.images])
    model, cfg = predictor.model, predictor.cfg
    variants = {name: variant(name, model.image_size) for name in args.variants}  # typos fail first
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
    for name, apply in variants.items():
        with apply():
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
