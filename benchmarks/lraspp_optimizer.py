"""The demo's LR-ASPP baseline under AdamW's fused kernel and under its per-tensor loop.

``engine.schedule.adamw`` runs AdamW in PyTorch's fused kernel, the same update up to floating-point
rounding. LR-ASPP from scratch is chaotic enough for that rounding to move its score; this trains the
demo's LR-ASPP (its steps, batch, lr, class weights, 128 px input, mirror augmentation) on a demo
folder's ToyParts with each implementation, for each seed, and scores it on the held-out split as the
demo does (with test-time mirroring), so that the rounding's effect can be set against the seeds':

    python benchmarks/lraspp_optimizer.py DEMO_DIR [--seeds 0 1]

prints one JSON line per training: implementation, seed, mIoU, seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from wps_sam.data.coco import load_split
from wps_sam.demo import baselines
from wps_sam.demo.settings import DemoSettings
from wps_sam.demo.stages import fit_lraspp


def per_tensor_adamw(params, lr: float, weight_decay: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(list(params), lr=lr, weight_decay=weight_decay, foreach=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("demo_dir", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    settings = DemoSettings()
    root = args.demo_dir / "toyparts"
    train_index = load_split(root, "train")
    val_index = load_split(root, "val", class_names=train_index.class_names)
    train_maps = [baselines.gt_semantic_map(e) for e in train_index.images]
    val_maps = [baselines.gt_semantic_map(e) for e in val_index.images]
    full = baselines.load_semantic_split(train_index, train_maps, settings.image_size, False)
    weights = baselines.balanced_class_weights(full.labels, train_index.num_classes + 1)
    small = settings.fs_image_size
    fs_train = baselines.load_semantic_split(train_index, train_maps, small, False)
    fs_val = baselines.load_semantic_split(val_index, val_maps, small, False)
    fused = baselines.adamw
    for seed in args.seeds:
        for name, make in (("fused", fused), ("per-tensor", per_tensor_adamw)):
            baselines.adamw = make
            net, budget = fit_lraspp(fs_train, train_index.num_classes + 1, weights, settings, seed, False)
            predict = baselines.lraspp_predictor(net, fs_val, flip_test=True)
            result = baselines.score(predict, val_maps, val_index.class_names, name, progress=False)
            print(json.dumps({"adamw": name, "seed": seed, "miou": round(result["miou"], 4),
                              "seconds": budget["seconds"]}), flush=True)  # fmt: skip
    baselines.adamw = fused


if __name__ == "__main__":
    main()
