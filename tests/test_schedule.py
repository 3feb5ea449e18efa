"""The optimiser and its learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from wps_sam.engine.schedule import adamw, warmup_cosine


def test_adamw_is_fused_on_the_cpu_and_steps_as_the_per_tensor_loop():
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    start = [p.detach().clone() for p in models[0].parameters()]
    fused = adamw(models[0].parameters(), 1e-2, 1e-4)
    loop = torch.optim.AdamW(models[1].parameters(), lr=1e-2, weight_decay=1e-4, foreach=False)
    assert fused.defaults["fused"]
    x = torch.randn(32, 8)
    for _ in range(5):
        for model, optimizer in zip(models, (fused, loop)):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for a, b, a0 in zip(models[0].parameters(), models[1].parameters(), start):
        assert (a - a0).abs().max() > 1e-3  # it moved
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_warmup_then_cosine_to_the_floor():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    lrs = []
    for _ in range(16):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert math.isclose(lrs[9], 0.1 + 0.9 * 0.5)  # half-way through the decay
    assert math.isclose(lrs[14], 0.1) and math.isclose(lrs[15], 0.1)
