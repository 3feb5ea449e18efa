"""Which device a run uses, and in which precision its frozen SAM encoder runs there."""

from __future__ import annotations

import torch

from ..errors import DataError


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16 autocast pays."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def computes_bf16_natively(device: torch.device) -> bool:
    """Whether bf16 autocast pays on ``device``: a GPU, or a CPU with native bf16 (elsewhere bf16 is
    emulated, several times slower than float32)."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


def encoder_dtype(device: torch.device, amp: bool, cpu_amp: bool) -> torch.dtype | None:
    """The autocast dtype of the frozen encoder's pass, ``None`` for float32: bf16 on CUDA with
    ``train.amp``, and on the CPU with ``train.amp`` and ``train.cpu_amp`` where the CPU computes bf16
    natively (elsewhere bf16 is emulated, slower than float32). The embedding cache, evaluation and
    prediction all encode so: the tiny SAM's encoder runs ~2x faster on an AVX512-BF16 CPU for
    embeddings within 0.5% of float32's (``benchmarks/encoder_bf16.py``)."""
    if not amp or (device.type == "cpu" and not cpu_amp):
        return None
    return torch.bfloat16 if computes_bf16_natively(device) else None


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DataError(f"--device {name}: not a device (auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device
