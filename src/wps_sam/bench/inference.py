"""Inference speed: the fast encoder (and its error against the official one) and the predictor."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import Config
from .timing import fp32_precision, timed
from .training import NUM_CLASSES

PREDICT_IMAGE_SIZE = (480, 640)  # (H, W): ImageNet-like photos


def measure_encoder(encoder, batch: Tensor, dev: torch.device, compile: bool, quick: bool) -> dict[str, Any]:
    """Fast-encoder images/s (eager and, if asked, compiled) and its error against official float32."""
    from ..sam.encoder import EncoderRunner, relative_error, restore_encoder

    iters = 1 if quick else 10
    restore_encoder(encoder)
    with fp32_precision(dev, matmul_tf32=False, cudnn_tf32=False), torch.no_grad():
        expected = encoder(batch)
    eager = EncoderRunner(encoder)
    out = eager(batch)
    eager_s = timed(dev, lambda: [eager(batch) for _ in range(iters)])
    result = {
        "rel_err": relative_error(out, expected),
        "img_s_eager": iters * len(batch) / eager_s,
        "compile_s": None,
        "module": None,
    }
    result["img_s"] = result["img_s_eager"]
    if compile:
        compiled = EncoderRunner(encoder, compile=True)
        result["compile_s"] = timed(dev, lambda: [compiled(batch) for _ in range(2)])
        result["rel_err"] = relative_error(compiled(batch), expected)
        result["img_s"] = iters * len(batch) / timed(dev, lambda: [compiled(batch) for _ in range(iters)])
        result["module"] = compiled.module
    return result


def measure_predict(
    model, cfg: Config, dev: torch.device, batch_size: int, quick: bool, gen: torch.Generator
) -> float:
    """Images/s of PartPredictor end to end, with preprocessing one batch ahead in 4 threads."""
    from ..predictor import PartPredictor

    predictor = PartPredictor(model, [f"part{i}" for i in range(NUM_CLASSES)], cfg, dev)
    rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen)))
    photos = [rng.integers(0, 256, (*PREDICT_IMAGE_SIZE, 3), dtype=np.uint8) for _ in range(batch_size)]
    batches = 2 if quick else 10

    sizes = [p.shape[:2] for p in photos]
    # One thread prepares the next batch while the GPU works on this one; four resize its images.
    with ThreadPoolExecutor(max_workers=1) as ahead_pool, ThreadPoolExecutor(max_workers=4) as resize_pool:

        def prepare() -> Future:
            return ahead_pool.submit(
                lambda: torch.stack(list(resize_pool.map(predictor.transform.apply_image, photos)))
            )

        predictor.predict_torch(prepare().result(), sizes)  # warm-up

        def run() -> None:
            ahead = prepare()
            for b in range(batches):
                inputs = ahead.result()
                if b + 1 < batches:
                    ahead = prepare()
                predictor.predict_torch(inputs, sizes)

        seconds = timed(dev, run)
    return batches * batch_size / seconds
