"""Where a box-trained WPS-SAM loses against the oracle: the place, the class, the misses, the extras.

The oracle (``sam-gt-box-oracle`` of ``wps-sam demo``) prompts the same frozen SAM with every
ground-truth box and its class. This benchmark takes a trained box run and, on a held-out split,
pairs its kept parts with the ground-truth parts one to one (Hungarian matching on box IoU; a pair
counts from IoU 0.3) and scores, with the standard protocol and the run's own inference settings
(test-time mirroring included), the run as it is and with one kind of error repaired at a time:

* ``gt-box``: each paired prediction prompts SAM with its part's true box (its class and score kept);
* ``gt-class``: each paired prediction takes its part's true class;
* ``gt-box+class``: both;
* ``drop-unpaired``: the predictions paired with no part are dropped;
* ``all-repaired+missed``: all of the above, plus every part no prediction found, prompted with its
  true box and class (score 1): the oracle, up to the composition of the paired scores.

It also prints the detections' recall at box IoU 0.5 and 0.75 (class-agnostic) and with the right class,
and that recall by part size (the square root of the box's area, in pixels of SAM's input frame),
where, for dense prompters, each bin's missed parts are split by the heat-map score of their class
around their centre cell (the 3x3 cells, both views averaged as at inference): below the peak
threshold (the heat map does not see the part) or at or above it (a peak is there, but no kept part
overlaps the part by 0.5 or more). ``recall_by_class`` gives, per part class, the parts, their mean
size, the share found at IoU 0.5 (with any class and with the right one), the mean IoU of each part
with its paired prediction (0 where unpaired) and, for dense prompters, the share whose class scores
at or above the peak threshold around their centre: which classes the prompter does not see, and
which it sees but boxes badly; beside them the class's IoU as it is and with every repair.

    python benchmarks/prompter_gap.py --run DIR/runs/wps-sam-box --data DIR/toyparts [--split val]
        [--mask-threshold T] [--images N]

prints one JSON object (also written to RUN/prompter-gap-<split>.json; with ``--mask-threshold``,
which scores every variant, the oracle-like one included, at another threshold on SAM's mask logits,
to RUN/prompter-gap-<split>-mask<T>.json; with ``--images``, the split's first N images only, to
RUN/prompter-gap-<split>-firstN.json: ``--split train --images 150`` puts the training images beside
the held-out ones, how well the prompter fits what it learned from against how well it generalises).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

from wps_sam.cli.arguments import positive_int
from wps_sam.data.coco import load_split
from wps_sam.data.datasets import PartSegmentationDataset
from wps_sam.data.transforms import SamTransform
from wps_sam.demo.baselines import gt_semantic_map
from wps_sam.errors import WpsSamError
from wps_sam.evaluation.metrics import ConfusionMatrix
from wps_sam.modeling.dense_criterion import centre_cells
from wps_sam.modeling.dense_prompter import average_with_mirror
from wps_sam.modeling.geometry import to_pixels
from wps_sam.postprocess import compose_semantic_map, select_queries
from wps_sam.predictor import PartPredictor
from wps_sam.sam.decoder import masks_to_frame

VARIANTS = ("as-is", "gt-box", "gt-class", "gt-box+class", "drop-unpaired", "all-repaired+missed")
PAIR_IOU = 0.3
SIZE_EDGES_PX = (0, 12, 20, 30, 50, math.inf)  # bins of a part's size, sqrt(box area) in pixels


def pair_parts(pred_boxes: torch.Tensor, gt_boxes: torch.Tensor) -> tuple[dict[int, int], torch.Tensor]:
    """One-to-one pairs {prediction: part} of box IoU >= PAIR_IOU (Hungarian on IoU), and the IoU
    matrix [P, N]."""
    iou = box_iou(pred_boxes, gt_boxes)
    if not len(pred_boxes) or not len(gt_boxes):
        return {}, iou
    rows, cols = linear_sum_assignment(-iou.numpy())
    return {int(r): int(c) for r, c in zip(rows, cols) if iou[r, c] >= PAIR_IOU}, iou


def repaired_prompts(variant, boxes, labels, scores, gt_boxes, gt_labels, pairs):
    """The boxes, classes and scores SAM decodes for ``variant`` (see the module docstring)."""
    boxes, labels, scores = boxes.clone(), labels.clone(), scores.clone()
    if variant in ("gt-box", "gt-box+class", "all-repaired+missed"):
        for p, g in pairs.items():
            boxes[p] = gt_boxes[g]
    if variant in ("gt-class", "gt-box+class", "all-repaired+missed"):
        for p, g in pairs.items():
            labels[p] = gt_labels[g]
    if variant in ("drop-unpaired", "all-repaired+missed"):
        keep = torch.tensor([p in pairs for p in range(len(boxes))], dtype=torch.bool)
        boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
    if variant == "all-repaired+missed":
        missed = [g for g in range(len(gt_labels)) if g not in pairs.values()]
        boxes = torch.cat([boxes, gt_boxes[missed]])
        labels = torch.cat([labels, gt_labels[missed]])
        scores = torch.cat([scores, torch.ones(len(missed))])
    return boxes, labels, scores


def semantic_map(model, embeddings, prompts, input_size, entry, threshold: float) -> torch.Tensor:
    """The label map (original frame) SAM paints from ``prompts`` (boxes [K, 4] in the input frame,
    classes, scores; :func:`repaired_prompts`) on one image's ``embeddings`` [1, 256, h, w]."""
    boxes, labels, scores = prompts
    original = (entry.height, entry.width)
    if not len(labels):
        return compose_semantic_map(torch.zeros(0, *original), labels, scores, threshold)
    logits, _ = model.decoder(embeddings, model.teacher.encode(boxes=boxes)[None])
    probs = masks_to_frame(logits[0], model.image_size, input_size, original).sigmoid()
    return compose_semantic_map(probs.cpu(), labels, scores, threshold)


def recall_by_size(
    sides: torch.Tensor, found: torch.Tensor, scores: torch.Tensor | None, threshold: float | None
) -> dict:
    """Per bin of :data:`SIZE_EDGES_PX`: the parts, the share found and, given the heat-map ``scores``
    around their centres (dense prompters), the missed ones scoring below / at or above
    ``threshold``. Inputs: [N] sizes in pixels, found (bool) and scores, one per ground-truth part."""
    table = {}
    for lo, hi in zip(SIZE_EDGES_PX[:-1], SIZE_EDGES_PX[1:]):
        inside = (sides >= lo) & (sides < hi)
        row = {
            "parts": int(inside.sum()),
            "found": round(float(found[inside].float().mean()), 3) if inside.any() else None,
        }
        if scores is not None:
            missed, seen = inside & ~found, scores >= threshold
            row |= {
                "missed_below_threshold": int((missed & ~seen).sum()),
                "missed_above_threshold": int((missed & seen).sum()),
            }
        table[f"{lo}-{hi}"] = row
    return table


def recall_by_class(
    labels: torch.Tensor,
    class_names: list[str],
    sides: torch.Tensor,
    paired_iou: torch.Tensor,
    right_class: torch.Tensor,
    scores: torch.Tensor | None,
    threshold: float | None,
) -> dict:
    """Per part class with parts (one entry per ground-truth part in the [N] inputs: class, size in
    pixels, IoU with its paired prediction (0: unpaired), whether that prediction has the part's
    class, and the heat-map score around its centre for dense prompters), the statistics above."""
    table = {}
    for c, name in enumerate(class_names):
        mine = labels == c
        if not mine.any():
            continue
        found = paired_iou[mine] >= 0.5
        row = {
            "parts": int(mine.sum()),
            "mean_side_px": round(float(sides[mine].mean()), 1),
            "found": round(float(found.float().mean()), 3),
            "found_with_class": round(float((found & right_class[mine]).float().mean()), 3),
            "mean_paired_iou": round(float(paired_iou[mine].mean()), 3),
        }
        if scores is not None:
            row["seen"] = round(float((scores[mine] >= threshold).float().mean()), 3)
        table[name] = row
    return table


def add_class_iou(by_class: dict, matrices: dict[str, ConfusionMatrix], names: list[str]) -> None:
    """Each row of ``by_class`` (in place) gains its class's IoU as it is and with every repair."""
    for variant in ("as-is", "all-repaired+missed"):
        for row in matrices[variant].compute(names)["per_class"][1:]:
            if row["name"] in by_class:
                by_class[row["name"]][f"iou_{variant}"] = round(row["iou"], 3)


def centre_scores(
    model, embeddings, mirrored, gt_boxes: torch.Tensor, gt_labels: torch.Tensor
) -> torch.Tensor:
    """[N] the dense prompter's best heat-map score of each part's class in the 3x3 cells around the
    cell of its box centre (``gt_boxes`` [N, 4] xyxy in the input frame), both views averaged."""
    dense = model.prompter.dense(embeddings)
    dense.pop("features", None)
    if mirrored is not None:
        dense = average_with_mirror(dense, model.prompter.dense(mirrored))
    heat = F.max_pool2d(dense["heatmap"].float().sigmoid(), 3, stride=1, padding=1)[0]  # [C, h, w]
    centres = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2 / model.image_size
    cells = centre_cells(centres, tuple(heat.shape[1:]))
    return heat[gt_labels, cells[:, 1], cells[:, 0]]


def tally_pairs(
    pairs: dict[int, int],
    iou: torch.Tensor,
    labels: torch.Tensor,
    gt_labels: torch.Tensor,
    counts: dict[str, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each ground-truth part's IoU with its paired prediction [G] (0: unpaired) and whether that
    prediction has its class [G]; adds the image's recalls at IoU 0.5 / 0.75 to ``counts``."""
    paired_iou = torch.zeros(len(gt_labels))
    right_class = torch.zeros(len(gt_labels), dtype=torch.bool)
    for p, g in pairs.items():
        paired_iou[g] = iou[p, g]
        right_class[g] = bool(labels[p] == gt_labels[g])
        counts["recall_iou50"] += bool(iou[p, g] >= 0.5)
        counts["recall_iou75"] += bool(iou[p, g] >= 0.75)
        counts["recall_iou50_class"] += bool(iou[p, g] >= 0.5 and right_class[g])
    return paired_iou, right_class


@torch.no_grad()
def measure(
    predictor: PartPredictor,
    data: str | Path,
    split: str,
    mask_threshold: float | None = None,
    images: int | None = None,
) -> dict:
    """The figures of the module docstring on ``split`` of ``data`` (its first ``images`` images if
    given)."""
    model, cfg = predictor.model, predictor.cfg
    if model.supervision != "box":
        raise SystemExit(f"prompter_gap measures box runs; this run is trained from {model.supervision}")
    index = load_split(data, split, class_names=predictor.class_names)
    index = dataclasses.replace(index, images=index.images[:images])
    size = model.image_size
    dataset = PartSegmentationDataset(index, SamTransform(size))
    if mask_threshold is None:
        mask_threshold = cfg.inference.mask_threshold
    threshold = float(torch.sigmoid(torch.tensor(mask_threshold)))
    matrices = {v: ConfusionMatrix(model.num_classes + 1) for v in VARIANTS}
    counts = {"parts": 0, "kept": 0, "recall_iou50": 0, "recall_iou75": 0, "recall_iou50_class": 0}
    sides, paired, right, part_labels, scores_at_parts = [], [], [], [], []
    dense = model.mirrors_at_test  # the dense prompter (its heat maps)
    for i, entry in enumerate(index.images):
        item = dataset[i]
        images = item["image"][None]
        embeddings, mirrored = predictor.embed(images), predictor.embed_mirrored(images)
        outputs = model(embeddings, mirrored)
        keep, labels, scores = select_queries(outputs["pred_logits"][0], cfg.inference.score_threshold)
        boxes = to_pixels(outputs["pred_geometry"][0, keep].float(), "box", size)
        gt_boxes, gt_labels = item["boxes"].float(), item["labels"].long()  # input frame
        pairs, iou = pair_parts(boxes, gt_boxes)
        counts["parts"] += len(gt_labels)
        counts["kept"] += len(keep)
        paired_iou, right_class = tally_pairs(pairs, iou, labels, gt_labels, counts)
        paired.append(paired_iou)
        right.append(right_class)
        part_labels.append(gt_labels)
        sides.append(((gt_boxes[:, 2:] - gt_boxes[:, :2]).clamp(min=0).prod(-1)).sqrt())
        if dense:
            scores_at_parts.append(centre_scores(model, embeddings, mirrored, gt_boxes, gt_labels))
        gt_map = gt_semantic_map(entry)
        for variant in VARIANTS:
            prompts = repaired_prompts(variant, boxes, labels, scores, gt_boxes, gt_labels, pairs)
            pred_map = semantic_map(model, embeddings, prompts, item["input_size"], entry, threshold)
            matrices[variant].update(pred_map, gt_map)
    names = ["background", *index.class_names]
    parts = max(counts["parts"], 1)
    sides_t, paired_t = torch.cat(sides), torch.cat(paired)
    scores_t = torch.cat(scores_at_parts).cpu() if dense else None
    peak_threshold = model.prompter.peak_threshold if dense else None
    by_class = recall_by_class(
        torch.cat(part_labels),
        index.class_names,
        sides_t,
        paired_t,
        torch.cat(right),
        scores_t,
        peak_threshold,
    )
    add_class_iou(by_class, matrices, names)
    return {
        "miou": {v: round(m.compute(names)["miou"], 4) for v, m in matrices.items()},
        "kept_per_part": round(counts["kept"] / parts, 3),
        "recall": {
            k.removeprefix("recall_"): round(counts[k] / parts, 3) for k in counts if k.startswith("recall")
        },
        "recall_by_size": recall_by_size(sides_t, paired_t >= 0.5, scores_t, peak_threshold),
        "recall_by_class": by_class,
        "parts": counts["parts"],
        "images": len(index.images),
        "flip_test": cfg.inference.flip_test,
        "mask_threshold": mask_threshold,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a run trained with --supervision box")
    parser.add_argument("--data", required=True, help="the data root the run is scored on")
    parser.add_argument("--split", default="val")
    parser.add_argument(
        "--mask-threshold",
        type=float,
        help="on SAM's mask logits, for every variant (default: the run's inference.mask_threshold)",
    )
    parser.add_argument("--images", type=positive_int, help="score the split's first N images only")
    args = parser.parse_args()
    try:
        predictor = PartPredictor.from_run(args.run, "cpu")
        result = measure(predictor, args.data, args.split, args.mask_threshold, args.images)
    except WpsSamError as error:
        raise SystemExit(str(error)) from None
    result |= {"run": str(args.run), "data": str(args.data), "split": args.split}
    suffix = "" if args.mask_threshold is None else f"-mask{args.mask_threshold:g}"
    suffix += "" if args.images is None else f"-first{args.images}"
    (Path(args.run) / f"prompter-gap-{args.split}{suffix}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
