"""Training steps in float32 against bf16 autocast on this CPU, side by side, for the demo's models.

WPS-SAM's dense prompter (the demo's: 64 wide, 23 classes, a batch of 8 embeddings of 256 x 32 x 32)
and the demo's two fully supervised baselines (LR-ASPP at 128 px, batch 8; the SAM head, batch 16),
each step a forward pass, a loss and an AdamW step, timed alternately in float32 and under bf16
autocast (``torch.autocast("cpu", torch.bfloat16)``; weights and losses float32), twice each:

    python benchmarks/cpu_bf16.py [--steps 20]

prints one JSON object: milliseconds per step, and whether the CPU computes bf16 natively
(``wps_sam.engine.device.cpu_has_native_bf16``: the demo trains under bf16 where it does).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
import torch.nn.functional as F

from wps_sam.bench import mean_ms
from wps_sam.demo.baselines import EmbeddingHead, lraspp
from wps_sam.engine.device import cpu_has_native_bf16
from wps_sam.modeling.dense_prompter import DensePrompter

NUM_LABELS = 24  # the demo's 23 part classes and background


def _prompter_step() -> tuple[torch.nn.Module, Callable[[], torch.Tensor]]:
    model = DensePrompter(NUM_LABELS - 1, "box", embed_size=(32, 32), width=64, geometry_radius=2)
    x = torch.randn(8, 256, 32, 32)

    def loss() -> torch.Tensor:
        out = model.dense(x)
        return out["heatmap"].float().square().mean() + out["geometry"].float().square().mean()

    return model, loss


def _segmenter_step(model: torch.nn.Module, x: torch.Tensor, out_key: str | None):
    labels = torch.randint(0, NUM_LABELS, (len(x), 128, 128))

    def loss() -> torch.Tensor:
        logits = model(x)
        logits = logits[out_key] if out_key else logits
        return F.cross_entropy(logits.float(), labels)

    return model, loss


def _ms_per_step(
    model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], bf16: bool, steps: int
) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return mean_ms(step, steps, warmup=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    head = EmbeddingHead(NUM_LABELS)
    head.set_input_stats(torch.randn(4, 256, 32, 32))
    models = {
        "dense_prompter": _prompter_step(),
        "lraspp": _segmenter_step(lraspp(NUM_LABELS), torch.randn(8, 3, 128, 128), "out"),
        "sam_head": _segmenter_step(head, torch.randn(16, 256, 32, 32), None),
    }
    result: dict = {"native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads()}
    for name, (model, loss_fn) in models.items():
        times = {"fp32_ms": [], "bf16_ms": []}
        for _ in range(2):
            for bf16 in (False, True):
                times["bf16_ms" if bf16 else "fp32_ms"].append(_ms_per_step(model, loss_fn, bf16, args.steps))
        result[name] = {k: [round(t, 1) for t in v] for k, v in times.items()}
        result[name]["speedup"] = round(sum(times["fp32_ms"]) / sum(times["bf16_ms"]), 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
