"""``evaluate`` on the held-out embeddings of the demo's cache against encoding the images itself.

The demo builds the embedding cache of the held-out images and of their mirror images for its SAM
head; its WPS-SAM evaluations read those rows (``evaluate(..., embeddings=, mirrored_embeddings=)``)
instead of running the frozen encoder over every held-out image and its mirrored frame again. This
times both ways on a trained run of a finished demo, alternating, and reports both scores (the cache
stores float16 rows, so they may differ in the last digits):

    python benchmarks/eval_given_embeddings.py DEMO_DIR [--run wps-sam-box] [--repeats 3]

prints one JSON object: seconds per evaluation of each way and both mIoUs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from wps_sam.demo.data import MIRRORED_VAL, encode_splits
from wps_sam.demo.runner import finished_run
from wps_sam.errors import WpsSamError
from wps_sam.evaluation.evaluator import evaluate
from wps_sam.predictor import PartPredictor
from wps_sam.sam.backbones import build_sam


def cached_held_out(predictor: PartPredictor, demo: Path, index) -> tuple[torch.Tensor, torch.Tensor]:
    """The demo cache's float16 rows [N, 256, h, w] of ``index``'s images and of their mirror images,
    read as the demo reads them (the shipped tiny SAM, the encoder precision of the run's training)."""
    splits = {"val": (index, False), MIRRORED_VAL: (index, True)}
    rows, _ = encode_splits(
        build_sam("tiny"), splits, demo / "embeddings", predictor.cfg.train, progress=False
    )
    return rows["val"], rows[MIRRORED_VAL]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("demo", type=Path, help="the --out folder of a finished `wps-sam demo`")
    parser.add_argument("--run", default="wps-sam-box", help="the run under DEMO/runs to evaluate")
    parser.add_argument("--repeats", type=int, default=3, help="evaluations of each way, alternating")
    args = parser.parse_args()
    try:
        predictor, index = finished_run(args.demo, args.run)
    except WpsSamError as error:
        raise SystemExit(str(error)) from None
    embeddings, mirrored = cached_held_out(predictor, args.demo, index)
    seconds: dict[str, list[float]] = {"cached": [], "encoded": []}
    miou: dict[str, float] = {}
    for _ in range(args.repeats):
        for way in seconds:
            given = {"embeddings": embeddings, "mirrored_embeddings": mirrored} if way == "cached" else {}
            started = time.perf_counter()
            result = evaluate(
                predictor.model, index, predictor.cfg, predictor.device, progress=False, **given
            )
            seconds[way].append(round(time.perf_counter() - started, 2))
            miou[way] = result["miou"]
    print(json.dumps({"run": args.run, "threads": torch.get_num_threads(), "seconds": seconds, "miou": miou}))


if __name__ == "__main__":
    main()
