"""`torchrun` DDP training on CPU with gloo: two ranks train one prompter and end with one result."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from tests.data.fixtures import write_part_dataset

from wps_sam.config import load_config

SMALL_PROMPTER = [
    "prompter.enc_layers=1", "prompter.dec_layers=1", "prompter.hidden_dim=32", "prompter.nheads=2",
    "prompter.dim_feedforward=64", "prompter.num_queries=4", "train.warmup_steps=1", "train.log_every=1",
    "train.validate=false",
]  # fmt: skip


def torchrun(command: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``command`` in a process group of its own: on a timeout the ranks are killed with torchrun."""
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def train_two_ranks(tmp_path, mini_sam, *overrides: str):
    """``wps-sam train`` of ``tmp_path/data`` on two CPU ranks, 2 epochs of batches of 2, the cache in
    ``tmp_path/cache``; returns the run folder (the training must succeed)."""
    sam = tmp_path / "sam_tiny.pth"
    torch.save(mini_sam.state_dict(), sam)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WPS_SAM_CACHE": str(tmp_path / "cache")}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "wps_sam.cli", "train", "--data", str(tmp_path / "data"), "--out", str(run), "--sam-type", "vit_mini",
        "--sam-checkpoint", str(sam), "--epochs", "2", "--batch-size", "2", "--device", "cpu", "--no-progress",
        "--set", *overrides,
    ]  # fmt: skip
    done = torchrun(command, env)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


@pytest.mark.slow
def test_two_process_training(tmp_path, mini_sam):
    write_part_dataset(tmp_path / "data", "train", 8, size_range=(24, 40), seed=7)
    run = train_two_ranks(tmp_path, mini_sam, *SMALL_PROMPTER)
    # 8 images and their mirror images (the default recipe's hflip), batches of 2 per rank, 2 ranks:
    # 4 optimiser steps per epoch, 8 in all, logged by rank 0.
    assert load_config().train.augment == "hflip"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 8
    weights = load_file(run / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    # Both ranks encoded their share of the images, and of their mirror images, into the shared cache.
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 4


@pytest.mark.slow
def test_two_process_validation_shares_the_held_out_encoding(tmp_path, mini_sam):
    """Both ranks encode their share of the held-out split (and its mirrored frames) into the cache;
    rank 0 validates from it after every epoch."""
    write_part_dataset(tmp_path / "data", "train", 4, size_range=(24, 40), seed=7)
    write_part_dataset(tmp_path / "data", "val", 4, size_range=(24, 40), seed=8)
    run = train_two_ranks(tmp_path, mini_sam, "train.log_every=1", "prompter.dense_width=16")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "val_miou" in r] == [0, 1]
    # Training images, their mirror images, held-out images, their mirrored frames: one shard of each
    # from each rank.
    shards = sorted(p.name[:4] for p in (tmp_path / "cache").glob("*.npy"))
    assert shards == ["r000"] * 4 + ["r001"] * 4
