"""Training a WPS-SAM prompter: data, model, optimiser, schedule, validation, saving and exact resume.

The data order of epoch e is a permutation drawn from ``(seed, e)`` alone (:mod:`.order`), and the
resume state holds the global step, so a killed run continues with exactly the batches it would
have seen.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from ..build import build_denoiser, build_sam_from_config, build_training_criterion, build_wps_sam
from ..cache import EmbeddingCache, default_cache_dir, sam_fingerprint
from ..config import Config, config_to_dict, save_config
from ..data.cached import (
    CachedEmbeddingDataset,
    CachedRows,
    cache_dataset,
    cache_encoder,
    collate_cached,
    split_embeddings,
)
from ..data.checks import triaged_split
from ..data.coco import PartDataIndex
from ..data.coco_json import find_annotation_file
from ..data.datasets import PartSegmentationDataset, check_supervision, collate_parts
from ..data.transforms import SamTransform
from ..errors import CheckpointError, DataError, TrainingError
from ..modeling.wps_sam import WPSSAM
from . import run_dir
from .device import cpu_has_native_bf16, encoder_dtype, resolve_device
from .distributed import all_reduce_mean, init_distributed, wrap_prompter
from .loop import image_embeddings, move_batch, train_step
from .order import epoch_batches
from .scalars import ScalarLog
from .schedule import adamw, warmup_cosine

logger = logging.getLogger(__name__)

# Training embeddings that fix the prompter's input standardisation (recipes with standardize_input).
STATS_IMAGES = 512


def split_exists(root: str | Path, split: str) -> bool:
    try:
        find_annotation_file(Path(root), split)
    except DataError:
        return False
    return True


@dataclass
class _Run:
    """Everything one training run holds."""

    cfg: Config
    out: Path
    rank: int
    world_size: int
    device: torch.device
    class_names: list[str]
    val_index: PartDataIndex | None
    model: WPSSAM
    criterion: Any
    denoiser: Any
    train_set: Dataset
    collate: Callable
    cache: EmbeddingCache | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    steps_per_epoch: int
    total_steps: int
    sam_sha256: str
    prompter: torch.nn.Module
    global_step: int = 0
    scalars: ScalarLog | None = None  # the main process's metrics.jsonl and TensorBoard writer
    # The validation split's cached embeddings (and its mirrored frames' under inference.flip_test);
    # None: validation encodes the images (train.cache off, or no validation).
    val_embeddings: tuple[CachedRows, CachedRows | None] | None = None
    best_val_miou: float | None = None  # of the weights in RUN/best (restored on resume)

    @property
    def main_process(self) -> bool:
        return self.rank == 0


def train(
    cfg: Config, out: str | Path, resume: bool = False, progress: bool = True, recheck: bool = False
) -> Path:
    """Train a prompter as ``cfg`` says and write the run directory ``out``; returns its path.

    Under ``torchrun`` every rank runs this: the cache is built in shards, each rank takes every
    world_size-th batch of the same epoch order, only the prompter is wrapped in DDP, and rank 0 alone
    writes the run directory and validates.
    """
    from tqdm import tqdm

    run = _prepare(cfg, Path(out), resume, progress, recheck)
    if run.main_process:
        run.scalars = ScalarLog(run.out, run.global_step)
    run.model.train()
    bar = tqdm(
        total=run.total_steps,
        initial=run.global_step,
        disable=not (progress and run.main_process),
        desc="train",
        dynamic_ncols=True,
    )
    meter: dict[str, float] = {}
    started = time.time()
    while run.global_step < run.total_steps:
        epoch, position = divmod(run.global_step, run.steps_per_epoch)
        for batch in _epoch_loader(run, epoch, position):
            stats = _step(run, batch)
            for k, v in stats.items():
                meter[k] = v if k not in meter else 0.9 * meter[k] + 0.1 * v
            bar.update(1)
            bar.set_postfix(
                loss=f"{meter['loss']:.3f}", recall=f"{meter.get('match_recall', 0.0):.3f}", epoch=epoch
            )
            if run.main_process and (
                run.global_step % cfg.train.log_every == 0 or run.global_step == run.total_steps
            ):
                record = {"step": run.global_step, "epoch": epoch, "lr": run.scheduler.get_last_lr()[0]}
                run.scalars.write(record | stats | {"elapsed_s": round(time.time() - started, 2)})
            if run.global_step % cfg.train.save_every == 0:
                _save_state(run)
            if run.global_step >= run.total_steps:
                break
        if run.global_step % run.steps_per_epoch == 0 or run.global_step >= run.total_steps:
            _save_state(run)
            _validate(run, epoch, bar)
    bar.close()
    _save_state(run)
    if run.scalars is not None:
        run.scalars.close()
    if run.cache is not None:
        run.cache.release()
    return run.out


def _prepare(cfg: Config, out: Path, resume: bool, progress: bool, recheck: bool = False) -> _Run:
    """Data, model, optimiser and schedule of a run; the resume state loaded, or the run folder begun."""
    rank, world_size, local_rank = init_distributed()
    if not resume and any(
        (folder / run_dir.WEIGHTS_FILE).exists() for folder in (out, out / run_dir.BEST_DIR)
    ):
        raise DataError(f"{out} already holds a trained run: choose another --out, or pass --resume")
    state = run_dir.load_resume_state(out) if resume else None
    torch.manual_seed(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", local_rank)
    warn_if_bf16_is_emulated(cfg, device)
    index = triaged_split(cfg.data.root, cfg.data.train_split, strict=cfg.data.strict, recheck=recheck)
    if not index.images:
        raise DataError(f"{cfg.data.root}: split '{cfg.data.train_split}' has no usable image")
    check_supervision(index, cfg.data.supervision)
    class_names = index.class_names
    val_index = None  # every rank's: all of them encode its share of the cache, rank 0 validates
    if cfg.train.validate and split_exists(cfg.data.root, cfg.data.val_split):
        val_index = triaged_split(
            cfg.data.root, cfg.data.val_split, class_names, strict=cfg.data.strict, recheck=recheck
        )

    sam = build_sam_from_config(cfg)
    sam_sha256 = getattr(sam, "checkpoint_sha256", "")
    if sam_sha256 != "random":
        cfg = dataclasses.replace(cfg, sam=dataclasses.replace(cfg.sam, sha256=sam_sha256))
    model = build_wps_sam(cfg, len(class_names), sam).to(device)
    # Box supervision never reads a part's point: the box centre spares the interior point's distance
    # transform (~5 s per pass over the demo's 1600 images).
    point_mode = "box_center" if cfg.data.supervision == "box" else cfg.data.point_mode
    datasets = [
        PartSegmentationDataset(
            index, SamTransform(sam.image_encoder.img_size), cfg.data.supervision, point_mode,
            mirrored=mirrored,
        )
        for mirrored in ((False, True) if cfg.train.augment == "hflip" else (False,))
    ]  # fmt: skip
    # What keys the cache's embeddings (a hash of the encoder's weights when they come from no file).
    fingerprint = sam_fingerprint(sam) if cfg.train.cache else ""
    train_set, collate, cache = _embedding_source(
        model, fingerprint, datasets, cfg, device, progress and rank == 0
    )
    steps_per_epoch = math.ceil(len(train_set) / cfg.train.batch_size) // world_size
    if steps_per_epoch == 0:
        raise DataError(
            f"{len(train_set)} images make fewer batches of {cfg.train.batch_size} than the "
            f"{world_size} processes: lower --batch-size"
        )
    total_steps = cfg.train.max_steps or cfg.train.epochs * steps_per_epoch
    optimizer = adamw(model.prompter.parameters(), cfg.train.lr, cfg.train.weight_decay)
    scheduler = warmup_cosine(optimizer, cfg.train.warmup_steps, total_steps, cfg.train.min_lr_ratio)
    run = _Run(
        cfg, out, rank, world_size, device, class_names, val_index if rank == 0 else None, model,
        build_training_criterion(cfg, len(class_names)), build_denoiser(cfg, len(class_names)),
        train_set, collate, cache, optimizer, scheduler, steps_per_epoch, total_steps, sam_sha256,
        model.prompter,
    )  # fmt: skip
    if val_index is not None and val_index.has_masks and cfg.train.cache:
        val_embeddings = split_embeddings(
            val_index, model.image_encoder, fingerprint, cfg.train, device,
            cfg.inference.flip_test, progress and rank == 0,
        )  # fmt: skip
        run.val_embeddings = val_embeddings if rank == 0 else None
    if state is not None:
        _restore(run, state)
    else:
        if model.prompter.standardizes_input:
            model.prompter.set_input_stats(*_input_stats(run))
        if run.main_process:
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out / run_dir.CONFIG_FILE)
    if world_size > 1:
        run.prompter = wrap_prompter(model, device)
    return run


def warn_if_bf16_is_emulated(cfg: Config, device: torch.device) -> bool:
    """Warn (and return True) when ``train.cpu_amp`` asks for bf16 on a CPU without native bf16.

    There bf16 autocast is emulated and slower than float32, not faster: the convergence test's 300
    steps took 337 s under bf16 and 51 s in float32 on an AVX2-only CPU.
    """
    emulated = cfg.train.cpu_amp and device.type == "cpu" and not cpu_has_native_bf16()
    if emulated:
        logger.warning(
            "train.cpu_amp: this CPU has no native bf16 (AVX512-BF16 or AMX), so bf16 autocast is "
            "emulated and trains several times slower than float32; set train.cpu_amp=false"
        )
    return emulated


def _restore(run: _Run, state: dict[str, Any]) -> None:
    _check_resumable(state, run.cfg, run.class_names, run.out)
    run.model.prompter.load_state_dict(state["prompter"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng_cpu"])
    if run.device.type == "cuda" and "rng_cuda" in state:
        torch.cuda.set_rng_state(state["rng_cuda"], run.device)
    run.global_step = int(state["global_step"])
    if run.main_process:
        run_dir.drop_metrics_after(run.out, run.global_step)
        best = run_dir.best_validation(run.out)
        run.best_val_miou = best["miou"] if best else None
    logger.info("resuming %s at step %d of %d", run.out, run.global_step, run.total_steps)


@torch.no_grad()
def _input_stats(run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std [C] of the first :data:`STATS_IMAGES` training embeddings."""
    count = min(STATS_IMAGES, len(run.train_set))
    loader = DataLoader(
        run.train_set,
        batch_size=32,
        sampler=range(count),
        collate_fn=run.collate,
        generator=torch.Generator(),
    )
    total, total_sq, cells = 0.0, 0.0, 0
    for batch in loader:
        if run.cache is not None and "embeddings" not in batch:
            batch["embeddings"] = run.cache.get(batch["keys"], device=run.device)
        batch = move_batch(batch, run.device)
        emb = image_embeddings(run.model, batch, run.device, run.cfg.train.amp, run.cfg.train.cpu_amp)
        emb = emb.double()
        total = total + emb.sum((0, 2, 3))
        total_sq = total_sq + (emb**2).sum((0, 2, 3))
        cells += emb.shape[0] * emb.shape[2] * emb.shape[3]
    mean = total / cells
    std = (total_sq / cells - mean**2).clamp_min(0).sqrt()
    return mean.float(), std.float()


def _epoch_loader(run: _Run, epoch: int, position: int) -> DataLoader:
    batches = epoch_batches(len(run.train_set), run.cfg.train.batch_size, run.cfg.train.seed, epoch)
    batches = batches[run.rank :: run.world_size][: run.steps_per_epoch][position:]
    # Its own generator: a DataLoader otherwise draws its workers' base seed from the global RNG,
    # so a resumed run (one more loader) would see other dropout masks than an uninterrupted one.
    return DataLoader(
        run.train_set,
        batch_sampler=batches,
        collate_fn=run.collate,
        generator=torch.Generator().manual_seed(run.cfg.train.seed * 1_000_003 + epoch),
        num_workers=run.cfg.data.num_workers,
        pin_memory=run.device.type == "cuda",
    )


def _step(run: _Run, batch: dict[str, Any]) -> dict[str, float]:
    if run.cache is not None and "embeddings" not in batch:
        batch["embeddings"] = run.cache.get(batch["keys"], device=run.device)
    cfg = run.cfg
    stats = train_step(
        run.model, run.criterion, batch, run.optimizer, run.scheduler, run.device,
        amp=cfg.train.amp, grad_clip=cfg.train.grad_clip, prompter=run.prompter, denoiser=run.denoiser,
        cpu_amp=cfg.train.cpu_amp,
    )  # fmt: skip
    if run.world_size > 1:
        stats = all_reduce_mean(stats)
    run.global_step += 1
    return stats


def _save_state(run: _Run) -> None:
    # Never overwrite the last good state with a broken one: an overflowing update can write inf
    # into the weights while the loss of that step was still finite. (Every rank checks: DDP keeps
    # the weights identical, so all stop together.)
    prompter = run.model.prompter
    if not all(torch.isfinite(p).all() for p in prompter.parameters()):
        raise TrainingError(
            f"the prompter's weights are not finite at step {run.global_step}: stopping; the last saved "
            f"state in {run.out} is kept. Lower --lr or set train.grad_clip, then --resume."
        )
    if not run.main_process:
        return
    run_dir.save_weights(run.out, prompter, run.class_names, run.cfg, run.sam_sha256)
    snapshot: dict[str, Any] = {
        "prompter": prompter.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "global_step": run.global_step,
        "config": config_to_dict(run.cfg),
        "class_names": run.class_names,
    }
    if run.device.type == "cuda":
        snapshot["rng_cuda"] = torch.cuda.get_rng_state(run.device)
    run_dir.save_resume_state(run.out, snapshot)


def _validate(run: _Run, epoch: int, bar: Any) -> None:
    from ..evaluation.evaluator import evaluate

    if run.val_index is None or not run.val_index.has_masks:
        return
    run.model.eval()
    embeddings, mirrored = run.val_embeddings or (None, None)
    metrics = evaluate(
        run.model, run.val_index, run.cfg, run.device, progress=False,
        embeddings=embeddings, mirrored_embeddings=mirrored,
    )  # fmt: skip
    run.model.train()
    best = run.best_val_miou is None or metrics["miou"] > run.best_val_miou
    record = {
        "step": run.global_step,
        "epoch": epoch,
        "val_miou": metrics["miou"],
        "val_macc": metrics["macc"],
        "val_best": best,
    }
    run.scalars.write(record)
    note = ""
    if best:
        # Kept apart from the last weights: a long run can do worse on new images than it did earlier.
        validation = {k: record[k] for k in ("step", "epoch")} | {
            "split": run.cfg.data.val_split, "miou": metrics["miou"], "macc": metrics["macc"]
        }  # fmt: skip
        run_dir.save_weights(
            run.out / run_dir.BEST_DIR, run.model.prompter, run.class_names, run.cfg, run.sam_sha256,
            validation,
        )  # fmt: skip
        run.best_val_miou = metrics["miou"]
        note = f"  (best so far: {run.out / run_dir.BEST_DIR})"
    bar.write(f"epoch {epoch}: val mIoU {metrics['miou']:.4f}  mACC {metrics['macc']:.4f}{note}")


def _embedding_source(
    model: WPSSAM,
    fingerprint: str,
    datasets: list[PartSegmentationDataset],
    cfg: Config,
    device: torch.device,
    progress: bool,
) -> tuple[Dataset, Callable, EmbeddingCache | None]:
    """What the training loader reads, the data sets one after the other: cached embeddings (the
    encoder runs once per image and variant; ``fingerprint``: :func:`~wps_sam.cache.sam_fingerprint`
    of the SAM) or images."""
    if not cfg.train.cache:
        return ConcatDataset(datasets), collate_parts, None
    runner, context = cache_encoder(
        model.image_encoder,
        fingerprint,
        encoder_dtype(device, cfg.train.amp, cfg.train.cpu_amp),
        cfg.train.compile_encoder,
    )
    cache = EmbeddingCache(cfg.train.cache_dir or default_cache_dir())
    sources = []
    for dataset in datasets:
        keys = cache_dataset(
            dataset, cache, runner, context, cfg.train.batch_size, cfg.data.num_workers, progress
        )
        resident = device.type == "cuda" and cache.make_resident(keys, device)
        sources.append(CachedEmbeddingDataset(dataset, cache, keys, read_embeddings=not resident))
    return ConcatDataset(sources), collate_cached, cache


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
