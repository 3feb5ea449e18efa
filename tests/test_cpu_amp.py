"""bf16 autocast on the CPU (train.cpu_amp): on only when asked for, the weights stay float32."""

from __future__ import annotations

import torch

from wps_sam.engine.loop import autocast

CPU = torch.device("cpu")


def _conv_dtype(context) -> torch.dtype:
    conv = torch.nn.Conv2d(4, 4, 3)
    with context:
        return conv(torch.randn(1, 4, 8, 8)).dtype


def test_cpu_autocast_only_when_both_switches_are_on():
    assert _conv_dtype(autocast(CPU, True)) == torch.float32  # train.amp alone: CUDA only
    assert _conv_dtype(autocast(CPU, False, cpu=True)) == torch.float32
    assert _conv_dtype(autocast(CPU, True, cpu=True)) == torch.bfloat16
