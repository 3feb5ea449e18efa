"""Timing helpers of the benchmarks: device names, drained-queue timers, float32 precision modes."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch


def device_name(device: torch.device) -> str:
    """``nvidia-h100-80gb-hbm3``-style name of the device (``cpu`` for the CPU)."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mean_ms(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    """Milliseconds per call of ``fn`` (a CPU function) over ``repeats`` calls, after ``warmup`` untimed."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def timed(device: torch.device, fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` takes, the device's queue drained before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


@contextlib.contextmanager
def fp32_precision(dev: torch.device, matmul_tf32: bool, cudnn_tf32: bool) -> Iterator[None]:
    """On CUDA, TF32 for float32 matmuls and cuDNN convolutions on or off (PyTorch's defaults: off, on).

    A no-op on the CPU, where a lower matmul precision would let oneDNN use bf16 kernels.
    """
    if dev.type != "cuda":
        yield
        return
    old = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high" if matmul_tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = cudnn_tf32
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old[0])
        torch.backends.cudnn.allow_tf32 = old[1]
