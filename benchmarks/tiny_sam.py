"""The tiny SAM's quality figures (src/wps_sam/weights/PRETRAIN_LOG.md and the README).

1. Masks on ToyParts parts never used in pre-training: for each seed S, ``wps-sam data toyparts
   --train 0 --val 60 --seed S`` is written, and every part is prompted through segment-anything's
   ``SamPredictor`` by its tight box (single mask) and by one click at its innermost pixel (best of
   the three multimask outputs by predicted IoU); per-part IoU at full resolution, threshold 0.
2. On the demo's held-out split (``wps-sam demo``'s data, drawn here if absent): the standard mIoU of
   ``sam-gt-box-oracle`` and of ``box-fill``, as the demo scores them.

    python benchmarks/tiny_sam.py --out DIR [--sam-checkpoint F] [--seeds 1 2 3]

prints one JSON object. The knowledge probe is a separate command (``../shared/tools/feature_probe.py
DIR/demo/toyparts``, see the README).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from wps_sam.config import TrainConfig
from wps_sam.data.coco import load_split
from wps_sam.demo import baselines
from wps_sam.demo.data import encode_splits, prepare_toyparts
from wps_sam.demo.settings import DemoSettings
from wps_sam.engine.device import cpu_has_native_bf16
from wps_sam.pretraining import evaluate_coco_miou
from wps_sam.sam.backbones import build_sam
from wps_sam.synthetic.toyparts import generate_toyparts


def part_masks(sam, out: Path, seeds: list[int]) -> dict:
    rows = []
    for seed in seeds:
        root = out / f"toyparts-val60-seed{seed}"
        if not (root / "annotations" / "val" / "val.json").is_file():
            generate_toyparts(root, 0, 60, seed=seed)
        res = evaluate_coco_miou(sam, root / "annotations" / "val" / "val.json", root / "images" / "val")
        rows.append({"seed": seed, **{k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}})
    return {
        "per_seed": rows,
        "box_miou": round(float(np.mean([r["box_miou"] for r in rows])), 4),
        "point_miou": round(float(np.mean([r["point_miou"] for r in rows])), 4),
        "parts": sum(r["n_masks"] for r in rows),
    }


def demo_split(sam, out: Path) -> dict:
    root = out / "demo" / "toyparts"
    prepare_toyparts(root, DemoSettings(), progress=False)
    train = load_split(root, "train")
    val = load_split(root, "val", class_names=train.class_names)
    # The encoder's precision of the demo: bf16 where the CPU computes it natively.
    encoder_cfg = TrainConfig(cpu_amp=cpu_has_native_bf16())
    cache_dir = out / "demo" / "embeddings"
    embeddings, _ = encode_splits(sam, {"val": (val, False)}, cache_dir, encoder_cfg, progress=False)
    gt = [baselines.gt_semantic_map(e) for e in val.images]
    oracle = baselines.score(
        baselines.SamBoxOracle(sam, val, embeddings["val"]), gt, val.class_names, "", False
    )
    fill = baselines.score(lambda i: baselines.box_fill_map(val.images[i]), gt, val.class_names, "", False)
    return {"sam_gt_box_oracle_miou": round(oracle["miou"], 4), "box_fill_miou": round(fill["miou"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the generated data")
    ap.add_argument("--sam-checkpoint", help="tiny SAM weights (default: the shipped ones)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = ap.parse_args()
    torch.set_num_threads(2)
    sam = build_sam("tiny", args.sam_checkpoint)
    out = Path(args.out)
    result = {
        "sam_sha256": sam.checkpoint_sha256,
        "parts": part_masks(sam, out, args.seeds),
        **demo_split(sam, out),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
