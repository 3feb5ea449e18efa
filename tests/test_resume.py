"""Exact resume: a run SIGKILLed at any moment and resumed ends with the weights of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from safetensors.torch import load_file
from tests.data.fixtures import write_part_dataset

from wps_sam.cli import main
from wps_sam.engine import run_dir

TOTAL_STEPS = 8  # 3 images, batch 1: the kill lands mid-epoch and resume crosses epoch boundaries
KILL_AFTER = 3  # steps logged (and, with save_every=1, saved) before the SIGKILL

SMALL_PROMPTER = [
    "prompter.enc_layers=1", "prompter.dec_layers=1", "prompter.hidden_dim=32", "prompter.nheads=2",
    "prompter.dim_feedforward=64", "prompter.num_queries=4", "train.warmup_steps=2", "train.log_every=1",
    # Dropout draws from the global RNG every step: resume must restore it exactly.
    "prompter.dropout=0.1", "train.validate=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory, mini_sam):
    root = tmp_path_factory.mktemp("resume")
    write_part_dataset(root / "data", "train", 3, size_range=(24, 40), seed=5)
    sam = root / "sam_tiny.pth"
    torch.save(mini_sam.state_dict(), sam)
    return root, sam


def _train_args(root, sam, out):
    return ["train", "--data", str(root / "data"), "--out", str(out), "--sam-type", "vit_mini", "--sam-checkpoint",
            str(sam), "--max-steps", str(TOTAL_STEPS), "--batch-size", "1", "--lr", "1e-3", "--seed", "3",
            "--save-every", "1", "--no-progress", "--set", *SMALL_PROMPTER]  # fmt: skip


def _env(cache):
    # One thread: the comparison is bitwise-stable, and the shared CPU stays usable. A cache of its own.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WPS_SAM_CACHE": str(cache)}


def _cli(args):
    return [sys.executable, "-m", "wps_sam.cli", *args]


def _logged_steps(run):
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if "loss" in json.loads(line))


def _kill_after_steps(process, run, steps, timeout=180.0):
    """SIGKILL ``process`` once ``steps`` steps are logged and a resume state exists."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if _logged_steps(run) >= steps and (run / "resume.pt").exists():
            break
        time.sleep(0.01)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """One intra-op thread in-process too, as in the subprocess (and kind to the shared CPU); a private
    embedding cache."""
    monkeypatch.setenv("WPS_SAM_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(setup, tmp_path, capsys, isolated):
    root, sam = setup
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    # Only the run to be killed needs a process of its own; it is killed from a thread while the
    # reference runs in-process (imports are slow: the two overlap).
    process = subprocess.Popen(_cli(_train_args(root, sam, killed)), env=_env(tmp_path / "cache-killed"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    killer = threading.Thread(target=_kill_after_steps, args=(process, killed, KILL_AFTER))
    killer.start()
    try:
        assert main(_train_args(root, sam, reference)) == 0
    finally:
        killer.join()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    saved = torch.load(killed / "resume.pt", weights_only=True)["global_step"]
    assert KILL_AFTER - 1 <= saved < TOTAL_STEPS  # killed mid-run; the state on disk is whole

    assert main([*_train_args(root, sam, killed), "--resume"]) == 0

    expected, resumed = load_file(reference / "model.safetensors"), load_file(killed / "model.safetensors")
    assert expected.keys() == resumed.keys()
    diff = max((expected[k] - resumed[k]).abs().max().item() for k in expected)
    assert diff <= 1e-6, diff
    final = torch.load(killed / "resume.pt", weights_only=True)
    assert final["global_step"] == TOTAL_STEPS
    logged = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, TOTAL_STEPS + 1))  # each step once, though the kill fell between saves

    # Resuming with a changed setting is refused in one line.
    args = _train_args(root, sam, killed)
    args[args.index("--lr") + 1] = "2e-3"
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.lr" in err and "Traceback" not in err


def test_records_after_the_resumed_step_are_dropped(tmp_path):
    lines = [
        {"step": 1, "loss": 1.0},
        {"step": 2, "loss": 0.9},
        {"step": 2, "val_miou": 0.1},
        {"step": 3, "loss": 0.8},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert run_dir.drop_metrics_after(tmp_path, 2) == 1
    kept = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert kept == lines[:3]
    assert run_dir.drop_metrics_after(tmp_path, 2) == 0
    assert run_dir.drop_metrics_after(tmp_path / "absent", 2) == 0


def test_trained_steps_is_the_last_logged_step(tmp_path):
    assert run_dir.trained_steps(tmp_path) == 0  # nothing logged yet
    lines = [{"step": 25, "loss": 1.0}, {"step": 30, "loss": 0.9}, {"step": 30, "val_miou": 0.1}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert run_dir.trained_steps(tmp_path) == 30
