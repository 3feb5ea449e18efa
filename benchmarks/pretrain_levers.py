"""What each lever of the tiny SAM's pre-training buys: short runs from scratch, one change at a time.

Every variant is the shipped recipe (src/wps_sam/weights/PRETRAIN_LOG.md) with one lever removed or
swapped; same seed, same steps, same data. Each run has ``--steps`` steps (the first three quarters at
128 px, the rest at 256 px, as the shipped curriculum) and is then scored by

1. the pre-training log's held-out generic scenes: box / point mIoU (SamPredictor);
2. ToyParts parts never used in pre-training (``wps-sam data toyparts --train 0 --val 60 --seed S``):
   box / click mIoU, as ``benchmarks/tiny_sam.py`` scores the shipped model (the click by the best
   multimask output, and by the single-mask output: the fair figure for ``no-multimask``, whose
   multimask outputs are never trained);
3. with ``--probe ../shared/tools/feature_probe.py``, the knowledge probe on the demo's data at reduced
   sizes (``--probe-args``), for the variants in ``--probe-variants`` (the probe loads weights into
   the tiny SAM's own architecture, so only variants with that architecture can take it).

A short run measures how fast each lever makes the model learn, not where a long run ends. Each
variant's run and scores sit in its own folder, so an interrupted benchmark continues where it stopped.

    python benchmarks/pretrain_levers.py --out DIR [--steps 300] [--variants A B ...] [--probe F]

prints one JSON object (also written to DIR/levers.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from wps_sam.demo.data import prepare_toyparts
from wps_sam.demo.settings import DemoSettings
from wps_sam.pretraining import BatchConfig, PretrainConfig, evaluate_coco_miou, pretrain_tiny_sam
from wps_sam.pretraining.trainer import WEIGHTS_NAME, new_sam
from wps_sam.synthetic.toyparts import generate_toyparts


def shipped_recipe(steps: int) -> PretrainConfig:
    """The shipped run's settings (PRETRAIN_LOG.md), scaled to ``steps``."""
    batches = BatchConfig(
        steps=steps, batch_size=8, prompts_per_image=4, low_res_steps=steps * 3 // 4, object_batch_size=8
    )
    return PretrainConfig(
        batches=batches, lr=8e-4, warmup_steps=max(1, steps // 10), eval_images=32, loader_workers=0
    )


def _batches(cfg: PretrainConfig, **changes) -> PretrainConfig:
    return replace(cfg, batches=replace(cfg.batches, **changes))


# Each lever of the issue, removed or swapped (a name -> the change to the shipped recipe).
VARIANTS: dict[str, Callable[[PretrainConfig], PretrainConfig]] = {
    "shipped": lambda c: c,
    # knowledge: no image-level object labels of ToyParts-world images
    "no-object-labels": lambda c: _batches(c, object_batch_size=0),
    # mask distribution: no part-like assemblies (their share becomes single shapes)
    "no-assemblies": lambda c: _batches(c, shapes=replace(c.batches.shapes, p_assembly=0.0)),
    # SAM's recipe: exact boxes only (no box jitter)
    "no-box-jitter": lambda c: _batches(c, prompts=replace(c.batches.prompts, p_exact_box=1.0)),
    # from scratch: no tied decoder attention and no box warm-up
    "no-warm-start": lambda c: replace(c, tied_attention_init=False, box_warmup_steps=0),
    # resolution: the same encoder, its embedding pooled to 16x16 (masks 64x64 at 256 px)
    "embed-16x16": lambda c: replace(c, embed_stride=16),
    # SAM's recipe: every step at 256 px (no low-resolution curriculum)
    "no-curriculum": lambda c: _batches(c, low_res_steps=0),
    # SAM's recipe: single points train the single-mask output (no ambiguity-aware multimask minimum)
    "no-multimask": lambda c: replace(c, mask_recipe=replace(c.mask_recipe, multimask=False)),
    # SAM's recipe: no IoU head loss (SamPredictor then picks a click's mask by an untrained head)
    "no-iou-head": lambda c: replace(c, mask_weights=replace(c.mask_weights, iou=0.0)),
    # SAM's recipe: two iterative correction clicks per prompt, the previous logits as mask prompt
    "correction-clicks": lambda c: replace(c, mask_recipe=replace(c.mask_recipe, correction_clicks=2)),
    # encoder: the official ViT structure scaled down (16x16 embedding). Its position embedding is
    # fixed to 256 px, so it runs without the curriculum: compare it with no-curriculum.
    "vit-mini": lambda c: _batches(replace(c, encoder="vit_mini"), low_res_steps=0),
}


def trained_sam(cfg: PretrainConfig, weights: Path) -> torch.nn.Module:
    sam = new_sam(cfg)
    sam.load_state_dict(load_file(str(weights)))
    return sam.eval()


def held_out_scores(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "pretrain_log.jsonl").read_text().splitlines()]
    last = [r for r in rows if "eval_box_miou" in r][-1]
    return {"held_out_box_miou": last["eval_box_miou"], "held_out_point_miou": last["eval_point_miou"]}


def toyparts_scores(sam: torch.nn.Module, out: Path, seed: int) -> dict:
    root = out / f"toyparts-val60-seed{seed}"
    if not (root / "annotations" / "val" / "val.json").is_file():
        generate_toyparts(root, 0, 60, seed=seed)
    res = evaluate_coco_miou(sam, root / "annotations" / "val" / "val.json", root / "images" / "val")
    return {
        "toyparts_box_miou": round(res["box_miou"], 4),
        "toyparts_click_miou": round(res["point_miou"], 4),
        "toyparts_click_single_miou": round(res["point_single_miou"], 4),
    }


def probe_scores(probe: Path, probe_args: list[str], weights: Path, out: Path) -> dict:
    root = out / "demo" / "toyparts"
    prepare_toyparts(root, DemoSettings(), progress=False)
    cmd = [sys.executable, str(probe), str(root), "--sam-checkpoint", str(weights), *probe_args]
    result = json.loads(
        subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
    )
    return {
        "probe_embedding_fg_acc": result["sam_embedding"]["fg_cell_acc"],
        "probe_pixels_fg_acc": result["raw_pixels"]["fg_cell_acc"],
    }


def run_variant(name: str, args: argparse.Namespace) -> dict:
    """Train (or resume) the variant and score it; a variant scored before is read from its folder."""
    cfg = VARIANTS[name](shipped_recipe(args.steps))
    run_dir = args.out / name
    scores = run_dir / "scores.json"
    probed = args.probe is not None and name in args.probe_variants
    if scores.is_file():
        row = json.loads(scores.read_text())
        if (
            row.get("steps") == args.steps
            and row.get("toyparts_seed") == args.seed
            and (not probed or "probe_embedding_fg_acc" in row)
        ):
            if "toyparts_click_single_miou" not in row:  # scored before that figure existed
                row |= toyparts_scores(trained_sam(cfg, run_dir / WEIGHTS_NAME), args.out, args.seed)
                scores.write_text(json.dumps(row) + "\n")
            return row
    t = time.time()
    weights = pretrain_tiny_sam(run_dir, cfg, progress=False)
    row = {"variant": name, "steps": args.steps, "toyparts_seed": args.seed, "run_s": round(time.time() - t)}
    row |= held_out_scores(run_dir) | toyparts_scores(trained_sam(cfg, weights), args.out, args.seed)
    if probed:
        row |= probe_scores(args.probe, args.probe_args.split(), weights, args.out)
    scores.write_text(json.dumps(row) + "\n")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seed", type=int, default=1, help="seed of the ToyParts parts scored")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--probe", type=Path, help="path of feature_probe.py (no probe without it)")
    ap.add_argument("--probe-args", default="--train 200 --val 60 --steps 300")
    ap.add_argument("--probe-variants", nargs="+", default=["shipped", "no-object-labels", "no-assemblies"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.variants:
        rows.append(run_variant(name, args))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"steps": args.steps, "threads": args.threads, "toyparts_seed": args.seed, "variants": rows}
    (args.out / "levers.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
