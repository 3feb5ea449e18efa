"""`wps-sam eval` through the embedding cache against encoding the split at every call.

`wps-sam eval` and the trainer's validation read a split's embeddings (and, with test-time mirroring,
those of its mirrored input frames) through the embedding cache: the first call encodes and stores
them, every later one reads them back (``data.cached.split_embeddings``). This times, on a trained
run of a finished `wps-sam demo`, alternating, the three ways one evaluation can go: ``encoded``
(``--no-cache``: the encoder runs over every image and mirrored frame), ``cold`` (an empty cache
folder: encode, store, read) and ``warm`` (everything cached: read only), each the cache step plus
``evaluate`` as ``cmd_eval`` runs them, and reports each way's mIoU (the cache stores float16 rows):

    python benchmarks/eval_cache.py DEMO_DIR [--run wps-sam-box] [--repeats 3]

prints one JSON object: seconds per evaluation of each way and their mIoUs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from wps_sam.data.cached import split_embeddings
from wps_sam.demo.runner import finished_run
from wps_sam.errors import WpsSamError
from wps_sam.evaluation.evaluator import evaluate
from wps_sam.predictor import PartPredictor


def evaluate_once(predictor: PartPredictor, index, cache_dir: Path | None) -> tuple[float, float]:
    """Seconds and mIoU of one evaluation, through the cache at ``cache_dir`` (None: encoding)."""
    cfg = predictor.cfg
    started = time.perf_counter()
    given = {}
    if cache_dir is not None:
        train_cfg = dataclasses.replace(cfg.train, cache_dir=str(cache_dir))
        rows, mirrored = split_embeddings(
            index, predictor.model.image_encoder, predictor.sam_fingerprint, train_cfg,
            predictor.device, cfg.inference.flip_test, progress=False,
        )  # fmt: skip
        given = {"embeddings": rows, "mirrored_embeddings": mirrored}
    result = evaluate(predictor.model, index, cfg, predictor.device, progress=False, **given)
    return round(time.perf_counter() - started, 2), result["miou"]


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
    seconds: dict[str, list[float]] = {"encoded": [], "cold": [], "warm": []}
    miou: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            cache_dir = Path(scratch) / f"cache-{repeat}"
            for way in seconds:
                took, miou[way] = evaluate_once(predictor, index, None if way == "encoded" else cache_dir)
                seconds[way].append(took)
    print(
        json.dumps(
            {
                "run": args.run,
                "images": len(index.images),
                "flip_test": predictor.cfg.inference.flip_test,
                "threads": torch.get_num_threads(),
                "seconds": seconds,
                "miou": miou,
            }
        )
    )


if __name__ == "__main__":
    main()
