"""The shipped tiny SAM's encoder in float32 against bf16 autocast on this CPU, side by side.

The embedding cache, ``wps-sam eval`` and ``wps-sam predict`` run the frozen encoder under bf16
where ``train.cpu_amp`` is on and the CPU computes bf16 natively (``engine.device.encoder_dtype``).
This times :class:`~wps_sam.sam.encoder.EncoderRunner` both ways on the same batch of random
256 px inputs, alternating, and compares the embeddings:

    python benchmarks/encoder_bf16.py [--batch 16] [--rounds 3]

prints one JSON object: images per second of each round and the relative error of the bf16
embeddings (the norm of the difference over the float32 embeddings' norm).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from wps_sam.engine.device import cpu_has_native_bf16
from wps_sam.sam.backbones import build_sam
from wps_sam.sam.encoder import EncoderRunner, relative_error


def images_per_second(runner: EncoderRunner, images: torch.Tensor) -> float:
    """One timed pass of ``runner`` over ``images`` ([B, 3, S, S])."""
    start = time.perf_counter()
    runner(images)
    return images.shape[0] / (time.perf_counter() - start)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    sam = build_sam("tiny")
    size = sam.image_encoder.img_size
    images = torch.randn(args.batch, 3, size, size)
    runners = {
        "float32": EncoderRunner(sam.image_encoder, dtype=None),
        "bf16": EncoderRunner(sam.image_encoder, dtype=torch.bfloat16),
    }
    reference, low = runners["float32"](images), runners["bf16"](images)  # also the warm-up
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, runner in runners.items():
            rates[name].append(round(images_per_second(runner, images), 1))
    result = {
        "native_bf16": cpu_has_native_bf16(),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "images_per_s": rates,
        "bf16_relative_error": round(relative_error(low, reference), 5),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
