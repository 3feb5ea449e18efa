"""``wps-sam demo``: ToyParts, WPS-SAM from boxes and from points, four baselines, one report.

Stages, each timed and with its progress bar:

1. **data** — ToyParts with a subset of super-categories (:func:`.data.prepare_toyparts`), reused when
   ``DIR/toyparts`` already holds the same generation (its manifest matches);
2. **embeddings** — the frozen tiny SAM encodes every image once into ``DIR/embeddings`` (the
   package's embedding cache); the oracle and the SAM head read them from there;
3. **wps-sam-box**, **wps-sam-point** — the product itself: :func:`~wps_sam.engine.trainer.train`
   with the packaged ``configs/demo.yaml`` into ``DIR/runs/<method>``, then
   :func:`~wps_sam.evaluation.evaluator.evaluate` of the saved run on the held-out split;
4. the baselines of :mod:`wps_sam.demo.baselines` on the same split, scored with the same
   confusion matrix;
5. **report** — ``results.json``, ``results.md``, ``results.png`` and ``overlays.png``
   (:mod:`wps_sam.demo.report`).

Everything is deterministic given ``seed`` (training order, initialisations) and the data
settings; only the timings vary from run to run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..atomic import atomic_write_json
from ..config import Config
from ..data.coco import PartDataIndex, load_split
from ..errors import DataError
from . import baselines, report
from .data import MIRRORED_TRAIN, MIRRORED_VAL, encode_splits, prepare_toyparts
from .settings import QUICK_SETTINGS, DemoSettings, wps_sam_config
from .stages import (
    HeldOutSplit,
    StageScores,
    StageTimings,
    fully_supervised_stages,
    score_stage,
    wps_sam_stage,
)

if TYPE_CHECKING:
    from ..predictor import PartPredictor

logger = logging.getLogger(__name__)

METHODS = (
    "wps-sam-box",
    "wps-sam-point",
    "sam-gt-box-oracle",
    "box-fill",
    "fully-supervised",
    "fully-supervised-sam-head",
)


def _environment() -> dict[str, Any]:
    import torchvision

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


def finished_run(
    demo: Path, run: str = "wps-sam-box", device: str = "auto", split: str = "val"
) -> tuple[PartPredictor, PartDataIndex]:
    """The predictor of run ``run`` of a finished demo in ``demo`` (``DEMO/runs/RUN``) and a split of
    the demo's data (the held-out one by default) with the run's part classes: what the benchmarks on
    a demo read."""
    from ..predictor import PartPredictor

    predictor = PartPredictor.from_run(demo / "runs" / run, device)
    return predictor, load_split(demo / "toyparts", split, class_names=predictor.class_names)


@dataclass
class _Data:
    """The demo's data set: where it is, how it was made, and its two splits."""

    root: Path
    manifest: dict[str, Any]
    reused: bool
    train_index: PartDataIndex
    val: HeldOutSplit

    def summary(self) -> dict[str, Any]:
        return {
            "root": str(self.root.resolve()),
            "reused": self.reused,
            "generation": self.manifest,
            "train_images": len(self.train_index.images),
            "val_images": len(self.val.index.images),
            "train_parts": self.train_index.num_parts,
            "val_parts": self.val.index.num_parts,
            "classes": self.train_index.class_names,
        }


def _prepare_data(root: Path, settings: DemoSettings, progress: bool) -> _Data:
    manifest, reused = prepare_toyparts(root, settings, progress)
    train_index = load_split(root, "train")
    val_index = load_split(root, "val", class_names=train_index.class_names)
    if not train_index.images or not val_index.images:
        raise DataError(f"{root}: the demo needs training and held-out images")
    gt_maps = [baselines.gt_semantic_map(e) for e in val_index.images]
    val = HeldOutSplit(val_index, gt_maps, list(range(min(settings.grid_images, len(val_index.images)))))
    return _Data(root, manifest, reused, train_index, val)


def _record_encoder_pass(scores: StageScores, encoding: dict[str, dict[str, float]]) -> None:
    """WPS-SAM's training compute is the prompter's steps plus one pass of the frozen encoder over the
    training images and their mirror images (the embeddings stage; 0 s when an earlier run left them
    in the cache)."""
    passes = [encoding[k] for k in ("train", MIRRORED_TRAIN) if k in encoding]
    for name in ("wps-sam-box", "wps-sam-point"):
        scores.budgets[name]["encoder_pass"] = {
            "encoded": sum(p["encoded"] for p in passes),
            "seconds": round(sum(p["seconds"] for p in passes), 2),
        }
    scores.budgets["fully-supervised"]["note"] = (
        "LR-ASPP MobileNetV3-Large from scratch on the full masks, no pretrained weights; its step budget "
        "(DemoSettings.fs_steps) makes its training time comparable to wps-sam-box's: the prompter's "
        "training plus one encoder pass over the training images"
    )


def _results(
    data: _Data, scores: StageScores, settings: DemoSettings, recipe: str, progress: bool
) -> dict[str, Any]:
    """Scores, the floor and the targets, budgets, data, settings and environment of ``results.json``."""
    from ..engine.device import resolve_device

    val = data.val
    # What a method that predicts no part scores: the floor every trained method starts from.
    floor = baselines.score(
        lambda i: torch.zeros_like(val.gt_maps[i]), val.gt_maps, val.index.class_names, report.FLOOR, progress
    )
    return {
        "methods": {m: scores.methods[m] for m in METHODS},
        "references": {report.FLOOR: {k: floor[k] for k in ("miou", "macc")}},
        "targets": report.targets(scores.methods, floor["miou"], settings.steps_scale),
        "budgets": scores.budgets,
        "data": data.summary(),
        "recipe": recipe,
        "configs": scores.configs,
        "settings": json.loads(json.dumps(dataclasses.asdict(settings))),
        "device": str(resolve_device("auto")),
        "environment": _environment(),
    }


def _resolved_settings(settings: DemoSettings | None, quick: bool, steps_scale: int) -> DemoSettings:
    """``settings`` (default :class:`DemoSettings`, :data:`QUICK_SETTINGS` with ``quick``) with
    ``steps_scale`` and the bf16 choice filled in (bf16 where the CPU computes it natively)."""
    from ..engine.device import cpu_has_native_bf16

    if settings is None:
        settings = QUICK_SETTINGS if quick else DemoSettings()
    if steps_scale != 1:
        settings = dataclasses.replace(settings, steps_scale=steps_scale)
    if settings.cpu_bf16 is None:
        settings = dataclasses.replace(settings, cpu_bf16=cpu_has_native_bf16())
    return settings


def _embedding_stage(
    data: _Data, configs: dict[str, Config], cache_dir: Path, sam_checkpoint: str | None, progress: bool
) -> tuple[Any, dict[str, torch.Tensor], dict[str, dict[str, float]], bool]:
    """The tiny SAM, the embeddings of every split the methods read (:func:`encode_splits`), the
    encoder's statistics, and whether the methods mirror at test time."""
    from ..sam.backbones import build_sam

    sam = build_sam("tiny", sam_checkpoint)
    splits = {"train": (data.train_index, False), "val": (data.val.index, False)}
    if any(cfg.train.augment == "hflip" for cfg in configs.values()):
        splits[MIRRORED_TRAIN] = (data.train_index, True)
    # WPS-SAM's evaluation mirrors by itself; the SAM head reads the mirror images' embeddings.
    flip_test = any(cfg.inference.flip_test for cfg in configs.values())
    if flip_test:
        splits[MIRRORED_VAL] = (data.val.index, True)
    embeddings, encoding = encode_splits(sam, splits, cache_dir, configs["box"].train, progress)
    return sam, embeddings, encoding, flip_test


def run_demo(
    out: str | Path,
    settings: DemoSettings | None = None,
    *,
    quick: bool = False,
    steps_scale: int = 1,
    sam_checkpoint: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the whole demo into ``out``; returns what ``out/results.json`` holds.

    Args:
        out: output folder (created; the data set and embeddings in it are reused by later runs).
        settings: sizes and budgets; default :class:`DemoSettings`, or :data:`QUICK_SETTINGS` with
            ``quick``.
        steps_scale: multiplies the steps of every trained method (``DemoSettings.steps_scale``).
        sam_checkpoint: tiny SAM weights file; ``None`` for the weights shipped in the package.
        seed: seeds every trained method (WPS-SAM and both fully-supervised baselines).
        progress: progress bars.
    """
    settings = _resolved_settings(settings, quick, steps_scale)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings = StageTimings()
    started = time.time()

    with timings.stage("data"):
        data = _prepare_data(out / "toyparts", settings, progress)
    val, train_index = data.val, data.train_index
    configs = {
        supervision: wps_sam_config(
            settings, data.root, out / "embeddings", supervision, seed, sam_checkpoint
        )
        for supervision in ("box", "point")
    }
    with timings.stage("embeddings"):
        sam, embeddings, encoding, flip_test = _embedding_stage(
            data, configs, out / "embeddings", sam_checkpoint, progress
        )

    scores = StageScores()
    for supervision, cfg in configs.items():
        run = out / "runs" / f"wps-sam-{supervision}"
        wps_sam_stage(cfg, run, val, embeddings, sam_checkpoint, timings, scores, progress)
    oracle = baselines.SamBoxOracle(sam, val.index, embeddings["val"])
    score_stage("sam-gt-box-oracle", oracle, val, timings, scores, progress)
    score_stage(
        "box-fill", lambda i: baselines.box_fill_map(val.index.images[i]), val, timings, scores, progress
    )
    fully_supervised_stages(
        train_index, val, embeddings, settings, seed, timings, scores, progress, flip_test
    )
    _record_encoder_pass(scores, encoding)

    results = _results(data, scores, settings, configs["box"].train.recipe, progress)
    results |= {
        # Every trained method predicted from each held-out image and its mirror (inference.flip_test).
        "flip_test": flip_test,
        "timings_s": dict(timings),
        "sam": {
            "type": "tiny",
            "checkpoint": sam_checkpoint or "shipped",
            "sha256": getattr(sam, "checkpoint_sha256", ""),
        },
        "seed": seed,
    }
    with timings.stage("report"):
        report.write_figures(out, results, val.index, val.grid_ids, val.gt_maps, scores.grid_maps)
    results["timings_s"] = dict(timings, total=round(time.time() - started, 2))
    report.write_markdown(out, results)
    atomic_write_json(out / report.RESULTS_JSON, results)
    return results
