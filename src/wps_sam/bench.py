"""``wps-sam bench``: training and inference throughput of WPS-SAM against the official recipe.

On the current device, in one run and with the same random weights:

* **train**: a whole K-epoch run over N images, (a) the reference, which follows the official
  WPS-SAM recipe: SAM's image encoder (segment-anything's attention, float32 in PyTorch's default
  precision: float32 matmuls, TF32 cuDNN convolutions; ``reference_tf32`` allows TF32 matmuls) in
  every step, then a per-image Python loop for the teacher tokens, the matching and the loss; and
  (b) ours: build the embedding cache once (fast encoder, bf16 on CUDA, written to disk and made
  resident), then K epochs of :func:`~wps_sam.engine.loop.train_step` reading it. The reference is
  timed for a few steps and extrapolated (``reference_measured_steps``); ours runs in full when that
  takes at most ``full_run_budget_s`` and is extrapolated otherwise (``train_measured_steps``).
  Images arrive preprocessed in both (a data loader's workers hide that cost in real runs).
* **encoder**: images/s of the fast encoder (batch ``batch_size``; bf16 and ``torch.compile`` on
  CUDA, warm-up excluded) and its relative error against the official float32 encoder (TF32 off).
* **predict**: images/s end to end through :class:`~wps_sam.predictor.PartPredictor`: uint8 images
  resized and normalised (4 threads, one batch ahead), encoder, prompter, mask decoder and the
  masks, label map and instances in each image's own frame.

Weights are random (``"weights": "random"``): speed does not depend on them; the relative-position
tables, zero at SAM's initialisation, are drawn with std ``REL_POS_STD`` so that the bias counts in
the error. The result goes to ``out_dir/<device>-<YYYY-MM-DD>.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import math
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .atomic import atomic_write_json
from .config import Config, DataConfig, PrompterConfig, SamConfig

logger = logging.getLogger(__name__)

NUM_CLASSES = 40  # PartImageNet's part classes
REL_POS_STD = 0.1
PREDICT_IMAGE_SIZE = (480, 640)  # (H, W): ImageNet-like photos
RESULT_KEYS = (
    "device",
    "train_speedup",
    "reference_train_img_s",
    "train_img_s",
    "encoder_img_s",
    "encoder_rel_err",
    "predict_img_s",
    "peak_mem_gb",
)


def device_name(device: torch.device) -> str:
    """``nvidia-h100-80gb-hbm3``-style name of the device (``cpu`` for the CPU)."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mean_ms(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    """Milliseconds per call of ``fn`` (a CPU function) over ``repeats`` calls, after ``warmup`` untimed."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def _timed(device: torch.device, fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` takes, the device's queue drained before and after."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


@contextlib.contextmanager
def _fp32_precision(dev: torch.device, matmul_tf32: bool, cudnn_tf32: bool) -> Iterator[None]:
    """On CUDA, TF32 for float32 matmuls and cuDNN convolutions on or off (PyTorch's defaults: off, on).

    A no-op on the CPU, where a lower matmul precision would let oneDNN use bf16 kernels.
    """
    if dev.type != "cuda":
        yield
        return
    old = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high" if matmul_tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = cudnn_tf32
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old[0])
        torch.backends.cudnn.allow_tf32 = old[1]


def _targets(n: int, size: int, gen: torch.Generator) -> list[dict[str, Tensor]]:
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


def _reference_step(model, criterion, optimizer, scheduler, images: Tensor, targets: list[dict]) -> None:
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
class _Run:
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
        from .engine.schedule import adamw, warmup_cosine

        self.model.prompter.load_state_dict(self.start)  # the same start for both loops
        opt = adamw(self.model.prompter.parameters(), 1e-4, 1e-4)  # the trainer's optimiser
        return opt, warmup_cosine(opt, min(250, self.total_steps // 10), self.total_steps)

    def batch(self, step: int) -> list[int]:
        """Image indices of global step ``step``: a fresh permutation every epoch, as the trainer."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = torch.randperm(len(self.targets), generator=torch.Generator().manual_seed(epoch))
        return order[position * self.batch_size :][: self.batch_size].tolist()


def _measure_reference(run: _Run, tf32: bool) -> dict[str, float]:
    """(a) SAM's own encoder in float32 in every step, then the per-image loop."""
    from .sam.encoder import restore_encoder

    restore_encoder(run.model.image_encoder)
    run.model.train()
    opt, sched = run.optimiser()
    inputs = run.pool.to(run.dev)

    def step(k: int) -> None:
        idx = run.batch(k)
        targets = [{name: v.to(run.dev) for name, v in run.targets[i].items()} for i in idx]
        _reference_step(run.model, run.criterion, opt, sched, inputs[: len(idx)], targets)

    with _fp32_precision(run.dev, matmul_tf32=tf32, cudnn_tf32=True):
        for k in range(run.warmup):
            step(k)
        step_s = _timed(run.dev, lambda: [step(run.warmup + k) for k in range(run.measured)]) / run.measured
    return {
        "reference_step_s": step_s,
        "reference_measured_steps": run.measured,
        "reference_total_s": step_s * run.total_steps,
    }


def _measure_ours(run: _Run, runner: Any, full_run_budget_s: float) -> dict[str, Any]:
    """(b) The cache built once (timed in full, disk and residency included), then K epochs of train_step."""
    from .cache import EmbeddingCache
    from .engine.loop import train_step

    keys = [f"img{i:06d}" for i in range(len(run.targets))]
    run.model.train()
    opt, sched = run.optimiser()
    amp = run.dev.type == "cuda"
    with tempfile.TemporaryDirectory(prefix="wps-sam-bench-") as tmp:
        cache = EmbeddingCache(tmp)

        def build() -> None:
            cache.build(keys, lambda i: run.pool[i % len(run.pool)], runner, run.batch_size, progress=False)
            cache.make_resident(keys, run.dev)

        build_s = _timed(run.dev, build)

        def step(k: int) -> None:
            idx = run.batch(k)
            batch = {
                "embeddings": cache.get([keys[i] for i in idx], device=run.dev),
                "targets": [dict(run.targets[i]) for i in idx],
            }
            train_step(run.model, run.criterion, batch, opt, sched, run.dev, amp=amp)

        for k in range(run.warmup):
            step(k)
        step_s = _timed(run.dev, lambda: [step(run.warmup + k) for k in range(run.measured)]) / run.measured
        done = min(run.total_steps, run.warmup + run.measured)
        full = step_s * (run.total_steps - done) <= full_run_budget_s
        if full:  # the warm-up steps count at the measured pace
            loop_s = step_s * done + _timed(run.dev, lambda: [step(k) for k in range(done, run.total_steps)])
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


def _setup(
    dev: torch.device,
    sam_type: str,
    images: int,
    epochs: int,
    batch_size: int,
    quick: bool,
    prompter: PrompterConfig | None,
    seed: int,
) -> tuple[_Run, Config, torch.Generator]:
    """The benchmark's model (random SAM weights, official-scale rel-pos), targets and input pool,
    and the generator that drew them (the prediction benchmark draws on from it)."""
    from .build import build_training_criterion, build_wps_sam
    from .sam.backbones import build_sam

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
    run = _Run(
        model=model,
        criterion=build_training_criterion(cfg, NUM_CLASSES),
        targets=_targets(images, size, gen),
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


def _settings(
    run: _Run,
    cfg: Config,
    images: int,
    epochs: int,
    quick: bool,
    seed: int,
    reference_tf32: bool,
    runner: Any,
    compile: bool,
) -> dict[str, Any]:
    """What a benchmark result was measured with."""
    batch_size, dev = run.batch_size, run.dev
    return {
        "sam_type": cfg.sam.type,
        "images": images,
        "epochs": epochs,
        "batch_size": batch_size,
        "weights": "random",
        "rel_pos_std": REL_POS_STD,
        "num_classes": NUM_CLASSES,
        "prompter": dataclasses.asdict(cfg.prompter),
        "quick": quick,
        "seed": seed,
        "reference": "segment-anything attention, float32 "
        f"({'TF32' if reference_tf32 else 'float32'} matmuls, TF32 cuDNN convolutions), per-image loop",
        "ours": f"cache built once ({runner.precision}, eager), train_step with amp={dev.type == 'cuda'}",
        "encoder": f"{runner.precision}, compile={compile}, batch {batch_size}",
        "predict": f"PartPredictor, {PREDICT_IMAGE_SIZE[0]}x{PREDICT_IMAGE_SIZE[1]} uint8 images, "
        f"encoder {runner.precision}, compile={compile}",
    }


def run_benchmark(
    device: str = "cuda",
    sam_type: str = "vit_b",
    images: int = 256,
    epochs: int = 20,
    batch_size: int = 8,
    out_dir: str | Path | None = Path("benchmarks/results"),
    quick: bool = False,
    compile: bool | None = None,
    prompter: PrompterConfig | None = None,
    full_run_budget_s: float = 300.0,
    reference_tf32: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure everything the module docstring lists; write and return the result.

    Args:
        device: ``cuda``, ``cuda:N`` or ``cpu`` (the CPU mode: use ``sam_type="vit_mini"``, small N, K).
        sam_type: SAM variant (random weights).
        images, epochs, batch_size: N, K and the batch size of the training comparison.
        out_dir: where the json goes; ``None`` writes nothing.
        quick: time fewer steps and iterations (smoke runs, the CPU test).
        compile: ``torch.compile`` the encoder for ``encoder_img_s`` and prediction (default: on CUDA).
        prompter: the prompter's configuration (default: the paper's).
        full_run_budget_s: run our whole K-epoch loop when it is estimated to take at most this.
        reference_tf32: let the reference's float32 matmuls use TF32. The official code leaves
            PyTorch's default (float32 matmuls, TF32 convolutions), which the reference follows.
    """
    from .sam.encoder import EncoderRunner

    dev = torch.device(device)
    compile = dev.type == "cuda" if compile is None else compile
    run, cfg, gen = _setup(dev, sam_type, images, epochs, batch_size, quick, prompter, seed)
    model = run.model

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    details: dict[str, Any] = _measure_reference(run, reference_tf32)
    if dev.type == "cuda":  # peak_mem_gb is ours: cache, training, encoder and prediction
        details["reference_peak_mem_gb"] = torch.cuda.max_memory_allocated(dev) / 1e9
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    runner = EncoderRunner(model.image_encoder)  # accelerates in place; eager for the cache build
    details.update(_measure_ours(run, runner, full_run_budget_s))
    encoder = _measure_encoder(model.image_encoder, run.pool[:batch_size].to(dev), dev, compile, quick)
    if encoder["module"] is not None:  # the predictor runs the same compiled module
        model.image_encoder = encoder["module"]
    predict_img_s = _measure_predict(model, cfg, dev, batch_size, quick, gen)
    details.update(encoder_img_s_eager=encoder["img_s_eager"], compile_s=encoder["compile_s"])

    reference_s, ours_s = details["reference_total_s"], details["ours_total_s"]
    result: dict[str, Any] = {
        "device": device_name(dev),
        "train_speedup": reference_s / ours_s,
        "reference_train_img_s": epochs * images / reference_s,
        "train_img_s": epochs * images / ours_s,
        "encoder_img_s": encoder["img_s"],
        "encoder_rel_err": encoder["rel_err"],
        "predict_img_s": predict_img_s,
        "peak_mem_gb": torch.cuda.max_memory_allocated(dev) / 1e9 if dev.type == "cuda" else None,
        "settings": _settings(run, cfg, images, epochs, quick, seed, reference_tf32, runner, compile),
        "details": details,
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }
    if out_dir is not None:
        path = Path(out_dir) / f"{result['device']}-{sam_type}-{result['date']}.json"
        atomic_write_json(path, result)
        result["path"] = str(path)
        logger.info("wrote %s", path)
    return result


def _measure_encoder(encoder, batch: Tensor, dev: torch.device, compile: bool, quick: bool) -> dict[str, Any]:
    """Fast-encoder images/s (eager and, if asked, compiled) and its error against official float32."""
    from .sam.encoder import EncoderRunner, relative_error, restore_encoder

    iters = 1 if quick else 10
    restore_encoder(encoder)
    with _fp32_precision(dev, matmul_tf32=False, cudnn_tf32=False), torch.no_grad():
        expected = encoder(batch)
    eager = EncoderRunner(encoder)
    out = eager(batch)
    eager_s = _timed(dev, lambda: [eager(batch) for _ in range(iters)])
    result = {
        "rel_err": relative_error(out, expected),
        "img_s_eager": iters * len(batch) / eager_s,
        "compile_s": None,
        "module": None,
    }
    result["img_s"] = result["img_s_eager"]
    if compile:
        compiled = EncoderRunner(encoder, compile=True)
        result["compile_s"] = _timed(dev, lambda: [compiled(batch) for _ in range(2)])
        result["rel_err"] = relative_error(compiled(batch), expected)
        result["img_s"] = iters * len(batch) / _timed(dev, lambda: [compiled(batch) for _ in range(iters)])
        result["module"] = compiled.module
    return result


def _measure_predict(
    model, cfg: Config, dev: torch.device, batch_size: int, quick: bool, gen: torch.Generator
) -> float:
    """Images/s of PartPredictor end to end, with preprocessing one batch ahead in 4 threads."""
    from .predictor import PartPredictor

    predictor = PartPredictor(model, [f"part{i}" for i in range(NUM_CLASSES)], cfg, dev)
    rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen)))
    photos = [rng.integers(0, 256, (*PREDICT_IMAGE_SIZE, 3), dtype=np.uint8) for _ in range(batch_size)]
    batches = 2 if quick else 10

    sizes = [p.shape[:2] for p in photos]
    # One thread prepares the next batch while the GPU works on this one; four resize its images.
    with ThreadPoolExecutor(max_workers=1) as ahead_pool, ThreadPoolExecutor(max_workers=4) as resize_pool:

        def prepare() -> Future:
            return ahead_pool.submit(
                lambda: torch.stack(list(resize_pool.map(predictor.transform.apply_image, photos)))
            )

        predictor.predict_torch(prepare().result(), sizes)  # warm-up

        def run() -> None:
            ahead = prepare()
            for b in range(batches):
                inputs = ahead.result()
                if b + 1 < batches:
                    ahead = prepare()
                predictor.predict_torch(inputs, sizes)

        seconds = _timed(dev, run)
    return batches * batch_size / seconds


def format_ratios(results: list[dict[str, Any]]) -> str:
    """Each result against the first, measured side by side: encoder images/s and whole-run time."""
    if len(results) < 2:
        return ""
    base = results[0]
    lines = []
    for r in results[1:]:
        encoder = r["encoder_img_s"] / base["encoder_img_s"]
        run = base["details"]["ours_total_s"] / r["details"]["ours_total_s"]
        lines.append(
            f"{r['settings']['sam_type']} vs {base['settings']['sam_type']}: encoder {encoder:.1f}x the images/s, "
            f"training run {run:.1f}x as fast (ours, {r['settings']['images']} x {r['settings']['epochs']})"
        )
    return "\n".join(lines)


def format_table(results: list[dict[str, Any]]) -> str:
    """A markdown table of benchmark results (BENCHMARKS.md)."""
    head = (
        "| device | SAM | N x K | train speedup | reference img/s | ours img/s | encoder img/s | "
        "encoder rel err | predict img/s | peak GPU GB |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in results:
        s = r["settings"]
        mem = "-" if r["peak_mem_gb"] is None else f"{r['peak_mem_gb']:.1f}"
        lines.append(
            f"| {r['device']} | {s['sam_type']} | {s['images']} x {s['epochs']} | "
            f"{r['train_speedup']:.1f}x | {r['reference_train_img_s']:.1f} | {r['train_img_s']:.1f} | "
            f"{r['encoder_img_s']:.1f} | {r['encoder_rel_err']:.1e} | {r['predict_img_s']:.1f} | {mem} |"
        )
    return "\n".join(lines)
