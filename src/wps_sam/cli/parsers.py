"""The ``wps-sam`` argument parser: one subparser per subcommand, each bound to its handler."""

from __future__ import annotations

import argparse

from ..config import SAM_TYPES
from ..data.pascal_part_groupings import GROUPINGS as PASCAL_PART_GROUPINGS
from ..recipes import DEFAULT_RECIPE, RECIPES
from .arguments import (
    RECHECK_HELP,
    RUN_HELP,
    OneLineErrorParser,
    add_common,
    add_decoding_options,
    add_sam_options,
    fraction,
    name_list,
    positive_int,
)
from .run_commands import cmd_eval, cmd_export, cmd_plot, cmd_predict, cmd_serve, cmd_train
from .tool_commands import (
    cmd_bench,
    cmd_cache,
    cmd_check_data,
    cmd_data_pascal_part,
    cmd_data_toyparts,
    cmd_demo,
    cmd_pretrain_sam,
)

DESCRIPTION = "WPS-SAM: part segmentation trained from boxes or points on a frozen Segment Anything Model"


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
    add_sam_options(p)
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
    add_common(p)
    p.set_defaults(func=cmd_train)


def _add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a run on a split (standard and paper protocols)")
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val")
    p.add_argument(
        "--out",
        help="folder for eval-SPLIT.json and its charts (default: the run folder, or the weights file's "
        "folder; needed for 'demo')",
    )
    p.add_argument("--batch-size", type=int)
    p.add_argument("--strict", action="store_true", help="refuse a split with skipped images or annotations")
    p.add_argument("--recheck", action="store_true", help=RECHECK_HELP)
    add_decoding_options(p)
    p.add_argument(
        "--cache",
        action=argparse.BooleanOptionalAction,
        help="read the split's embeddings through the embedding cache, encoding only the images not in "
        "it (default: the run's train.cache; folder: its train.cache_dir, $WPS_SAM_CACHE or "
        "~/.cache/wps-sam/embeddings)",
    )
    add_common(p)
    p.set_defaults(func=cmd_eval)


def _add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a run as ONNX: image embedding -> part classes, scores, masks")
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("--onnx", required=True, help="file for the prompter + SAM mask decoder graph")
    p.add_argument("--encoder-onnx", help="also export SAM's image encoder to this file")
    p.add_argument("--sam-checkpoint", help="SAM checkpoint path, if it moved since training")
    add_common(p)
    p.set_defaults(func=cmd_export)


def _add_serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="the browser app (Gradio) and its predict endpoint")
    p.add_argument("run", nargs="?", help=f"{RUN_HELP} (default: demo)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    add_decoding_options(p)
    add_common(p)
    p.set_defaults(func=cmd_serve)


def _add_plot_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw a run's training curves from its metrics.jsonl")
    p.add_argument("run")
    p.add_argument("--out", help="image file (default RUN/curves.png)")
    add_common(p)
    p.set_defaults(func=cmd_plot)


def _add_predict_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment parts in new images")
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True)
    p.add_argument("--strict", action="store_true", help="refuse to run if any input is unreadable")
    add_decoding_options(p)
    add_common(p)
    p.set_defaults(func=cmd_predict)


def _add_check_data_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-data", help="triage a data set: what train/eval will skip or repair, and why")
    p.add_argument("--data", required=True, help="data root (PartImageNet layout)")
    p.add_argument("--split", default="train")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quick", action="store_true", help="read image headers only (no full decode)")
    p.add_argument("--strict", action="store_true", help="exit non-zero if anything is skipped")
    add_common(p)
    p.set_defaults(func=cmd_check_data)


def _add_cache_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="precompute the frozen encoder's embeddings of a split")
    p.add_argument("--data")
    p.add_argument("--split", default="train")
    p.add_argument("--cache-dir", help="default: $WPS_SAM_CACHE or ~/.cache/wps-sam/embeddings")
    add_sam_options(p)
    p.add_argument("--device")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder")
    p.add_argument("--clear", action="store_true", help="delete the cache folder")
    add_common(p)
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
    add_common(p)
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
    add_common(p)
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
    add_common(p)
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
    add_common(q)
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
    add_common(q)
    q.set_defaults(func=cmd_data_pascal_part)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="wps-sam", description=DESCRIPTION)
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
