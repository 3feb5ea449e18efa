"""The subcommands that make or use a run: ``train``, ``eval``, ``predict``, ``serve``, ``export`` and
``plot``; thin handlers over the library."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import WpsSamError
from .arguments import decoding_options

if TYPE_CHECKING:
    from ..data.cached import CachedRows
    from ..data.coco import PartDataIndex
    from ..predictor import PartPredictor

logger = logging.getLogger("wps_sam")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def _config_overrides(args: argparse.Namespace) -> list[str]:
    """Translate the explicit options into dotted overrides (only those given on the command line)."""
    mapping = {
        "data": "data.root",
        "sam_type": "sam.type",
        "sam_checkpoint": "sam.checkpoint",
        "sam_sha256": "sam.sha256",
        "supervision": "data.supervision",
        "point_mode": "data.point_mode",
        "epochs": "train.epochs",
        "max_steps": "train.max_steps",
        "batch_size": "train.batch_size",
        "lr": "train.lr",
        "seed": "train.seed",
        "device": "train.device",
        "save_every": "train.save_every",
        "num_workers": "data.num_workers",
        "recipe": "train.recipe",
    }
    # Overrides are text parsed by each field's declared type, so a path named "yes" stays a string.
    items = [
        f"{key}={value}" for name, key in mapping.items() if (value := getattr(args, name, None)) is not None
    ]
    if getattr(args, "strict", False):
        items.append("data.strict=true")
    return items + list(getattr(args, "set", None) or [])


def cmd_train(args: argparse.Namespace) -> None:
    from ..config import load_config
    from ..engine.run_dir import CONFIG_FILE
    from ..engine.trainer import train

    config_path = args.config
    if args.resume and config_path is None and (Path(args.out) / CONFIG_FILE).is_file():
        config_path = Path(args.out) / CONFIG_FILE
    cfg = load_config(config_path, _config_overrides(args))
    if not cfg.data.root:
        raise WpsSamError("train needs --data ROOT (a folder with images/<split>/ and annotations/)")
    run = train(cfg, args.out, resume=args.resume, progress=not args.no_progress, recheck=args.recheck)
    print(f"trained: {run}")


def cmd_eval(args: argparse.Namespace) -> None:
    from ..atomic import atomic_write_json
    from ..data.checks import triaged_split
    from ..evaluation.evaluator import evaluate
    from ..plots import confusion_chart, per_class_iou_chart
    from ..predictor import PartPredictor

    out_dir = _eval_folder(args.run, args.out)
    predictor = PartPredictor.from_run(args.run, **decoding_options(args))
    index = triaged_split(
        args.data,
        args.split,
        class_names=predictor.class_names,
        strict=args.strict,
        progress=not args.no_progress,
        recheck=args.recheck,
    )
    embeddings, mirrored = None, None
    cached = predictor.cfg.train.cache if args.cache is None else args.cache
    if cached and predictor.sam_fingerprint is not None:
        embeddings, mirrored = _cached_split(index, predictor, progress=not args.no_progress)
    result = evaluate(
        predictor.model,
        index,
        predictor.cfg,
        predictor.device,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        embeddings=embeddings,
        mirrored_embeddings=mirrored,
    )
    result.update(
        {
            "split": args.split,
            "data": str(Path(args.data).resolve()),
            "inference": dataclasses.asdict(predictor.cfg.inference),
        }
    )
    out = out_dir / f"eval-{args.split}.json"
    atomic_write_json(out, result)
    name = f"{Path(args.run).name} on {args.split}"
    charts = [
        per_class_iou_chart(
            out.with_name(f"eval-{args.split}-per-class.png"), result, f"per-class IoU: {name}"
        ),
        confusion_chart(out.with_name(f"eval-{args.split}-confusion.png"), result, f"confusion: {name}"),
    ]
    paper = result["paper_protocol"]
    print(
        json.dumps(
            {
                "miou": result["miou"],
                "macc": result["macc"],
                "paper_protocol": {"miou": paper["miou"], "macc": paper["macc"]},
            }
        )
    )
    print(f"wrote {out}, {charts[0].name}, {charts[1].name}")


def _eval_folder(run: str, out: str | None) -> Path:
    """Where `eval` writes: ``--out``, else the folder of the run's weights (the run folder, or a
    weights file's folder); the shipped demo prompter lives inside the install, so it needs ``--out``."""
    from ..predictor import prompter_weights, shipped_demo_prompter

    weights = prompter_weights(run)  # a run that does not exist fails here, before --out is made
    if out is None:
        if weights == shipped_demo_prompter():
            raise WpsSamError(
                "eval of the shipped demo prompter needs --out DIR (where eval-SPLIT.json goes)"
            )
        return weights.parent
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise WpsSamError(f"--out {folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _cached_split(
    index: PartDataIndex, predictor: PartPredictor, progress: bool
) -> tuple[CachedRows | None, CachedRows | None]:
    """`eval`'s embeddings of ``index`` through the embedding cache: in the run's ``train.cache_dir``
    where that folder still exists (a run moved from another machine: the default folder), and
    encoded afresh, with a warning, where the cache folder cannot be written."""
    from ..cache import default_cache_dir
    from ..data.cached import split_embeddings

    train_cfg = predictor.cfg.train
    if train_cfg.cache_dir and not Path(train_cfg.cache_dir).is_dir():
        logger.info("the run's cache folder %s is gone: using the default one", train_cfg.cache_dir)
        train_cfg = dataclasses.replace(train_cfg, cache_dir=None)
    try:
        return split_embeddings(
            index,
            predictor.model.image_encoder,
            predictor.sam_fingerprint,
            train_cfg,
            predictor.device,
            predictor.cfg.inference.flip_test,
            progress,
        )
    except OSError as exc:
        folder = train_cfg.cache_dir or default_cache_dir()
        logger.warning("embedding cache %s not writable (%s): encoding the split without it", folder, exc)
        return None, None


def cmd_serve(args: argparse.Namespace) -> None:
    from ..serve import serve

    serve(args.run, args.host, args.port, **decoding_options(args))


def cmd_plot(args: argparse.Namespace) -> None:
    from ..engine.run_dir import METRICS_FILE
    from ..plots import training_curves

    path = Path(args.run) / METRICS_FILE
    if not path.is_file():
        raise WpsSamError(f"{path} does not exist: plot takes a run folder written by `wps-sam train`")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise WpsSamError(f"{path}: line {number} is not JSON ({exc.msg})") from None
    try:
        out = training_curves(args.out or Path(args.run) / "curves.png", records, Path(args.run).name)
    except ValueError as exc:
        raise WpsSamError(f"{path}: {exc}") from None
    print(f"wrote {out}")


def _collect_images(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.exists():
            files.append(path)
        else:
            raise WpsSamError(f"input not found: {path}")
    if not files:
        raise WpsSamError(f"no images found in {' '.join(inputs)} (looked for {sorted(IMAGE_SUFFIXES)})")
    return files


def cmd_export(args: argparse.Namespace) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise WpsSamError('export needs the onnx extra: pip install -e ".[onnx]"') from None
    from ..onnx_graph import export_image_encoder, export_onnx
    from ..predictor import PartPredictor

    predictor = PartPredictor.from_run(args.run, "cpu", args.sam_checkpoint)
    multimask = predictor.cfg.inference.point_multimask
    path = export_onnx(predictor.model, args.onnx, predictor.class_names, multimask)
    print(f"prompter + mask decoder: {path}")
    if predictor.cfg.inference.flip_test:
        print(
            "note: the graph reads one view; this run's test-time mirroring (inference.flip_test) is not "
            "in it, so its parts can differ from those of `wps-sam eval` and `wps-sam predict`"
        )
    if args.encoder_onnx:
        print(f"SAM image encoder: {export_image_encoder(predictor.model, args.encoder_onnx)}")


def cmd_predict(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from ..atomic import atomic_write_json
    from ..data.checks import inspect_image
    from ..data.images import read_image
    from ..errors import DataError
    from ..export import prediction_record, save_label_map
    from ..predictor import PartPredictor
    from ..viz import save_overlay

    files = _collect_images(args.inputs)
    if args.strict:
        bad = [(path, verdict.problem) for path in files if (verdict := inspect_image(path)).problem]
        if bad:
            raise DataError(
                f"--strict: {len(bad)} of {len(files)} input(s) unreadable, e.g. {bad[0][0]}: "
                f"{bad[0][1]}; remove them or drop --strict to skip them"
            )
    predictor = PartPredictor.from_run(args.run, **decoding_options(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records, unreadable = [], []
    for path in tqdm(files, desc="predict", disable=args.no_progress, dynamic_ncols=True):
        try:
            image = read_image(path)
        except DataError as exc:
            unreadable.append({"file": str(path), "reason": str(exc)})
            continue
        result = predictor.predict(image)
        save_label_map(out / f"{path.stem}.png", result.label_map)
        save_overlay(out / f"{path.stem}_overlay.png", image, result.label_map, predictor.class_names)
        records.append(prediction_record(str(path), *image.shape[:2], result.instances))
    atomic_write_json(
        out / "predictions.json",
        {
            "class_names": predictor.class_names,
            "inference": dataclasses.asdict(predictor.cfg.inference),
            "images": records,
            "unreadable": unreadable,
        },
    )
    if unreadable:  # one line, naming them (all are listed in predictions.json)
        named = "; ".join(f"{item['file']} ({item['reason']})" for item in unreadable[:3])
        more = f"; and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        print(
            f"wps-sam predict: skipped {len(unreadable)} unreadable input(s): {named}{more}", file=sys.stderr
        )
    print(f"predicted {len(records)} image(s) into {out}")
