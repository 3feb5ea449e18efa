"""The ``wps-sam`` command: thin handlers over the library.

Every user error (bad path, data, checkpoint, option or config value) ends in one line on stderr and
exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from .config import SAM_TYPES
from .data.pascal_part_groupings import GROUPINGS as PASCAL_PART_GROUPINGS
from .errors import WpsSamError
from .recipes import DEFAULT_RECIPE, RECIPES

if TYPE_CHECKING:
    from .data.cached import CachedRows
    from .data.coco import PartDataIndex
    from .predictor import PartPredictor

logger = logging.getLogger("wps_sam")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
RECHECK_HELP = "decode every image again (images unchanged since the last triage are otherwise not re-read)"
PROMPT_HELP = "a run trained with --supervision mixed: decode with its box head (default) or its point head"
INFERENCE_SET_HELP = (
    "inference overrides, e.g. inference.peak_threshold=0.35 (may be repeated; only the inference "
    "section: the others describe how the weights were made)"
)
FLIP_TEST_HELP = (
    "dense prompter: also read each image's mirror (a second encoder pass) and average the two views' "
    "heat maps and geometry (default: the run's inference.flip_test)"
)


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
    from .config import load_config
    from .engine.run_dir import CONFIG_FILE
    from .engine.trainer import train

    config_path = args.config
    if args.resume and config_path is None and (Path(args.out) / CONFIG_FILE).is_file():
        config_path = Path(args.out) / CONFIG_FILE
    cfg = load_config(config_path, _config_overrides(args))
    if not cfg.data.root:
        raise WpsSamError("train needs --data ROOT (a folder with images/<split>/ and annotations/)")
    run = train(cfg, args.out, resume=args.resume, progress=not args.no_progress, recheck=args.recheck)
    print(f"trained: {run}")


def cmd_eval(args: argparse.Namespace) -> None:
    from .atomic import atomic_write_json
    from .data.checks import triaged_split
    from .evaluation.evaluator import evaluate
    from .plots import confusion_chart, per_class_iou_chart
    from .predictor import PartPredictor

    predictor = PartPredictor.from_run(
        args.run, args.device or "auto", args.sam_checkpoint, args.prompt, args.flip_test, args.set
    )
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
    out = Path(args.run) / f"eval-{args.split}.json"
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


def _cached_split(
    index: PartDataIndex, predictor: PartPredictor, progress: bool
) -> tuple[CachedRows | None, CachedRows | None]:
    """`eval`'s embeddings of ``index`` through the embedding cache: in the run's ``train.cache_dir``
    where that folder still exists (a run moved from another machine: the default folder), and
    encoded afresh, with a warning, where the cache folder cannot be written."""
    from .cache import default_cache_dir
    from .data.cached import split_embeddings

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
    from .serve import serve

    serve(
        args.run,
        args.host,
        args.port,
        device=args.device or "auto",
        sam_checkpoint=args.sam_checkpoint,
        prompt=args.prompt,
        flip_test=args.flip_test,
        inference=args.set,
    )


def cmd_plot(args: argparse.Namespace) -> None:
    from .engine.run_dir import METRICS_FILE
    from .plots import training_curves

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
    from .onnx_graph import export_image_encoder, export_onnx
    from .predictor import PartPredictor

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

    from .atomic import atomic_write_json
    from .data.checks import inspect_image
    from .data.images import read_image
    from .errors import DataError
    from .export import prediction_record, save_label_map
    from .predictor import PartPredictor
    from .viz import save_overlay

    files = _collect_images(args.inputs)
    if args.strict:
        bad = [(path, verdict.problem) for path in files if (verdict := inspect_image(path)).problem]
        if bad:
            raise DataError(
                f"--strict: {len(bad)} of {len(files)} input(s) unreadable, e.g. {bad[0][0]}: "
                f"{bad[0][1]}; remove them or drop --strict to skip them"
            )
    predictor = PartPredictor.from_run(
        args.run, args.device or "auto", args.sam_checkpoint, args.prompt, args.flip_test, args.set
    )
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


def cmd_check_data(args: argparse.Namespace) -> None:
    from .data.checks import check_data, format_report

    report = check_data(args.data, args.split, decode_images=not args.quick, progress=not args.no_progress)
    print(json.dumps(report, indent=2, allow_nan=False) if args.json else format_report(report))
    skipped = len(report["images_skipped"]) + len(report["annotations_skipped"])
    if args.strict and skipped:
        raise WpsSamError(
            f"--strict: {skipped} image(s) or annotation(s) of split '{args.split}' are skipped"
        )


def cmd_cache(args: argparse.Namespace) -> None:
    from .cache import clear_cache, default_cache_dir
    from .data.cached import precompute_cache

    cache_dir = args.cache_dir or default_cache_dir()
    if args.clear:
        clear_cache(cache_dir)
        print(f"cleared {cache_dir}")
        return
    if not args.data:
        raise WpsSamError("cache needs --data ROOT (or --clear)")
    summary = precompute_cache(
        args.data,
        args.split,
        cache_dir,
        sam_type=args.sam_type or "vit_b",
        sam_checkpoint=args.sam_checkpoint,
        sam_sha256=args.sam_sha256,
        device=args.device or "auto",
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        dtype=args.dtype,
        compile=args.compile,
        progress=not args.no_progress,
    )
    print(json.dumps(summary))


def cmd_bench(args: argparse.Namespace) -> None:
    import torch

    from .bench import format_ratios, format_table, run_benchmark

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    results = [
        run_benchmark(
            device=device,
            sam_type=sam_type,
            images=args.images,
            epochs=args.epochs,
            batch_size=args.batch_size,
            out_dir=Path(args.out_dir),
            quick=args.quick,
            compile=False if args.no_compile else None,
            reference_tf32=args.reference_tf32,
        )
        for sam_type in args.sam_type or ["vit_b"]
    ]
    print(format_table(results))
    print(format_ratios(results))


def cmd_pretrain_sam(args: argparse.Namespace) -> None:
    import torch

    from .engine.device import resolve_device
    from .pretraining import BatchConfig, PretrainConfig, pretrain_tiny_sam
    from .pretraining.trainer import autocast_dtype

    device = resolve_device(args.device)
    if not args.no_bf16 and autocast_dtype(True, device) is None:
        logger.warning("this CPU has no native bf16: pre-training in float32")
    torch.set_num_threads(args.threads)
    batches = BatchConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        prompts_per_image=args.prompts_per_image,
        low_res_steps=args.low_res_steps,
        object_batch_size=args.object_batch_size,
        seed=args.seed,
    )
    cfg = PretrainConfig(
        batches=batches,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        log_every=args.log_every,
        eval_every=args.eval_every,
        eval_images=args.eval_images,
        time_budget_s=args.time_budget_s,
        loader_workers=args.workers,
        bf16=not args.no_bf16,
    )
    path = pretrain_tiny_sam(args.out, cfg, init=args.init, progress=not args.no_progress, device=device)
    print(f"tiny SAM weights: {path} (use them with --sam-type tiny --sam-checkpoint {path})")


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo.runner import QUICK_SETTINGS, DemoSettings, run_demo

    settings = QUICK_SETTINGS if args.quick else DemoSettings()
    chosen = {
        "train_images": args.train_images,
        "val_images": args.val_images,
        "data_seed": args.data_seed,
        "supercategories": args.supercategories,
    }
    settings = dataclasses.replace(settings, **{k: v for k, v in chosen.items() if v is not None})
    if args.recipe:
        settings = dataclasses.replace(
            settings, overrides=(*settings.overrides, f"train.recipe={args.recipe}")
        )
    if args.no_bf16:
        settings = dataclasses.replace(settings, cpu_bf16=False)
    run_demo(
        args.out,
        settings,
        steps_scale=args.steps_scale,
        sam_checkpoint=args.sam_checkpoint,
        seed=args.seed,
        progress=not args.no_progress,
    )


def cmd_data_toyparts(args: argparse.Namespace) -> None:
    from .synthetic.toyparts import generate_toyparts

    summary = generate_toyparts(
        args.out,
        train=args.train,
        val=args.val,
        size=args.size,
        seed=args.seed,
        progress=not args.no_progress,
        point_fraction=args.point_fraction,
        **({"supercategories": args.supercategories} if args.supercategories else {}),
    )
    counts = ", ".join(
        f"{split}: {v['images']} images / {v['annotations']} parts"
        + (f" ({v['point_only']} labelled by a point only)" if v["point_only"] else "")
        for split, v in summary["splits"].items()
    )
    print(f"wrote ToyParts ({len(summary['classes'])} part classes) to {args.out}: {counts}")


def cmd_data_pascal_part(args: argparse.Namespace) -> None:
    from .data.pascal_part import convert_pascal_part

    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    if not splits:
        raise WpsSamError(f"--splits names no split: {args.splits!r}")
    summary = convert_pascal_part(
        Path(args.voc), Path(args.parts), Path(args.out), args.grouping, splits, progress=not args.no_progress
    )
    counts = ", ".join(
        f"{split}: {v['images']} images / {v['annotations']} parts"
        + (f" ({len(v['images_skipped'])} images skipped)" if v["images_skipped"] else "")
        + (
            f" ({v['images_without_annotations']} images without a part of the grouping left out)"
            if v["images_without_annotations"]
            else ""
        )
        for split, v in summary["splits"].items()
    )  # the reasons of skipped images are logged
    classes = len(summary["classes"])
    print(f"wrote Pascal-Part {args.grouping} ({classes} part classes) to {args.out}: {counts}")
    unknown = list(summary["unknown_part_names"].items())
    if unknown:
        top = ", ".join(f"{name} x{count}" for name, count in unknown[:5])
        print(f"skipped {sum(c for _, c in unknown)} part(s) of unknown names: {top}")
    faults = {
        "object(s) without parts": summary["objects_without_parts"],
        "empty mask(s)": summary["empty_masks"],
        "mask(s) of another shape than the image": len(summary["masks_skipped"]),
        "object(s) of classes the grouping leaves out": sum(
            summary["objects_of_unconverted_classes"].values()
        ),
    }
    if any(faults.values()):
        print("also skipped: " + ", ".join(f"{n} {what}" for what, n in faults.items() if n))


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (usage stays in --help), like every other wps-sam error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (the benchmark scripts use it too)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def name_list(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated names, e.g. ``Car,Fish`` (blanks around and between dropped)."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _sha256_arg(value: str) -> str:
    digest = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise argparse.ArgumentTypeError(f"expected 64 hexadecimal digits, got {value!r}")
    return digest


def _add_sam_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sam-type", choices=list(SAM_TYPES))
    p.add_argument("--sam-checkpoint", help="official SAM checkpoint file, or 'random' (tests only)")
    p.add_argument("--sam-sha256", type=_sha256_arg, help="refuse the checkpoint unless its sha256 is this")


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a prompter from boxes or points")
    p.add_argument("--data", help="data root (PartImageNet layout)")
    p.add_argument("--out", required=True, help="run directory to create (or resume)")
    p.add_argument("--config", help="YAML config file")
    p.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        help=f"named settings to start from (default {DEFAULT_RECIPE}; paper: the official WPS-SAM training)",
    )
    _add_sam_options(p)
    p.add_argument(
        "--supervision", choices=["box", "point", "mixed"], help="mixed: each part from its own label"
    )
    p.add_argument("--point-mode", choices=["interior", "box_center"])
    group = p.add_mutually_exclusive_group()
    group.add_argument("--epochs", type=int)
    group.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--save-every", type=int, help="steps between resumable checkpoints")
    p.add_argument("--num-workers", type=int)
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last saved state"
    )
    p.add_argument(
        "--strict", action="store_true", help="refuse data sets with skipped images or annotations"
    )
    p.add_argument("--recheck", action="store_true", help=RECHECK_HELP)
    p.add_argument(
        "--set",
        nargs="*",
        action="extend",
        metavar="KEY=VALUE",
        help="config overrides, e.g. train.warmup_steps=100 (may be repeated)",
    )
    _add_common(p)
    p.set_defaults(func=cmd_train)


def _add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a run on a split (standard and paper protocols)")
    p.add_argument("run")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--device")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--sam-checkpoint", help="SAM checkpoint path, if it moved since training")
    p.add_argument("--strict", action="store_true", help="refuse a split with skipped images or annotations")
    p.add_argument("--recheck", action="store_true", help=RECHECK_HELP)
    p.add_argument("--prompt", choices=["box", "point"], help=PROMPT_HELP)
    p.add_argument("--flip-test", action=argparse.BooleanOptionalAction, help=FLIP_TEST_HELP)
    p.add_argument("--set", nargs="*", action="extend", metavar="KEY=VALUE", help=INFERENCE_SET_HELP)
    p.add_argument(
        "--cache",
        action=argparse.BooleanOptionalAction,
        help="read the split's embeddings through the embedding cache, encoding only the images not in "
        "it (default: the run's train.cache; folder: its train.cache_dir, $WPS_SAM_CACHE or "
        "~/.cache/wps-sam/embeddings)",
    )
    _add_common(p)
    p.set_defaults(func=cmd_eval)


def _add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a run as ONNX: image embedding -> part classes, scores, masks")
    p.add_argument("run")
    p.add_argument("--onnx", required=True, help="file for the prompter + SAM mask decoder graph")
    p.add_argument("--encoder-onnx", help="also export SAM's image encoder to this file")
    p.add_argument("--sam-checkpoint", help="SAM checkpoint path, if it moved since training")
    _add_common(p)
    p.set_defaults(func=cmd_export)


def _add_serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="the browser app (Gradio) and its predict endpoint")
    p.add_argument("run", nargs="?", help="run folder (default: the demo prompter shipped in the package)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device")
    p.add_argument("--sam-checkpoint", help="SAM checkpoint path, if it moved since training")
    p.add_argument("--prompt", choices=["box", "point"], help=PROMPT_HELP)
    p.add_argument("--flip-test", action=argparse.BooleanOptionalAction, help=FLIP_TEST_HELP)
    p.add_argument("--set", nargs="*", action="extend", metavar="KEY=VALUE", help=INFERENCE_SET_HELP)
    _add_common(p)
    p.set_defaults(func=cmd_serve)


def _add_plot_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw a run's training curves from its metrics.jsonl")
    p.add_argument("run")
    p.add_argument("--out", help="image file (default RUN/curves.png)")
    _add_common(p)
    p.set_defaults(func=cmd_plot)


def _add_predict_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment parts in new images")
    p.add_argument("run")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True)
    p.add_argument("--device")
    p.add_argument("--sam-checkpoint", help="SAM checkpoint path, if it moved since training")
    p.add_argument("--strict", action="store_true", help="refuse to run if any input is unreadable")
    p.add_argument("--prompt", choices=["box", "point"], help=PROMPT_HELP)
    p.add_argument("--flip-test", action=argparse.BooleanOptionalAction, help=FLIP_TEST_HELP)
    p.add_argument("--set", nargs="*", action="extend", metavar="KEY=VALUE", help=INFERENCE_SET_HELP)
    _add_common(p)
    p.set_defaults(func=cmd_predict)


def _add_check_data_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-data", help="triage a data set: what train/eval will skip or repair, and why")
    p.add_argument("--data", required=True, help="data root (PartImageNet layout)")
    p.add_argument("--split", default="train")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quick", action="store_true", help="read image headers only (no full decode)")
    p.add_argument("--strict", action="store_true", help="exit non-zero if anything is skipped")
    _add_common(p)
    p.set_defaults(func=cmd_check_data)


def _add_cache_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="precompute the frozen encoder's embeddings of a split")
    p.add_argument("--data")
    p.add_argument("--split", default="train")
    p.add_argument("--cache-dir", help="default: $WPS_SAM_CACHE or ~/.cache/wps-sam/embeddings")
    _add_sam_options(p)
    p.add_argument("--device")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder")
    p.add_argument("--clear", action="store_true", help="delete the cache folder")
    _add_common(p)
    p.set_defaults(func=cmd_cache)


def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark the official recipe against ours on this device")
    p.add_argument("--device", help="default: cuda when available, else cpu")
    p.add_argument(
        "--sam-type",
        nargs="+",
        choices=list(SAM_TYPES),
        help="one or more, measured side by side (default vit_b)",
    )
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out-dir", default="benchmarks/results")
    p.add_argument("--quick", action="store_true", help="fewer timed steps (a smoke run)")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--reference-tf32", action="store_true", help="let the reference use TF32 matmuls")
    _add_common(p)
    p.set_defaults(func=cmd_bench)


def _add_pretrain_sam_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain-sam", help="pre-train the tiny SAM (generic shapes; ToyParts-world object labels)"
    )
    p.add_argument("--out", required=True, help="folder for sam_tiny.safetensors, its log and resume state")
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--low-res-steps", type=int, default=0, help="the first steps at 128 px (curriculum)")
    p.add_argument("--batch-size", type=int, default=8, help="generic-shape scenes per step")
    p.add_argument("--prompts-per-image", type=int, default=4, help="prompts per scene at 256 px (8 at 128)")
    p.add_argument("--object-batch-size", type=int, default=8, help="object-labelled images per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--eval-images", type=int, default=32)
    p.add_argument("--time-budget-s", type=float, help="stop after this many seconds in all (resumable)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1, help="processes drawing batches ahead")
    p.add_argument(
        "--no-bf16",
        action="store_true",
        help="float32 throughout (default: bf16 autocast on a GPU or a CPU with native bf16)",
    )
    p.add_argument("--init", help="start from these tiny SAM weights")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu (default), cuda, cuda:N or auto (a GPU when there is one); the batches are drawn on "
        "the CPU either way, so a run can resume on another device",
    )
    _add_common(p)
    p.set_defaults(func=cmd_pretrain_sam)


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the offline demo: ToyParts, WPS-SAM from boxes and points, baselines")
    p.add_argument("--out", default="demo-out", help="output folder (data and embeddings in it are reused)")
    p.add_argument("--quick", action="store_true", help="a small, fast run (a smoke test, not the results)")
    p.add_argument(
        "--steps-scale",
        type=int,
        default=1,
        metavar="K",
        help="train every method K times as many steps (default 1: the 15-minute budget)",
    )
    p.add_argument("--sam-checkpoint", help="tiny SAM weights (default: the ones shipped in the package)")
    p.add_argument("--seed", type=int, default=0, help="seed of every trained method")
    p.add_argument(
        "--supercategories",
        type=name_list,
        metavar="A,B,...",
        help="ToyParts super-categories to draw (default: Quadruped,Bird,Fish,Car,Bottle,Aeroplane)",
    )
    p.add_argument("--data-seed", type=int, help="seed of the generated data (default 0)")
    p.add_argument("--train-images", type=positive_int, help="training images (default 1600)")
    p.add_argument("--val-images", type=positive_int, help="held-out images (default 150)")
    p.add_argument("--recipe", choices=sorted(RECIPES), help=f"WPS-SAM's recipe (default {DEFAULT_RECIPE})")
    p.add_argument(
        "--no-bf16",
        action="store_true",
        help="train in float32 on the CPU (default: bf16 autocast where the CPU computes bf16 natively)",
    )
    _add_common(p)
    p.set_defaults(func=cmd_demo)


def _add_data_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="data set tools")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("toyparts", help="generate the ToyParts benchmark (PartImageNet layout)")
    q.add_argument("--out", required=True)
    q.add_argument("--train", type=int, default=800)
    q.add_argument("--val", type=int, default=200)
    q.add_argument("--size", type=int, default=256)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument(
        "--point-fraction",
        type=fraction,
        default=0.0,
        help="share of the training split's parts that keep only a point (mixed supervision)",
    )
    q.add_argument(
        "--supercategories",
        type=name_list,
        metavar="A,B,...",
        help="super-categories to draw, e.g. Car,Fish; the annotation files name their part classes "
        "only (default: all eleven)",
    )
    _add_common(q)
    q.set_defaults(func=cmd_data_toyparts)
    q = data_sub.add_parser(
        "pascal-part", help="convert the official Pascal-Part release (PartImageNet layout)"
    )
    q.add_argument(
        "--voc", required=True, metavar="VOC2010_DIR", help="the VOC2010 folder (or VOCdevkit/ holding it)"
    )
    q.add_argument(
        "--parts", required=True, metavar="ANNOTATIONS_PART_DIR", help="Pascal-Part's folder of .mat files"
    )
    q.add_argument("--out", required=True, metavar="ROOT", help="data root to write")
    q.add_argument("--grouping", choices=list(PASCAL_PART_GROUPINGS), default="pascal-part-58")
    q.add_argument("--splits", default="train,val", help="VOC image lists to convert, comma-separated")
    _add_common(q)
    q.set_defaults(func=cmd_data_pascal_part)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wps-sam", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_train_parser,
        _add_eval_parser,
        _add_predict_parser,
        _add_export_parser,
        _add_plot_parser,
        _add_serve_parser,
        _add_check_data_parser,
        _add_cache_parser,
        _add_bench_parser,
        _add_pretrain_sam_parser,
        _add_demo_parser,
        _add_data_parser,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.debug:
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    handler: Callable[[argparse.Namespace], None] = args.func
    try:
        handler(args)
    except WpsSamError as exc:
        if args.debug:
            raise
        print(f"wps-sam {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the user gave cannot be written or read (permissions, disk full ...)
        if args.debug:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(
            f"wps-sam {args.command}: error: {exc.strerror or exc}{where} (check the path, its "
            f"permissions and free space)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"wps-sam {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
