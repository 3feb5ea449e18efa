"""The training comparison: the official recipe's loop against ours, on the same model and data.

Both loops start from the same prompter weights and visit the images in the same order; see the
package docstring for what each does.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import warnings
from typing import Any

import torch
from torch import Tensor

from ..config import Config, DataConfig, PrompterConfig, SamConfig
from .timing import fp32_precision, timed

NUM_CLASSES = 40  # PartImageNet's part classes
REL_POS_STD = 0.1


def random_targets(n: int, size: int, gen: torch.Generator) -> list[dict[str, Tensor]]:
    """Random parts, 1 to 6 per image: labels and XYXY boxes in the input frame."""
    targets = []
    for _ in range(n):
        k = int(torch.randint(1, 7, (1,), generator=gen))
        xy = torch.rand(k, 2, generator=gen) * size * 0.7
        wh = (0.05 + torch.rand(k, 2, generator=gen) * 0.25) * size
        targets.append(
            {
                "labels": torch.randint(0, NUM_CLASSES, (k,), generator=gen),
                "boxes": torch.cat([xy, xy + wh], dim=1),
            }
        )
    return targets


def reference_step(model, criterion, optimizer, scheduler, images: Tensor, targets: list[dict]) -> None:
    """One step of the official recipe: encode the batch, then teacher, matching and loss image by image."""
    with torch.no_grad():
        embeddings = model.image_encoder(images)
    outputs = model.prompter(embeddings)
    prompt_encoder = model.teacher.prompt_encoder
    loss = 0.0
    for b, target in enumerate(targets):
        with torch.no_grad():
            tokens, _ = prompt_encoder(points=None, boxes=target["boxes"], masks=None)
        one = {"labels": target["labels"], "tokens": tokens}
        losses = criterion({k: v[b : b + 1] for k, v in outputs.items()}, [one])
        loss = loss + criterion.weighted_total(losses) / len(targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    loss.item()  # the official loop logs the loss every step


@dataclasses.dataclass
class TrainingRun:
    """What both training loops share: the model, its loss, the data and the schedule."""

    model: Any  # WPSSAM
    criterion: Any  # SetCriterion
    targets: list[dict[str, Tensor]]
    pool: Tensor  # preprocessed inputs [P, 3, S, S], CPU
    dev: torch.device
    batch_size: int
    total_steps: int
    steps_per_epoch: int
    warmup: int
    measured: int
    start: dict[str, Tensor]  # the prompter's initial weights

    def optimiser(self) -> tuple[torch.optim.Optimizer, Any]:
        from ..engine.schedule import adamw, warmup_cosine

        self.model.prompter.load_state_dict(self.start)  # the same start for both loops
        opt = adamw(self.model.prompter.parameters(), 1e-4, 1e-4)  # the trainer's optimiser
        return opt, warmup_cosine(opt, min(250, self.total_steps // 10), self.total_steps)

    def batch(self, step: int) -> list[int]:
        """Image indices of global step ``step``: a fresh permutation every epoch, as the trainer."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = torch.randperm(len(self.targets), generator=torch.Generator().manual_seed(epoch))
        return order[position * self.batch_size :][: self.batch_size].tolist()


def measure_reference(run: TrainingRun, tf32: bool) -> dict[str, float]:
    """(a) SAM's own encoder in float32 in every step, then the per-image loop."""
    from ..sam.encoder import restore_encoder

    restore_encoder(run.model.image_encoder)
    run.model.train()
    opt, sched = run.optimiser()
    inputs = run.pool.to(run.dev)

    def step(k: int) -> None:
        idx = run.batch(k)
        targets = [{name: v.to(run.dev) for name, v in run.targets[i].items()} for i in idx]
        reference_step(run.model, run.criterion, opt, sched, inputs[: len(idx)], targets)

    with fp32_precision(run.dev, matmul_tf32=tf32, cudnn_tf32=True):
        for k in range(run.warmup):
            step(k)
        step_s = timed(run.dev, lambda: [step(run.warmup + k) for k in range(run.measured)]) / run.measured
    return {
        "reference_step_s": step_s,
        "reference_measured_steps": run.measured,
        "reference_total_s": step_s * run.total_steps,
    }


def measure_ours(run: TrainingRun, runner: Any, full_run_budget_s: float) -> dict[str, Any]:
    """(b) The cache built once (timed in full, disk and residency included), then K epochs of train_step."""
    from ..cache import EmbeddingCache
    from ..engine.loop import train_step

    keys = [f"img{i:06d}" for i in range(len(run.targets))]
    run.model.train()
    opt, sched = run.optimiser()
    amp = run.dev.type == "cuda"
    with tempfile.TemporaryDirectory(prefix="wps-sam-bench-") as tmp:
        cache = EmbeddingCache(tmp)

        def build() -> None:
            cache.build(keys, lambda i: run.pool[i % len(run.pool)], runner, run.batch_size, progress=False)
            cache.make_resident(keys, run.dev)

        build_s = timed(run.dev, build)

        def step(k: int) -> None:
            idx = run.batch(k)
            batch = {
                "embeddings": cache.get([keys[i] for i in idx], device=run.dev),
                "targets": [dict(run.targets[i]) for i in idx],
            }
            train_step(run.model, run.criterion, batch, opt, sched, run.dev, amp=amp)

        for k in range(run.warmup):
            step(k)
        step_s = timed(run.dev, lambda: [step(run.warmup + k) for k in range(run.measured)]) / run.measured
        done = min(run.total_steps, run.warmup + run.measured)
        full = step_s * (run.total_steps - done) <= full_run_budget_s
        if full:  # the warm-up steps count at the measured pace
            loop_s = step_s * done + timed(run.dev, lambda: [step(k) for k in range(done, run.total_steps)])
        else:
            loop_s = step_s * run.total_steps
        cache.release()
    return {
        "cache_build_s": build_s,
        "our_step_s": step_s,
        "train_loop_s": loop_s,
        "train_measured_steps": run.total_steps if full else run.measured,
        "train_extrapolated": not full,
        "ours_total_s": build_s + loop_s,
    }


def setup_run(
    dev: torch.device,
    sam_type: str,
    images: int,
    epochs: int,
    batch_size: int,
    quick: bool,
    prompter: PrompterConfig | None,
    seed: int,
) -> tuple[TrainingRun, Config, torch.Generator]:
    """The benchmark's model (random SAM weights, official-scale rel-pos), targets and input pool,
    and the generator that drew them (the prediction benchmark draws on from it)."""
    from ..build import build_training_criterion, build_wps_sam
    from ..sam.backbones import build_sam

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "random weights: tests only"
        sam = build_sam(sam_type, "random")
    with torch.no_grad():
        for name, p in sam.image_encoder.named_parameters():
            if "rel_pos" in name:
                p.normal_(0.0, REL_POS_STD, generator=gen)
    size = sam.image_encoder.img_size
    cfg = Config(
        sam=SamConfig(sam_type, "random"),
        prompter=prompter or PrompterConfig(),
        data=DataConfig(supervision="box"),
    )
    model = build_wps_sam(cfg, NUM_CLASSES, sam).to(dev)
    steps_per_epoch = math.ceil(images / batch_size)
    run = TrainingRun(
        model=model,
        criterion=build_training_criterion(cfg, NUM_CLASSES),
        targets=random_targets(images, size, gen),
        # A pool of preprocessed inputs: distinct images would cost memory, not time.
        pool=torch.randn(min(images, 2 * batch_size), 3, size, size, generator=gen),
        dev=dev,
        batch_size=batch_size,
        total_steps=epochs * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        warmup=1 if quick else 2,
        measured=1 if quick else 5,
        start={k: v.clone() for k, v in model.prompter.state_dict().items()},
    )
    return run, cfg, gen
