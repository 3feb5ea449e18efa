"""Mixed supervision on the demo's data: half the parts labelled by a box, half by a point only.

Four runs of the demo's WPS-SAM configuration (``configs/demo.yaml``, the default recipe), same seed,
same steps, same images, scored on the demo's held-out split (standard mIoU, as ``wps-sam demo``):

* ``box``: every part's box; ``point``: every part's point (the demo's wps-sam-box / -point);
* ``mixed``: a share ``--point-fraction`` of the training parts keep only a point (their interior
  point, as ``wps-sam data toyparts --point-fraction`` writes it), the others their box; decoded with
  the box head and with the point head;
* ``box-subset``: the same boxed parts alone, the point-labelled ones dropped from the json (what a
  box-only method can use of the mixed labels).

The demo's data and embedding cache are reused from ``--work`` when they are there (``wps-sam demo
--out DIR`` leaves them in DIR); the label variants hard-link the same image files, so every run
reads the same cached embeddings.

    python benchmarks/mixed_supervision.py --work DIR [--point-fraction 0.5] [--seed 0] \
        [--train-images N] [--set KEY=VALUE ...]

(``--train-images``: the demo's ``--train-images``; ``--set``: overrides of the WPS-SAM configuration,
e.g. ``inference.flip_test=false`` for one view at test time.)

prints one JSON object (also written to DIR/mixed-supervision-seed<S>.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import torch

from wps_sam.data.coco import load_split
from wps_sam.demo.runner import QUICK_SETTINGS, DemoSettings, _wps_sam_config, prepare_toyparts
from wps_sam.engine.trainer import train
from wps_sam.evaluation.evaluator import evaluate
from wps_sam.predictor import PartPredictor
from wps_sam.synthetic.point_labels import keep_points_only


def label_variant(source: Path, out: Path, transform) -> Path:
    """A copy of the data set at ``source`` whose training annotations are ``transform(anns)``; the
    images are hard links to the same files (the same embedding-cache keys)."""
    if out.exists():
        shutil.rmtree(out)
    for split in ("train", "val"):
        for image in (source / "images" / split).iterdir():
            target = out / "images" / split / image.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(image, target)
        coco = json.loads((source / "annotations" / split / f"{split}.json").read_text())
        if split == "train":
            coco["annotations"] = transform(coco["annotations"])
        path = out / "annotations" / split / f"{split}.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(coco))
    return out


def run_variant(
    name: str,
    root: Path,
    supervision: str,
    work: Path,
    settings: DemoSettings,
    seed: int,
    prompts: tuple[str, ...],
) -> dict:
    """Train the demo's WPS-SAM on ``root`` from ``supervision`` and score it on the held-out split,
    once per head in ``prompts``."""
    cfg = _wps_sam_config(settings, root, work / "embeddings", supervision, seed, None)
    run = work / "mixed-supervision" / f"seed{seed}" / name
    if run.exists():
        shutil.rmtree(run)
    started = time.time()
    train(cfg, run, progress=False)
    record = {"supervision": supervision, "train_s": round(time.time() - started, 1), "miou": {}}
    index = None
    for prompt in prompts:
        predictor = PartPredictor.from_run(
            run, cfg.train.device, prompt=prompt if supervision == "mixed" else None
        )
        if index is None:  # the held-out split, read once for every head
            index = load_split(root, cfg.data.val_split, class_names=predictor.class_names)
        result = evaluate(predictor.model, index, predictor.cfg, predictor.device, progress=False)
        record["miou"][prompt] = round(100 * result["miou"], 1)
    train_json = json.loads((root / "annotations" / "train" / "train.json").read_text())["annotations"]
    record["train_parts"] = {
        "box": sum("bbox" in a for a in train_json),
        "point_only": sum("point" in a for a in train_json),
    }
    print(json.dumps({name: record}), flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="the demo's folder (its toyparts/ and embeddings/)")
    parser.add_argument("--point-fraction", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0, help="training seed (the data are the demo's)")
    parser.add_argument("--quick", action="store_true", help="the demo's --quick sizes (a smoke run)")
    parser.add_argument("--train-images", type=int, help="training images (default: the demo's)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args()
    work = Path(args.work)
    settings = QUICK_SETTINGS if args.quick else DemoSettings()
    settings = dataclasses.replace(
        settings,
        train_images=args.train_images or settings.train_images,
        overrides=(*settings.overrides, *args.set),
    )
    prepare_toyparts(work / "toyparts", settings, progress=False)
    demo = work / "toyparts"

    def mixed(anns: list[dict]) -> list[dict]:
        return keep_points_only(
            anns, args.point_fraction, settings.data_seed, settings.image_size, settings.image_size
        )

    mixed_root = label_variant(demo, work / "toyparts-mixed", mixed)
    subset_root = label_variant(
        demo, work / "toyparts-box-subset", lambda anns: [a for a in mixed(anns) if "bbox" in a]
    )
    started = time.time()
    results = {
        "box": run_variant("box", demo, "box", work, settings, args.seed, ("box",)),
        "point": run_variant("point", demo, "point", work, settings, args.seed, ("point",)),
        "mixed": run_variant("mixed", mixed_root, "mixed", work, settings, args.seed, ("box", "point")),
        "box-subset": run_variant("box-subset", subset_root, "box", work, settings, args.seed, ("box",)),
    }
    out = {
        "benchmark": "mixed supervision on the demo's data",
        "point_fraction": args.point_fraction,
        "seed": args.seed,
        "demo_settings": {
            "train_images": settings.train_images,
            "val_images": settings.val_images,
            "overrides": list(settings.overrides),
        },
        "threads": torch.get_num_threads(),
        "total_s": round(time.time() - started, 1),
        "results": results,
    }
    (work / f"mixed-supervision-seed{args.seed}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
