"""Training a WPS-SAM prompter: data, model, optimiser, schedule, validation, saving and exact resume.

The data order of epoch e is a permutation drawn from ``(seed, e)`` alone, and the resume state holds
the global step, so a killed run continues with exactly the batches it would have seen.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from segment_anything.modeling import Sam
from torch.utils.data import DataLoader, Dataset

from ..build import build_sam_from_config, build_training_criterion, build_wps_sam
from ..cache import CacheContext, EmbeddingCache, default_cache_dir, sam_fingerprint
from ..config import Config, config_to_dict, save_config
from ..data.cached import CachedEmbeddingDataset, cache_dataset, collate_cached
from ..data.checks import triaged_split
from ..data.datasets import PartSegmentationDataset, collate_parts
from ..data.transforms import SamTransform
from ..errors import CheckpointError, DataError, TrainingError
from ..modeling.wps_sam import WPSSAM
from ..sam.encoder import EncoderRunner
from . import run_dir
from .distributed import all_reduce_mean, init_distributed, wrap_prompter
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
        root / "annotations" / f"{split}.json"
    ).is_file()


def train(cfg: Config, out: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train a prompter as ``cfg`` says and write the run directory ``out``; returns its path.

    Under ``torchrun`` every rank runs this: the cache is built in shards, each rank takes every
    world_size-th batch of the same epoch order, only the prompter is wrapped in DDP, and rank 0 alone
    writes the run directory and validates.
    """
    from tqdm import tqdm

    from ..evaluation.evaluator import evaluate

    rank, world_size, local_rank = init_distributed()
    main_process = rank == 0
    out = Path(out)
    if not resume and (out / run_dir.WEIGHTS_FILE).exists():
        raise DataError(f"{out} already holds a trained run: choose another --out, or pass --resume")
    state = run_dir.load_resume_state(out) if resume else None

    torch.manual_seed(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", local_rank)
    index = triaged_split(cfg.data.root, cfg.data.train_split, strict=cfg.data.strict)
    if not index.images:
        raise DataError(f"{cfg.data.root}: split '{cfg.data.train_split}' has no usable image")
    class_names = index.class_names
    val_index = None
    if cfg.train.validate and main_process and split_exists(cfg.data.root, cfg.data.val_split):
        val_index = triaged_split(cfg.data.root, cfg.data.val_split, class_names, strict=cfg.data.strict)

    sam = build_sam_from_config(cfg)
    sam_sha256 = getattr(sam, "checkpoint_sha256", "")
    if sam_sha256 != "random":
        cfg = dataclasses.replace(cfg, sam=dataclasses.replace(cfg.sam, sha256=sam_sha256))
    model = build_wps_sam(cfg, len(class_names), sam).to(device)
    criterion = build_training_criterion(cfg, len(class_names))
    dataset = PartSegmentationDataset(
        index, SamTransform(sam.image_encoder.img_size), cfg.data.supervision, cfg.data.point_mode
    )
    train_set, collate, cache = _embedding_source(model, sam, dataset, cfg, device, progress and main_process)

    batch_size = cfg.train.batch_size
    steps_per_epoch = math.ceil(len(dataset) / batch_size) // world_size
    if steps_per_epoch == 0:
        raise DataError(
            f"{len(dataset)} images make fewer batches of {batch_size} than the "
            f"{world_size} processes: lower --batch-size"
        )
    total_steps = cfg.train.max_steps or cfg.train.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(
        model.prompter.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
    )
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
    elif main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / run_dir.CONFIG_FILE)
    prompter = wrap_prompter(model, device) if world_size > 1 else model.prompter

    def save_state() -> None:
        # Never overwrite the last good state with a broken one: an overflowing update can write inf
        # into the weights while the loss of that step was still finite. (Every rank checks: DDP keeps
        # the weights identical, so all stop together.)
        if not all(torch.isfinite(p).all() for p in model.prompter.parameters()):
            raise TrainingError(
                f"the prompter's weights are not finite at step {global_step}: stopping; the last saved "
                f"state in {out} is kept. Lower --lr or set train.grad_clip, then --resume."
            )
        if not main_process:
            return
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
    bar = tqdm(
        total=total_steps,
        initial=global_step,
        disable=not (progress and main_process),
        desc="train",
        dynamic_ncols=True,
    )
    meter: dict[str, float] = {}
    started = time.time()
    while global_step < total_steps:
        epoch, position = divmod(global_step, steps_per_epoch)
        batches = _batches(epoch_order(len(dataset), cfg.train.seed, epoch), batch_size, 0)
        batches = batches[rank::world_size][:steps_per_epoch][position:]
        # Its own generator: a DataLoader otherwise draws its workers' base seed from the global RNG,
        # so a resumed run (one more loader) would see other dropout masks than an uninterrupted one.
        loader_rng = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + epoch)
        loader = DataLoader(
            train_set,
            batch_sampler=batches,
            collate_fn=collate,
            generator=loader_rng,
            num_workers=cfg.data.num_workers,
            pin_memory=device.type == "cuda",
        )
        for batch in loader:
            if cache is not None and "embeddings" not in batch:
                batch["embeddings"] = cache.get(batch["keys"], device=device)
            stats = train_step(
                model,
                criterion,
                batch,
                optimizer,
                scheduler,
                device,
                amp=cfg.train.amp,
                grad_clip=cfg.train.grad_clip,
                prompter=prompter,
            )
            if world_size > 1:
                stats = all_reduce_mean(stats)
            global_step += 1
            for k, v in stats.items():
                meter[k] = v if k not in meter else 0.9 * meter[k] + 0.1 * v
            bar.update(1)
            bar.set_postfix(
                ce=f"{meter['loss_ce']:.3f}",
                tok=f"{meter['loss_token']:.4f}",
                acc=f"{meter.get('class_acc', 0.0):.3f}",
                epoch=epoch,
            )
            if main_process and (global_step % cfg.train.log_every == 0 or global_step == total_steps):
                run_dir.append_metrics(
                    out,
                    {
                        "step": global_step,
                        "epoch": epoch,
                        "lr": scheduler.get_last_lr()[0],
                        **stats,
                        "elapsed_s": round(time.time() - started, 2),
                    },
                )
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
                record = {
                    "step": global_step,
                    "epoch": epoch,
                    "val_miou": metrics["miou"],
                    "val_macc": metrics["macc"],
                }
                run_dir.append_metrics(out, record)
                bar.write(f"epoch {epoch}: val mIoU {metrics['miou']:.4f}  mACC {metrics['macc']:.4f}")
    bar.close()
    save_state()
    if cache is not None:
        cache.release()
    return out


def _embedding_source(
    model: WPSSAM,
    sam: Sam,
    dataset: PartSegmentationDataset,
    cfg: Config,
    device: torch.device,
    progress: bool,
) -> tuple[Dataset, Callable, EmbeddingCache | None]:
    """What the training loader reads: cached embeddings (encoder run once per image) or images."""
    if not cfg.train.cache:
        return dataset, collate_parts, None
    bf16 = cfg.train.amp and device.type == "cuda"
    runner = EncoderRunner(
        model.image_encoder, dtype=torch.bfloat16 if bf16 else None, compile=cfg.train.compile_encoder
    )
    context = CacheContext(sam_fingerprint(sam), model.image_encoder.img_size, runner.precision)
    cache = EmbeddingCache(cfg.train.cache_dir or default_cache_dir())
    keys = cache_dataset(
        dataset, cache, runner, context, cfg.train.batch_size, cfg.data.num_workers, progress
    )
    resident = device.type == "cuda" and cache.make_resident(keys, device)
    return CachedEmbeddingDataset(dataset, cache, keys, read_embeddings=not resident), collate_cached, cache


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
