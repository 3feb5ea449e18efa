"""The files of a run directory, written atomically.

RUN/
  config.yaml          resolved configuration
  model.safetensors    prompter weights; class names, config and SAM sha256 in the metadata
  metrics.jsonl        one JSON object per logged step / validation
  resume.pt            what ``--resume`` needs (prompter, optimizer, scheduler, RNG, data position)
  best/model.safetensors
                       with validation: the weights of the epoch of the best validation mIoU so far,
                       that validation in the metadata (a run folder of its own for eval and predict)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_torch_save, atomic_write, atomic_write_bytes
from ..config import Config, config_from_dict, config_to_dict
from ..errors import CheckpointError

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
RESUME_FILE = "resume.pt"
BEST_DIR = "best"


def save_weights(
    run: Path,
    prompter: nn.Module,
    class_names: list[str],
    cfg: Config,
    sam_sha256: str,
    validation: dict[str, Any] | None = None,
) -> Path:
    """Prompter weights only, with what a predictor needs to rebuild the run in the metadata, and the
    ``validation`` these weights scored, if any (one file, so the two never disagree after a crash)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in prompter.state_dict().items()}
    metadata = {
        "format": "wps-sam/1",
        "class_names": json.dumps(class_names),
        "config": json.dumps(config_to_dict(cfg)),
        "sam_sha256": sam_sha256,
    }
    if validation is not None:
        metadata["validation"] = json.dumps(validation)
    return atomic_write_bytes(run / WEIGHTS_FILE, save(state, metadata=metadata))


def best_validation(run: Path) -> dict[str, Any] | None:
    """The validation record kept with ``RUN/best/model.safetensors`` (step, epoch, split, miou, macc);
    None when the run has no best weights yet."""
    from safetensors import safe_open

    path = run / BEST_DIR / WEIGHTS_FILE
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        validation = (f.metadata() or {}).get("validation")
    return json.loads(validation) if validation else None


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], list[str], Config, str]:
    """(prompter state, class names, config, SAM sha256) from a ``model.safetensors``."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointError(
            f"no trained weights at {path}: is this a wps-sam run directory? "
            f"(train one with `wps-sam train --out RUN`)"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if metadata.get("format") != "wps-sam/1":
        raise CheckpointError(f"{path}: not a wps-sam prompter checkpoint (metadata format missing)")
    cfg = config_from_dict(json.loads(metadata["config"]), source=str(path))
    return state, json.loads(metadata["class_names"]), cfg, metadata.get("sam_sha256", "")


def append_metrics(run: Path, record: dict[str, Any]) -> None:
    """Append one JSON line; the whole file is rewritten atomically so a kill never leaves half a line."""
    path = run / METRICS_FILE
    old = path.read_bytes() if path.exists() else b""
    line = (json.dumps(record) + "\n").encode()
    atomic_write(path, lambda f: (f.write(old), f.write(line)))


def drop_metrics_after(run: Path, step: int) -> int:
    """Remove the records of steps after ``step`` (a resumed run logs them again); returns how many.

    A run killed between a log line and its next resume state leaves such records behind."""
    path = run / METRICS_FILE
    if not path.exists():
        return 0
    lines = path.read_bytes().splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        atomic_write(path, lambda f: f.writelines(kept))
    return len(lines) - len(kept)


def trained_steps(run: Path) -> int:
    """The optimiser steps run ``run`` has taken: the step of its last metrics record (the trainer logs
    its last step), 0 before any."""
    path = run / METRICS_FILE
    if not path.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_bytes().splitlines() if line.strip()]
    return max(steps, default=0)


def save_resume_state(run: Path, state: dict[str, Any]) -> Path:
    return atomic_torch_save(run / RESUME_FILE, state)


def load_resume_state(run: Path) -> dict[str, Any]:
    path = run / RESUME_FILE
    if not path.is_file():
        raise CheckpointError(f"--resume: {path} does not exist (nothing to resume; drop --resume to start)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable resume file is the same user-facing error
        raise CheckpointError(f"{path}: unreadable resume state ({str(exc).splitlines()[0]})") from None
