"""bf16 autocast on the CPU (train.cpu_amp): on only when asked for, the weights stay float32."""

from __future__ import annotations

import logging

import pytest
import torch

from wps_sam.config import load_config
from wps_sam.engine import trainer
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


@pytest.mark.parametrize(
    ("cpu_amp", "native", "device", "warned"),
    [(True, False, "cpu", True), (True, True, "cpu", False), (False, False, "cpu", False),
     (True, False, "cuda", False)],
)  # fmt: skip
def test_emulated_bf16_is_a_warning(monkeypatch, caplog, cpu_amp, native, device, warned):
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: native)
    cfg = load_config(overrides=[f"train.cpu_amp={cpu_amp}"])
    with caplog.at_level(logging.WARNING):
        assert trainer.warn_if_bf16_is_emulated(cfg, torch.device(device)) is warned
    assert any("no native bf16" in r.getMessage() for r in caplog.records) is warned
