"""The demo's stages: WPS-SAM trained and evaluated as the CLI does, and the baselines scored on the
same held-out split; each one timed, its scores, budget and overlay maps recorded."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import Config, config_to_dict
from ..data.coco import PartDataIndex
from ..data.images import read_image
from . import baselines
from .data import MIRRORED_TRAIN, MIRRORED_VAL
from .settings import DemoSettings

logger = logging.getLogger(__name__)


class StageTimings(dict):
    """Seconds per stage, by name; :meth:`stage` times a ``with`` block."""

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        logger.info("demo: %s", name)
        started = time.time()
        try:
            yield
        finally:
            self[name] = round(time.time() - started, 2)


@dataclass
class HeldOutSplit:
    """The held-out split as every method is scored on it."""

    index: PartDataIndex
    gt_maps: list[torch.Tensor]  # ground-truth semantic maps, original frame
    grid_ids: list[int]  # the images shown in the overlay grid


@dataclass
class StageScores:
    """What the stages produce, by method name."""

    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid_maps: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)


def wps_sam_stage(
    cfg: Config,
    run: Path,
    val: HeldOutSplit,
    embeddings: dict[str, torch.Tensor],
    sam_checkpoint: str | None,
    timings: StageTimings,
    scores: StageScores,
    progress: bool,
) -> None:
    """Train WPS-SAM as ``wps-sam train`` does, then evaluate the saved run as ``wps-sam eval`` does,
    on the held-out embeddings of the demo's cache where they are the evaluator's (:func:`held_out_embeddings`)."""
    from ..engine.run_dir import trained_steps
    from ..engine.trainer import train
    from ..evaluation.evaluator import evaluate
    from ..predictor import PartPredictor

    name = run.name
    if run.exists():
        shutil.rmtree(run)  # the demo's own run of an earlier invocation: train afresh
    with timings.stage(f"{name}/train"):
        train(cfg, run, progress=progress)
    with timings.stage(f"{name}/eval"):
        predictor = PartPredictor.from_run(run, cfg.train.device, sam_checkpoint)
        held_out, mirrored = held_out_embeddings(val, embeddings)
        scores.methods[name] = evaluate(
            predictor.model,
            val.index,
            predictor.cfg,
            predictor.device,
            progress=progress,
            embeddings=held_out,
            mirrored_embeddings=mirrored,
        )
    scores.grid_maps[name] = [
        torch.from_numpy(predictor.predict(read_image(val.index.images[i].path)).label_map)
        for i in val.grid_ids
    ]
    scores.configs[name] = config_to_dict(predictor.cfg)
    steps = trained_steps(run)
    scores.budgets[name] = {
        "steps": steps,
        "batch_size": cfg.train.batch_size,
        "image_passes": steps * cfg.train.batch_size,
        "seconds": timings[f"{name}/train"],
    }


def held_out_embeddings(
    val: HeldOutSplit, embeddings: dict[str, torch.Tensor]
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The cached embeddings of the held-out images and of their mirror images, as the evaluator reads
    them, or (None, None): the evaluator encodes. The cache mirrors an image before it is fitted into
    SAM's square frame, the evaluator the frame; the two agree when the image fills the frame."""
    if any(entry.height != entry.width for entry in val.index.images):
        return None, None
    return embeddings["val"], embeddings.get(MIRRORED_VAL)


def score_stage(
    name: str,
    predict: baselines.MapFn,
    val: HeldOutSplit,
    timings: StageTimings,
    scores: StageScores,
    progress: bool,
) -> None:
    with timings.stage(name if name not in scores.budgets else f"{name}/eval"):
        scores.methods[name] = baselines.score(
            predict, val.gt_maps, val.index.class_names, f"eval {name}", progress
        )
        scores.grid_maps[name] = [predict(i) for i in val.grid_ids]


def fully_supervised_stages(
    train_index: PartDataIndex,
    val: HeldOutSplit,
    embeddings: dict[str, torch.Tensor],
    settings: DemoSettings,
    seed: int,
    timings: StageTimings,
    scores: StageScores,
    progress: bool,
    flip_test: bool = False,
) -> None:
    """LR-ASPP from scratch on the images, and a head on the frozen SAM embedding, both from full
    masks; ``flip_test``: both predict from each image and its mirror, as WPS-SAM then does."""
    with timings.stage("load images"):
        train_maps = [baselines.gt_semantic_map(e) for e in train_index.images]
        train_data = baselines.load_semantic_split(train_index, train_maps, settings.image_size, progress)
        val_data = baselines.load_semantic_split(val.index, val.gt_maps, settings.image_size, progress)
        small = settings.fs_image_size
        fs_train = (
            baselines.load_semantic_split(train_index, train_maps, small, progress) if small else train_data
        )
        fs_val = baselines.load_semantic_split(val.index, val.gt_maps, small, progress) if small else val_data
    num_labels = train_index.num_classes + 1
    # Both baselines weigh their cross-entropy towards the small parts (without, they paint background).
    weights = baselines.balanced_class_weights(train_data.labels, num_labels)
    n = len(train_index.images)
    head_steps = settings.head_steps * settings.steps_scale

    name = "fully-supervised"
    with timings.stage(f"{name}/train"):
        net, scores.budgets[name] = fit_lraspp(fs_train, num_labels, weights, settings, seed, progress)
    score_stage(name, baselines.lraspp_predictor(net, fs_val, flip_test), val, timings, scores, progress)

    name = "fully-supervised-sam-head"
    with timings.stage(f"{name}/train"):
        torch.manual_seed(seed)
        head = baselines.EmbeddingHead(num_labels)
        head.set_input_stats(embeddings["train"])
        scores.budgets[name] = baselines.fit_segmenter(
            head,
            baselines.head_batch(head, embeddings["train"], train_data, embeddings.get(MIRRORED_TRAIN)),
            n,
            head_steps,
            settings.head_batch_size,
            settings.head_lr,
            warmup_steps=head_steps // 20,
            seed=seed,
            desc=name,
            progress=progress,
            class_weights=weights,
            bf16=bool(settings.cpu_bf16),
        )
    mirrored = embeddings[MIRRORED_VAL] if flip_test else None
    predict = baselines.head_predictor(head, embeddings["val"], val_data, mirrored)
    score_stage(name, predict, val, timings, scores, progress)


def fit_lraspp(
    train: baselines.SemanticSplit,
    num_labels: int,
    class_weights: torch.Tensor,
    settings: DemoSettings,
    seed: int,
    progress: bool = True,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The demo's ``fully-supervised`` baseline: LR-ASPP from scratch on ``train`` with the ``fs_*``
    settings (``steps_scale`` times ``fs_steps``). Returns the network and
    :func:`~.baselines.fit_segmenter`'s budget."""
    steps = settings.fs_steps * settings.steps_scale
    torch.manual_seed(seed)
    net = baselines.lraspp(num_labels)
    budget = baselines.fit_segmenter(
        net,
        baselines.lraspp_batch(net, train),
        len(train.labels),
        steps,
        settings.fs_batch_size,
        settings.fs_lr,
        warmup_steps=steps // 20,
        seed=seed,
        desc="fully-supervised",
        progress=progress,
        class_weights=class_weights,
    )
    return net, budget
