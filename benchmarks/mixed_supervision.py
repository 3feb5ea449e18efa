"""Mixed supervision on the demo's data: half the parts labelled by a box, half by a point only.

Four runs of the demo's WPS-SAM configuration (``configs/demo.yaml``, the default recipe), same seed,
same steps, same images, scored on the demo's held-out split (standard mIoU, as ``wps-sam demo``):

* ``box``: every part's box; ``point``: every part's point (the demo's wps-sam-box / -point);
* ``mixed``: a share ``--point-fraction`` of the training parts keep only a point (their interior
  point, as ``wps-sam data toyparts --point-fraction`` writes it), the others their box; decoded with
  the box head and with the point head;
* ``box-subset``: the same boxed parts alone, the point-labelled ones dropped from the json (what a
  box-only method can use of the mixed labels).

``--click-source sam`` makes the clicks from the boxes alone, as a project with nothing but boxes
could (:func:`sam_clicks`): each clicked part's point is the pixel farthest from the boundary of the
tiny SAM's mask of its box (the mask's part inside the box); its box is then dropped as before, so
that the runs differ from ``interior``'s only in where the clicks sit. ``--variants`` runs some of
the four only (none: the clicks and how often they fall on their part).

The demo's data and embedding cache are reused from ``--work`` when they are there (``wps-sam demo
--out DIR`` leaves them in DIR); the label variants hard-link the same image files, so every run
reads the same cached embeddings.

    python benchmarks/mixed_supervision.py --work DIR [--point-fraction 0.5] [--seed 0] \
        [--train-images N] [--click-source interior|sam] [--variants box mixed ...] [--set KEY=VALUE ...]

(``--train-images``: the demo's ``--train-images``; ``--set``: overrides of the WPS-SAM configuration,
e.g. ``inference.flip_test=false`` for one view at test time.)

prints one JSON object (also written to DIR/mixed-supervision-<click source>-seed<S>.json; its
``total_s`` counts the clicks, ``clicks_s``, and the runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from wps_sam.build import build_sam_from_config
from wps_sam.cache import sam_fingerprint
from wps_sam.cli.arguments import fraction, positive_int
from wps_sam.config import Config
from wps_sam.data.cached import split_embeddings
from wps_sam.data.coco import instance_mask, load_split
from wps_sam.data.targets import interior_point
from wps_sam.demo import baselines
from wps_sam.demo.data import prepare_toyparts
from wps_sam.demo.settings import QUICK_SETTINGS, DemoSettings, wps_sam_config
from wps_sam.engine.trainer import train
from wps_sam.evaluation.evaluator import evaluate
from wps_sam.predictor import PartPredictor
from wps_sam.synthetic.point_labels import keep_points_only

VARIANTS = ("box", "point", "mixed", "box-subset")


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


def sam_clicks(root: Path, cfg: Config) -> tuple[dict[int, list[float]], dict]:
    """A click per training part of ``root`` from its box alone: (x, y) by annotation id, the pixel
    centre farthest from the boundary of SAM's mask of the box (logits above 0, the part inside the
    box; :func:`~wps_sam.data.targets.interior_point`), the box centre where that is empty. The
    images' embeddings come through the embedding cache of ``cfg.train``.

    Also returns how often the clicks, and for reference the box centres, fall on their part's own
    mask (``on_part``, over the parts that have one) and how many masks of SAM were empty."""
    sam = build_sam_from_config(cfg).eval()
    index = load_split(root, cfg.data.train_split)
    rows, _ = split_embeddings(
        index, sam.image_encoder, sam_fingerprint(sam), cfg.train, torch.device("cpu"), False, progress=False
    )
    oracle = baselines.SamBoxOracle(sam, index, rows)
    clicks, on_part, empty, masked = {}, np.zeros(2), 0, 0
    for i, entry in enumerate(index.images):
        if not entry.parts:
            continue
        size = (entry.height, entry.width)
        boxes = np.stack([p.box for p in entry.parts])
        masks = (oracle.part_logits(i) > 0).numpy()
        for part, box, mask in zip(entry.parts, boxes, masks, strict=True):
            x0, y0 = np.floor(box[:2]).astype(int)
            x1, y1 = np.ceil(box[2:]).astype(int)
            inside = np.zeros_like(mask)
            inside[y0:y1, x0:x1] = True
            centre, point = (box[:2] + box[2:]) / 2, interior_point(mask & inside)
            empty += point is None
            clicks[part.ann_id] = centre if point is None else point
            if part.segmentation is not None:
                masked += 1
                truth = instance_mask(part, *size)
                for k, (x, y) in enumerate((clicks[part.ann_id], centre)):
                    on_part[k] += truth[min(int(y), size[0] - 1), min(int(x), size[1] - 1)]
    stats = {
        "parts": len(clicks),
        "sam_masks_empty": empty,
        "on_part": {
            "sam_click": round(on_part[0] / max(masked, 1), 4),
            "box_centre": round(on_part[1] / max(masked, 1), 4),
        },
    }
    return {k: [round(float(v), 2) for v in xy] for k, xy in clicks.items()}, stats


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
    cfg = wps_sam_config(settings, root, work / "embeddings", supervision, seed, None)
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="the demo's folder (its toyparts/ and embeddings/)")
    parser.add_argument("--point-fraction", type=fraction, default=0.5)
    parser.add_argument("--seed", type=int, default=0, help="training seed (the data are the demo's)")
    parser.add_argument("--quick", action="store_true", help="the demo's --quick sizes (a smoke run)")
    parser.add_argument("--train-images", type=positive_int, help="training images (default: the demo's)")
    parser.add_argument(
        "--click-source",
        choices=("interior", "sam"),
        default="interior",
        help="the clicks: each part's mask's interior point, or one made from its box by SAM (sam_clicks)",
    )
    parser.add_argument(
        "--variants",
        nargs="*",
        choices=VARIANTS,
        default=list(VARIANTS),
        help="the runs (none: the clicks only)",
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    return parser.parse_args()  # a bad --point-fraction ends here, before the data, clicks and runs


def run_variants(
    args: argparse.Namespace, work: Path, settings: DemoSettings, clicks: dict[int, list[float]] | None
) -> dict[str, dict]:
    """The runs of ``args.variants`` on the demo's data in ``work`` and its mixed labels (written
    beside it, with ``clicks`` for the clicked parts when given)."""
    demo = work / "toyparts"

    def mixed(anns: list[dict]) -> list[dict]:
        return keep_points_only(
            anns, args.point_fraction, settings.data_seed, settings.image_size, settings.image_size, clicks
        )

    mixed_root = label_variant(demo, work / "toyparts-mixed", mixed)
    subset_root = label_variant(
        demo, work / "toyparts-box-subset", lambda anns: [a for a in mixed(anns) if "bbox" in a]
    )
    clicked = "" if args.click_source == "interior" else "-sam-clicks"  # the runs' folders
    runs = {
        "box": lambda: run_variant("box", demo, "box", work, settings, args.seed, ("box",)),
        "point": lambda: run_variant("point", demo, "point", work, settings, args.seed, ("point",)),
        "mixed": lambda: run_variant(
            f"mixed{clicked}", mixed_root, "mixed", work, settings, args.seed, ("box", "point")
        ),
        "box-subset": lambda: run_variant(
            f"box-subset{clicked}", subset_root, "box", work, settings, args.seed, ("box",)
        ),
    }
    return {name: runs[name]() for name in VARIANTS if name in args.variants}


def main() -> None:
    args = parse_args()
    work = Path(args.work)
    settings = QUICK_SETTINGS if args.quick else DemoSettings()
    settings = dataclasses.replace(
        settings,
        train_images=settings.train_images if args.train_images is None else args.train_images,
        overrides=(*settings.overrides, *args.set),
    )
    demo = work / "toyparts"
    prepare_toyparts(demo, settings, progress=False)
    started = time.time()
    clicks, click_stats = None, None
    if args.click_source == "sam":
        clicks, click_stats = sam_clicks(
            demo, wps_sam_config(settings, demo, work / "embeddings", "box", args.seed, None)
        )
    clicks_s = round(time.time() - started, 1)
    results = run_variants(args, work, settings, clicks)
    out = {
        "benchmark": "mixed supervision on the demo's data",
        "point_fraction": args.point_fraction,
        "click_source": args.click_source,
        "clicks_s": clicks_s,
        "clicks": click_stats,
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
    (work / f"mixed-supervision-{args.click_source}-seed{args.seed}.json").write_text(
        json.dumps(out, indent=1)
    )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
