"""Training a WPS-SAM prompter: data, model, optimiser, schedule, validation, saving and exact resume.

The data order of epoch e is a permutation drawn from ``(seed, e)`` alone, and the resume state holds
the global step, so a killed run continues with exactly the batches it would have seen.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..build import build_sam_from_config, build_training_criterion, build_wps_sam
from ..config import Config, config_to_dict, save_config
from ..data.checks import triaged_split
from ..data.datasets import PartSegmentationDataset, collate_parts
from ..data.transforms import SamTransform
from ..errors import CheckpointError, DataError, TrainingError
from . import run_dir
from .loop import train_step
from .schedule import warmup_cosine

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def epoch_order(num_items: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of epoch ``epoch``: a function of (seed, epoch) only."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=generator).tolist()


def _batches(order: list[int], batch_size: int, start_batch: int) -> list[list[int]]:
    return [order[i : i + batch_size] for i in range(start_batch * batch_size, len(order), batch_size)]


def split_exists(root: str | Path, split: str) -> bool:
    root = Path(root)
    return (root / "annotations" / split / f"{split}.json").is_file() or (
        root / "annotations" / f"{split}.json").is_file()


def train(cfg: Config, out: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train a prompter as ``cfg`` says and write the run directory ``out``; returns its path."""
    from tqdm import tqdm

    from ..evaluation.evaluator import evaluate

    out = Path(out)
    if not resume and (out / run_dir.WEIGHTS_FILE).exists():
        raise DataError(f"{out} already holds a trained run: choose another --out, or pass --resume")
    state = run_dir.load_resume_state(out) if resume else None

    torch.manual_seed(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    # The same triage as `wps-sam check-data`: unreadable images and faulty annotations are skipped.
    index = triaged_split(cfg.data.root, cfg.data.train_split, strict=cfg.data.strict, progress=progress)
    if not index.images:
        raise DataError(f"{cfg.data.root}: split '{cfg.data.train_split}' has no usable image")
    class_names = index.class_names
    val_index = None
    if cfg.train.validate and split_exists(cfg.data.root, cfg.data.val_split):
        val_index = triaged_split(cfg.data.root, cfg.data.val_split, class_names=class_names,
                                  strict=cfg.data.strict, progress=progress)

    sam = build_sam_from_config(cfg)
    sam_sha256 = getattr(sam, "checkpoint_sha256", "")
    if sam_sha256 != "random":
        cfg = dataclasses.replace(cfg, sam=dataclasses.replace(cfg.sam, sha256=sam_sha256))
    model = build_wps_sam(cfg, len(class_names), sam).to(device)
    criterion = build_training_criterion(cfg, len(class_names))
    transform = SamTransform(sam.image_encoder.img_size)
    dataset = PartSegmentationDataset(index, transform, cfg.data.supervision, cfg.data.point_mode)

    batch_size = cfg.train.batch_size
    steps_per_epoch = math.ceil(len(dataset) / batch_size)
    total_steps = cfg.train.max_steps or cfg.train.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.prompter.parameters(), lr=cfg.train.lr,
                                  weight_decay=cfg.train.weight_decay)
    scheduler = warmup_cosine(optimizer, cfg.train.warmup_steps, total_steps, cfg.train.min_lr_ratio)
    global_step = 0
    if state is not None:
        _check_resumable(state, cfg, class_names, out)
        model.prompter.load_state_dict(state["prompter"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        global_step = int(state["global_step"])
        logger.info("resuming %s at step %d of %d", out, global_step, total_steps)
    else:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / run_dir.CONFIG_FILE)

    def save_state() -> None:
        # Never overwrite the last good state with a broken one (the loss can be finite for one
        # more step while an overflowing update already wrote inf into the weights).
        if not all(torch.isfinite(p).all() for p in model.prompter.parameters()):
            raise TrainingError(
                f"the prompter's weights are not finite at step {global_step}: stopping; the last saved "
                f"state in {out} is kept. Lower --lr or set train.grad_clip, then --resume."
            )
        run_dir.save_weights(out, model.prompter, class_names, cfg, sam_sha256)
        snapshot: dict[str, Any] = {
            "prompter": model.prompter.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "global_step": global_step,
            "config": config_to_dict(cfg),
            "class_names": class_names,
        }
        if device.type == "cuda":
            snapshot["rng_cuda"] = torch.cuda.get_rng_state(device)
        run_dir.save_resume_state(out, snapshot)

    model.train()
    bar = tqdm(total=total_steps, initial=global_step, disable=not progress, desc="train", dynamic_ncols=True)
    meter: dict[str, float] = {}
    started = time.time()
    while global_step < total_steps:
        epoch, position = divmod(global_step, steps_per_epoch)
        batches = _batches(epoch_order(len(dataset), cfg.train.seed, epoch), batch_size, position)
        loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate_parts,
                            num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda")
        for batch in loader:
            stats = train_step(model, criterion, batch, optimizer, scheduler, device,
                               amp=cfg.train.amp, grad_clip=cfg.train.grad_clip)
            global_step += 1
            for k, v in stats.items():
                meter[k] = v if k not in meter else 0.9 * meter[k] + 0.1 * v
            bar.update(1)
            bar.set_postfix(ce=f"{meter['loss_ce']:.3f}", tok=f"{meter['loss_token']:.4f}",
                            acc=f"{meter.get('class_acc', 0.0):.3f}", epoch=epoch)
            if global_step % cfg.train.log_every == 0 or global_step == total_steps:
                run_dir.append_metrics(out, {"step": global_step, "epoch": epoch,
                                             "lr": scheduler.get_last_lr()[0], **stats,
                                             "elapsed_s": round(time.time() - started, 2)})
            if global_step % cfg.train.save_every == 0:
                save_state()
            if global_step >= total_steps:
                break
        epoch_done = global_step % steps_per_epoch == 0 or global_step >= total_steps
        if epoch_done:
            save_state()
            if val_index is not None and val_index.has_masks:
                model.eval()
                metrics = evaluate(model, val_index, cfg, device, progress=False)
                model.train()
                record = {"step": global_step, "epoch": epoch, "val_miou": metrics["miou"],
                          "val_macc": metrics["macc"]}
                run_dir.append_metrics(out, record)
                bar.write(f"epoch {epoch}: val mIoU {metrics['miou']:.4f}  mACC {metrics['macc']:.4f}")
    bar.close()
    save_state()
    return out


def _check_resumable(state: dict[str, Any], cfg: Config, class_names: list[str], out: Path) -> None:
    saved = state.get("config", {})
    now = config_to_dict(cfg)
    for section in ("sam", "prompter", "loss", "data", "train"):
        for key, value in now[section].items():
            if section == "train" and key in ("device", "save_every", "log_every", "validate"):
                continue
            if section == "data" and key in ("num_workers", "root", "strict"):
                continue
            if saved.get(section, {}).get(key) != value:
                raise CheckpointError(
                    f"--resume: {out} was trained with {section}.{key}={saved.get(section, {}).get(key)!r}, "
                    f"now {value!r}; resume with the same settings or start a new --out"
                )
    if state.get("class_names") != class_names:
        raise CheckpointError(f"--resume: the data set's part classes differ from those of {out}")
