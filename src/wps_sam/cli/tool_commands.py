"""The subcommands around the runs: ``check-data``, ``cache``, ``bench``, ``pretrain-sam``, ``demo``
and ``data``; thin handlers over the library."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from ..errors import WpsSamError

logger = logging.getLogger("wps_sam")


def cmd_check_data(args: argparse.Namespace) -> None:
    from ..data.checks import check_data, format_report

    report = check_data(args.data, args.split, decode_images=not args.quick, progress=not args.no_progress)
    print(json.dumps(report, indent=2, allow_nan=False) if args.json else format_report(report))
    skipped = len(report["images_skipped"]) + len(report["annotations_skipped"])
    if args.strict and skipped:
        raise WpsSamError(
            f"--strict: {skipped} image(s) or annotation(s) of split '{args.split}' are skipped"
        )


def cmd_cache(args: argparse.Namespace) -> None:
    from ..cache import clear_cache, default_cache_dir
    from ..data.cached import precompute_cache

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

    from ..bench import format_ratios, format_table, run_benchmark

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

    from ..engine.device import resolve_device
    from ..pretraining import BatchConfig, PretrainConfig, pretrain_tiny_sam
    from ..pretraining.trainer import autocast_dtype

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
    from ..demo.report import CHART, GRID, RESULTS_JSON, RESULTS_MD, format_table
    from ..demo.runner import run_demo
    from ..demo.settings import QUICK_SETTINGS, DemoSettings

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
    results = run_demo(
        args.out,
        settings,
        steps_scale=args.steps_scale,
        sam_checkpoint=args.sam_checkpoint,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(format_table(results))
    files = ", ".join((RESULTS_JSON, RESULTS_MD, CHART, GRID))
    print(f"wrote {files} and the runs to {args.out} in {results['timings_s']['total']:.0f} s")


def cmd_data_toyparts(args: argparse.Namespace) -> None:
    from ..synthetic.toyparts import generate_toyparts

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
    from ..data.pascal_part import convert_pascal_part

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
