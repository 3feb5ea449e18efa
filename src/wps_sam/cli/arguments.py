"""The pieces every ``wps-sam`` subcommand's parser shares: one-line errors, argument types, common
options and help texts."""

from __future__ import annotations

import argparse
import re
from typing import Any, NoReturn

from ..config import SAM_TYPES

RECHECK_HELP = "decode every image again (images unchanged since the last triage are otherwise not re-read)"
RUN_HELP = (
    "a run folder of `wps-sam train`, a prompter weights file (RUN/model.safetensors) or 'demo' "
    "(the demo prompter shipped in the package, on the shipped tiny SAM)"
)
PROMPT_HELP = "a run trained with --supervision mixed: decode with its box head (default) or its point head"
INFERENCE_SET_HELP = (
    "inference overrides, e.g. inference.peak_threshold=0.35 (may be repeated; only the inference "
    "section: the others describe how the weights were made)"
)
FLIP_TEST_HELP = (
    "dense prompter: also read each image's mirror (a second encoder pass) and average the two views' "
    "heat maps and geometry (default: the run's inference.flip_test)"
)


class OneLineErrorParser(argparse.ArgumentParser):
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


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_decoding_options(p: argparse.ArgumentParser) -> None:
    """How a trained run is loaded and decoded (``eval``, ``predict``, ``serve``): ``--device``,
    ``--sam-checkpoint``, ``--prompt``, ``--flip-test`` / ``--no-flip-test`` and ``--set inference.*``,
    the keyword arguments of :meth:`~wps_sam.predictor.PartPredictor.from_run` (:func:`decoding_options`)."""
    p.add_argument("--device")
    p.add_argument("--sam-checkpoint", help="SAM checkpoint path, if it moved since training")
    p.add_argument("--prompt", choices=["box", "point"], help=PROMPT_HELP)
    p.add_argument("--flip-test", action=argparse.BooleanOptionalAction, help=FLIP_TEST_HELP)
    p.add_argument("--set", nargs="*", action="extend", metavar="KEY=VALUE", help=INFERENCE_SET_HELP)


def decoding_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of :func:`add_decoding_options` as :meth:`PartPredictor.from_run`'s keywords."""
    return {
        "device": args.device or "auto",
        "sam_checkpoint": args.sam_checkpoint,
        "prompt": args.prompt,
        "flip_test": args.flip_test,
        "inference": args.set,
    }


def sha256_arg(value: str) -> str:
    digest = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise argparse.ArgumentTypeError(f"expected 64 hexadecimal digits, got {value!r}")
    return digest


def add_sam_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sam-type", choices=list(SAM_TYPES))
    p.add_argument("--sam-checkpoint", help="official SAM checkpoint file, or 'random' (tests only)")
    p.add_argument("--sam-sha256", type=sha256_arg, help="refuse the checkpoint unless its sha256 is this")
