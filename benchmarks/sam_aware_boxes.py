"""The most a prompter could gain by boxes tuned to SAM: the oracle with its true boxes optimised.

SAM's mask of a part's true box is not the part (the tiny SAM's masks leave pixels out), so the box
that makes SAM's mask fit the part best is not always the true box. A prompter trained through SAM's
frozen decoder (a box-projection loss, as BoxInst's, on SAM's mask of each predicted box) could learn
such boxes; before building that, this measures its ceiling on the ground truth itself. Every true
box of a held-out image is a parameter; Adam (lr 1 pixel) takes ``--steps`` gradient steps on the
dice loss between the x and y projections of SAM's mask (max over rows, over columns) and those of
the true box, through SAM's frozen prompt encoder and mask decoder; the oracle (every part its
class, score 1) is scored with the standard protocol after each of the steps named. The images are
encoded in float32.

    python benchmarks/sam_aware_boxes.py DEMO_DIR [--steps 0 5 10 20] [--limit N]

prints one JSON object: the oracle's mIoU (%) after each number of steps (0: the oracle itself).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from wps_sam.data.images import read_image
from wps_sam.data.transforms import SamTransform
from wps_sam.demo import baselines
from wps_sam.demo.runner import finished_run
from wps_sam.errors import WpsSamError
from wps_sam.evaluation.metrics import ConfusionMatrix
from wps_sam.postprocess import compose_semantic_map
from wps_sam.sam.decoder import masks_to_frame


def projection_loss(logits: torch.Tensor, boxes: torch.Tensor, side: int) -> torch.Tensor:
    """[N] dice losses of the x and y projections of masks ``logits`` [N, m, m] (input frame of
    side ``side``) against those of ``boxes`` [N, 4] xyxy pixels."""
    masks = logits.float().sigmoid()
    centres = (torch.arange(masks.shape[-1]) + 0.5) * side / masks.shape[-1]
    loss = torch.zeros(len(boxes))
    for axis, (lo, hi) in ((1, (0, 2)), (2, (1, 3))):  # max over rows: x; over columns: y
        proj = masks.max(axis).values
        target = ((centres >= boxes[:, lo : lo + 1]) & (centres <= boxes[:, hi : hi + 1])).float()
        loss = loss + 1 - (2 * (proj * target).sum(-1) + 1) / (proj.pow(2).sum(-1) + target.sum(-1) + 1)
    return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("demo", type=Path, help="the --out folder of a finished `wps-sam demo`")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 5, 10, 20])
    parser.add_argument("--limit", type=int, help="the first N held-out images only")
    args = parser.parse_args()
    try:
        predictor, index = finished_run(args.demo, "wps-sam-box", "cpu")
    except WpsSamError as error:
        raise SystemExit(str(error)) from None
    model = predictor.model
    side = model.image_size
    transform = SamTransform(side)
    names = ["background", *index.class_names]
    matrices = {k: ConfusionMatrix(len(names)) for k in args.steps}
    for entry in index.images[: args.limit]:
        size, gt_map = (entry.height, entry.width), baselines.gt_semantic_map(entry)
        if not entry.parts:
            for m in matrices.values():
                m.update(torch.zeros(size, dtype=torch.long), gt_map)
            continue
        with torch.no_grad():
            embeddings = model.image_encoder(transform.apply_image(read_image(entry.path))[None])
        true = torch.from_numpy(transform.apply_boxes(np.stack([p.box for p in entry.parts]), size)).float()
        embeddings = embeddings.expand(len(true), -1, -1, -1)
        boxes = true.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([boxes], lr=1.0)
        for step in range(max(args.steps) + 1):
            logits = model.decoder(embeddings, model.teacher.encode(boxes=boxes)[:, None])[0][:, 0]
            if step in args.steps:  # the masks of the boxes as they stand after `step` steps
                with torch.no_grad():
                    probs = masks_to_frame(logits, side, transform.input_size(size), size).sigmoid()
                    pred = compose_semantic_map(probs, baselines._labels(entry), torch.ones(len(true)), 0.5)
                matrices[step].update(pred, gt_map)
            if step == max(args.steps):
                break
            loss = projection_loss(logits, true, side).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    print(json.dumps({str(k): round(100 * m.compute(names)["miou"], 2) for k, m in matrices.items()}))


if __name__ == "__main__":
    main()
