"""``wps-sam demo``: ToyParts, WPS-SAM from boxes and from points, four baselines, one report.

Stages, each timed and with its progress bar:

1. **data** — ToyParts with a subset of super-categories (:func:`prepare_toyparts`), reused when
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

import contextlib
import dataclasses
import json
import logging
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_json, atomic_write_text
from ..config import Config, config_to_dict, load_config, merge, parse_overrides
from ..data.coco import PartDataIndex, load_split
from ..data.images import read_image
from ..data.toyparts import ToyPartsConfig, write_toyparts
from ..errors import DataError

logger = logging.getLogger(__name__)

DEMO_SUPERCATEGORIES = ("Quadruped", "Bird", "Fish", "Car", "Bottle", "Aeroplane")
METHODS = (
    "wps-sam-box",
    "wps-sam-point",
    "sam-gt-box-oracle",
    "box-fill",
    "fully-supervised",
    "fully-supervised-sam-head",
)
MANIFEST = "demo_manifest.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and budgets of one demo run (the WPS-SAM numbers live in ``configs/demo.yaml``).

    ``config``: WPS-SAM config file (``None``: the packaged ``configs/demo.yaml``); ``overrides``:
    dotted overrides on top of it (``"train.max_steps=10"``). ``fs_*``: the LR-ASPP baseline;
    ``head_*``: the SAM-head baseline. ``data_seed`` draws the data set, independent of the
    training seed, so that runs with other seeds reuse the same images.
    """

    train_images: int = 800
    val_images: int = 200
    image_size: int = 256
    supercategories: tuple[str, ...] = DEMO_SUPERCATEGORIES
    data_seed: int = 0
    config: str | None = None
    overrides: tuple[str, ...] = ()
    fs_steps: int = 300
    fs_batch_size: int = 8
    fs_lr: float = 2e-3
    head_steps: int = 600
    head_batch_size: int = 16
    head_lr: float = 2e-3
    grid_images: int = 4


# A look in a few minutes: a quarter of the data, a third of the steps.
QUICK_SETTINGS = DemoSettings(
    train_images=200, val_images=50, overrides=("train.max_steps=300",), fs_steps=100, head_steps=200
)


def default_config_path() -> Path:
    """The packaged WPS-SAM configuration of the demo."""
    return Path(str(resources.files("wps_sam") / "configs" / "demo.yaml"))


# --- data ---------------------------------------------------------------------------------------


def _manifest(settings: DemoSettings) -> dict[str, Any]:
    config = ToyPartsConfig(size=settings.image_size, seed=settings.data_seed,
                            supercategories=tuple(settings.supercategories))
    return {"format": MANIFEST_FORMAT, "train": settings.train_images, "val": settings.val_images,
            "toyparts": json.loads(json.dumps(dataclasses.asdict(config)))}


def prepare_toyparts(root: str | Path, settings: DemoSettings, progress: bool = True) -> tuple[dict, bool]:
    """ToyParts for ``settings`` under ``root``; returns (manifest, reused).

    A folder whose ``demo_manifest.json`` records the same generation is reused as it is; anything
    else under ``root`` is replaced. The categories of the annotation files are cut down to the part
    classes of ``settings.supercategories``, so that the models' classes are the ones that occur.
    """
    root = Path(root)
    wanted = _manifest(settings)
    manifest_path = root / MANIFEST
    if manifest_path.is_file():
        try:
            if json.loads(manifest_path.read_text()) == wanted:
                return wanted, True
        except (OSError, json.JSONDecodeError):
            pass
        logger.info("%s holds another ToyParts generation: generating it again", root)
    if root.exists():
        shutil.rmtree(root)
    config = ToyPartsConfig(**{**wanted["toyparts"], "clutter": tuple(wanted["toyparts"]["clutter"]),
                               "supercategories": tuple(wanted["toyparts"]["supercategories"])})
    write_toyparts(root, settings.train_images, settings.val_images, config, progress=progress)
    for split in ("train", "val"):
        path = root / "annotations" / split / f"{split}.json"
        coco = json.loads(path.read_text())
        coco["categories"] = [c for c in coco["categories"] if c["supercategory"] in settings.supercategories]
        atomic_write_text(path, json.dumps(coco, separators=(",", ":")))
    atomic_write_json(manifest_path, wanted)  # last: a folder with a manifest is complete
    return wanted, False


# --- helpers ----------------------------------------------------------------------------------


class _Timings(dict):
    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        logger.info("demo: %s", name)
        started = time.time()
        try:
            yield
        finally:
            self[name] = round(time.time() - started, 2)


def _wps_sam_config(settings: DemoSettings, root: Path, cache_dir: Path, supervision: str, seed: int,
                    sam_checkpoint: str | None) -> Config:
    path = Path(settings.config) if settings.config else default_config_path()
    fixed: dict[str, dict[str, Any]] = {
        "data": {"root": str(root), "supervision": supervision, "train_split": "train", "val_split": "val"},
        # The trainer's embedding cache is the demo's: the encoder runs once per image for every stage.
        "train": {"seed": seed, "cache": True, "cache_dir": str(cache_dir)},
        "sam": {"type": "tiny", "checkpoint": sam_checkpoint},
    }
    return load_config(path, merge(parse_overrides(list(settings.overrides)), fixed))


def _encode_splits(sam: Any, indices: dict[str, PartDataIndex], cache_dir: Path,
                   progress: bool) -> dict[str, torch.Tensor]:
    """float16 [N, 256, h, w] SAM embeddings of every image of each split, through the embedding cache."""
    from ..cache import CacheContext, EmbeddingCache, sam_fingerprint
    from ..data.cached import cache_dataset
    from ..data.datasets import PartSegmentationDataset
    from ..data.transforms import SamTransform
    from ..sam.encoder import EncoderRunner

    runner = EncoderRunner(sam.image_encoder)
    context = CacheContext(sam_fingerprint(sam), sam.image_encoder.img_size, runner.precision)
    cache = EmbeddingCache(cache_dir)
    out = {}
    for split, index in indices.items():
        dataset = PartSegmentationDataset(index, SamTransform(context.image_size))
        keys = cache_dataset(dataset, cache, runner, context, batch_size=8, progress=progress)
        out[split] = cache.get(keys)
    return out


def _environment() -> dict[str, Any]:
    import torchvision

    return {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
            "threads": torch.get_num_threads(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine()}


# --- the demo ---------------------------------------------------------------------------------


def run_demo(
    out: str | Path,
    settings: DemoSettings | None = None,
    *,
    quick: bool = False,
    sam_checkpoint: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the whole demo into ``out``; returns what ``out/results.json`` holds.

    Args:
        out: output folder (created; the data set and embeddings in it are reused by later runs).
        settings: sizes and budgets; default :class:`DemoSettings`, or :data:`QUICK_SETTINGS` with
            ``quick``.
        sam_checkpoint: tiny SAM weights file; ``None`` for the weights shipped in the package.
        seed: seeds every trained method (WPS-SAM and both fully-supervised baselines).
        progress: progress bars.
    """
    from ..engine.trainer import resolve_device, train
    from ..evaluation.evaluator import evaluate
    from ..predictor import PartPredictor
    from ..sam.backbones import build_sam
    from . import baselines, report

    if settings is None:
        settings = QUICK_SETTINGS if quick else DemoSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings = _Timings()
    started = time.time()

    with timings.stage("data"):
        root = out / "toyparts"
        manifest, reused = prepare_toyparts(root, settings, progress)
        train_index = load_split(root, "train")
        val_index = load_split(root, "val", class_names=train_index.class_names)
        class_names = train_index.class_names
        gt_maps = [baselines.gt_semantic_map(e) for e in val_index.images]
    if not train_index.images or not val_index.images:
        raise DataError(f"{root}: the demo needs training and validation images")

    with timings.stage("embeddings"):
        sam = build_sam("tiny", sam_checkpoint)
        embeddings = _encode_splits(sam, {"train": train_index, "val": val_index}, out / "embeddings", progress)

    methods: dict[str, dict[str, Any]] = {}
    grid_ids = list(range(min(settings.grid_images, len(val_index.images))))
    grid_maps: dict[str, list[torch.Tensor]] = {}
    budgets: dict[str, dict[str, Any]] = {}
    configs: dict[str, dict[str, Any]] = {}

    for supervision in ("box", "point"):
        name = f"wps-sam-{supervision}"
        cfg = _wps_sam_config(settings, root, out / "embeddings", supervision, seed, sam_checkpoint)
        run = out / "runs" / name
        if run.exists():
            shutil.rmtree(run)  # the demo's own run of an earlier invocation: train afresh
        with timings.stage(f"{name}/train"):
            train(cfg, run, progress=progress)
        with timings.stage(f"{name}/eval"):
            predictor = PartPredictor.from_run(run, cfg.train.device, sam_checkpoint)
            result = evaluate(predictor.model, val_index, predictor.cfg, predictor.device, progress=progress)
        grid_maps[name] = [torch.from_numpy(predictor.predict(read_image(val_index.images[i].path)).label_map)
                           for i in grid_ids]
        methods[name] = result
        configs[name] = config_to_dict(predictor.cfg)
        steps = cfg.train.max_steps or cfg.train.epochs * -(-len(train_index.images) // cfg.train.batch_size)
        budgets[name] = {"steps": steps, "batch_size": cfg.train.batch_size,
                         "image_passes": steps * cfg.train.batch_size,
                         "seconds": timings[f"{name}/train"]}
        del predictor

    with timings.stage("sam-gt-box-oracle"):
        oracle = baselines.SamBoxOracle(sam, val_index, embeddings["val"])
        methods["sam-gt-box-oracle"] = baselines.score(oracle, gt_maps, class_names, "sam-gt-box-oracle", progress)
        grid_maps["sam-gt-box-oracle"] = [oracle(i) for i in grid_ids]

    with timings.stage("box-fill"):
        def box_fill(i: int) -> torch.Tensor:
            return baselines.box_fill_map(val_index.images[i])

        methods["box-fill"] = baselines.score(box_fill, gt_maps, class_names, "box-fill", progress)
        grid_maps["box-fill"] = [box_fill(i) for i in grid_ids]

    with timings.stage("load images"):
        train_maps = [baselines.gt_semantic_map(e) for e in train_index.images]
        train_data = baselines.load_semantic_split(train_index, train_maps, settings.image_size, progress)
        val_data = baselines.load_semantic_split(val_index, gt_maps, settings.image_size, progress)

    num_labels = len(class_names) + 1
    with timings.stage("fully-supervised/train"):
        torch.manual_seed(seed)
        net = baselines.lraspp(num_labels)
        budgets["fully-supervised"] = baselines.fit_segmenter(
            net, baselines.lraspp_batch(net, train_data), len(train_index.images), settings.fs_steps,
            settings.fs_batch_size, settings.fs_lr, warmup_steps=settings.fs_steps // 20, seed=seed,
            desc="fully-supervised", progress=progress)
    with timings.stage("fully-supervised/eval"):
        predict = baselines.lraspp_predictor(net, val_data)
        methods["fully-supervised"] = baselines.score(predict, gt_maps, class_names, "eval fully-supervised",
                                                      progress)
        grid_maps["fully-supervised"] = [predict(i) for i in grid_ids]

    with timings.stage("fully-supervised-sam-head/train"):
        torch.manual_seed(seed)
        head = baselines.EmbeddingHead(num_labels)
        head.set_input_stats(embeddings["train"])
        budgets["fully-supervised-sam-head"] = baselines.fit_segmenter(
            head, baselines.head_batch(head, embeddings["train"], train_data), len(train_index.images),
            settings.head_steps, settings.head_batch_size, settings.head_lr,
            warmup_steps=settings.head_steps // 20, seed=seed, desc="fully-supervised-sam-head",
            progress=progress)
    with timings.stage("fully-supervised-sam-head/eval"):
        predict = baselines.head_predictor(head, embeddings["val"], val_data)
        methods["fully-supervised-sam-head"] = baselines.score(predict, gt_maps, class_names,
                                                               "eval fully-supervised-sam-head", progress)
        grid_maps["fully-supervised-sam-head"] = [predict(i) for i in grid_ids]

    budgets["fully-supervised"]["note"] = (
        "from scratch, full masks; a fixed step budget (DemoSettings.fs_steps) chosen so that its training "
        "time is comparable to WPS-SAM's (encoding the training images once plus training the prompter)")
    timings["total_before_report"] = round(time.time() - started, 2)

    results: dict[str, Any] = {
        "methods": {m: methods[m] for m in METHODS},
        "targets": report.targets(methods),
        "budgets": budgets,
        "timings_s": dict(timings),
        "data": {
            "root": str(root.resolve()), "reused": reused, "generation": manifest,
            "train_images": len(train_index.images), "val_images": len(val_index.images),
            "train_parts": train_index.num_parts, "val_parts": val_index.num_parts,
            "classes": class_names,
        },
        "sam": {"type": "tiny", "checkpoint": sam_checkpoint or "shipped",
                "sha256": getattr(sam, "checkpoint_sha256", "")},
        "configs": configs,
        "settings": json.loads(json.dumps(dataclasses.asdict(settings))),
        "seed": seed,
        "device": str(resolve_device("auto")),
        "environment": _environment(),
    }
    with timings.stage("report"):
        report.write_report(out, results, val_index, grid_ids, gt_maps, grid_maps)
    results["timings_s"] = dict(timings, total=round(time.time() - started, 2))
    atomic_write_json(out / report.RESULTS_JSON, results)
    return results
