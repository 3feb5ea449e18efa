"""Where the demo's compute goes on the CPU: the tiny SAM's encoder, eager and compiled, and the dense
prompter's training step by operator.

    python benchmarks/demo_compute.py encoder    # bf16 eager vs torch.compile, batches of 8
    python benchmarks/demo_compute.py prompter   # one training step of the demo's dense prompter
    python benchmarks/demo_compute.py prompter --float32   # the same in float32 (CPUs without bf16)

``encoder`` prints images/s of the shipped tiny SAM's encoder under bf16 autocast on batches of 8
random 256 px images, eager and under ``torch.compile``, and how long the compiled encoder's first
call took. ``prompter`` times a step of the demo's dense prompter (width 64, geometry radius 2, 23
classes, 8 random embeddings, bf16 autocast or, with ``--float32``, none; AdamW; a stand-in loss,
since only the step's operators matter) and prints the torch profiler's table of its operators by
self CPU time. On a CPU without native bf16 the bf16 step runs PyTorch's slow reference
convolutions (``aten::slow_conv_dilated2d``), which is why the demo trains in float32 there.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

BATCH = 8


def encoder(iters: int) -> dict[str, float]:
    from wps_sam.sam.backbones import build_sam
    from wps_sam.sam.encoder import EncoderRunner

    images = torch.randn(BATCH, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    result = {}
    for compiled in (False, True):
        runner = EncoderRunner(build_sam("tiny").image_encoder, dtype=torch.bfloat16, compile=compiled)
        started = time.perf_counter()
        runner(images)
        first = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(iters):
            runner(images)
        name = "compiled" if compiled else "eager"
        result[f"{name}_img_s"] = round(iters * BATCH / (time.perf_counter() - started), 1)
        result[f"{name}_first_call_s"] = round(first, 1)
    return result


def prompter(iters: int, bf16: bool = True) -> str:
    from torch.profiler import ProfilerActivity, profile

    from wps_sam.modeling.dense_prompter import DensePrompter

    torch.manual_seed(0)
    model = DensePrompter(23, "box", embed_size=(32, 32), width=64, geometry_radius=2)
    embeddings = torch.randn(BATCH, 256, 32, 32)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model.dense(embeddings)
        loss = out["heatmap"].float().sigmoid().mean() + out["geometry"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    started = time.perf_counter()
    for _ in range(iters):
        step()
    ms = (time.perf_counter() - started) / iters * 1000
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    return f"{ms:.1f} ms per step ({iters} steps profiled)\n{table}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=("encoder", "prompter"))
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--float32", action="store_true", help="prompter: no bf16 autocast")
    args = parser.parse_args()
    if args.part == "encoder":
        print(json.dumps({"threads": torch.get_num_threads(), **encoder(args.iters)}))
    else:
        print(prompter(args.iters, bf16=not args.float32))


if __name__ == "__main__":
    main()
