"""Pre-training of the tiny SAM foundation model, exactly resumable.

Every step trains the whole tiny SAM on two things at once, through one encoder pass:

* **promptable segmentation** of generic synthetic shapes with class-agnostic masks
  (:mod:`.objective`; the SA-1B stage of real SAM), at 128 px for the first ``low_res_steps`` and at
  256 px after (:mod:`.data`);
* **what objects look like**: image-level object labels of ToyParts-world images from a split of
  their own (:mod:`.knowledge`; the ImageNet pre-training of real SAM's encoder), through a head
  that is left behind.

The model never sees a part label, a part box or a part mask. From scratch, the decoder's attention
is tied and warmed up first (:mod:`.warmup`). bf16 autocast runs the matmuls and convolutions on a GPU
and on CPUs with bf16 units (about twice as fast there; elsewhere bf16 is emulated, ~10x slower than
float32, so such a CPU trains in float32: :func:`autocast_dtype`); losses are in float32. The model
trains on the CPU or on a CUDA GPU (``device``); the batches are drawn on the CPU either way, so a
run is the same data stream on both and can move between them at a resume.

The weights (``sam_tiny.safetensors``, float16, segment-anything's ``Sam`` key layout) and the resume
state are written atomically every few minutes; a batch depends only on its step, so a killed run
resumes exactly where it stopped and a time-budgeted run can be continued later with a larger budget.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import Sam
from torch.utils.data import DataLoader

from ..atomic import atomic_torch_save, atomic_write, atomic_write_text
from ..sam.conv_encoder import EMBED_STRIDE
from ..synthetic.scenes import SyntheticShapes
from .data import BatchConfig, PretrainBatches
from .evaluation import evaluate_prompted_miou
from .knowledge import ObjectClassifierHead, knowledge_terms
from .objective import MaskLossWeights, MaskRecipe, images_to_input, mask_objective, prompt_frame
from .warmup import localisation_warmup, tie_decoder_attention

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "sam_tiny.safetensors"
STATE_NAME = "pretrain_state.pt"
LOG_NAME = "pretrain_log.jsonl"
HELD_OUT_SEED_OFFSET = 1_000_003  # held-out generic scenes: another seed, never trained on


@dataclass(frozen=True)
class PretrainConfig:
    """Numbers of one pre-training run."""

    batches: BatchConfig = field(default_factory=BatchConfig)
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    final_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    mask_weights: MaskLossWeights = field(default_factory=MaskLossWeights)
    mask_recipe: MaskRecipe = field(default_factory=MaskRecipe)  # multimask, correction clicks
    object_weight: float = 1.0  # weight of the object-label BCE beside the mask losses
    bf16: bool = True  # bf16 autocast where it pays (autocast_dtype)
    loader_workers: int = 1  # processes drawing batches ahead of the model
    log_every: int = 50
    eval_every: int = 500
    eval_images: int = 32
    eval_masks_per_image: int = 8
    checkpoint_every_s: float = 300.0
    # A wall-clock budget: the schedule follows max(step / steps, time / budget) and training stops
    # when either runs out, so the learning rate has decayed by the deadline.
    time_budget_s: float | None = None
    tied_attention_init: bool = True
    box_warmup_steps: int = 150
    # The model (from scratch): "conv", the tiny SAM's encoder, with an embedding of stride
    # embed_stride (8: the tiny SAM; 16: a coarser grid), or "vit_mini", the official ViT structure
    # scaled down (16x16 embedding). Anything but the default is an ablation (benchmarks/pretrain_levers.py).
    encoder: str = "conv"
    embed_stride: int = EMBED_STRIDE


def autocast_dtype(bf16: bool, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the training steps, ``None`` for float32: bf16 when ``bf16`` is asked
    for and ``device`` computes it natively (a GPU, or a CPU with AVX512-BF16 or AMX)."""
    from ..engine.device import computes_bf16_natively

    return torch.bfloat16 if bf16 and computes_bf16_natively(device) else None


def lr_at(step: int, cfg: PretrainConfig, progress: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``final_lr_ratio * lr`` by ``progress`` 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    warm = cfg.warmup_steps / cfg.batches.steps
    t = min(max((progress - warm) / max(1e-9, 1 - warm), 0.0), 1.0)
    return cfg.lr * (cfg.final_lr_ratio + (1 - cfg.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def new_sam(cfg: PretrainConfig, init: str | None = None) -> Sam:
    """The SAM to pre-train, in training mode: ``cfg``'s architecture with random weights, or the tiny
    SAM's weights from ``init``."""
    from ..sam.backbones import build_sam, tiny_sam_architecture

    default = cfg.encoder == "conv" and cfg.embed_stride == EMBED_STRIDE
    if init is not None:
        if not default:
            raise ValueError("--init loads tiny SAM weights: it takes the default encoder only")
        return build_sam("tiny", checkpoint=init, frozen=False).train()
    if cfg.encoder == "conv":
        return tiny_sam_architecture(cfg.embed_stride).train()
    if cfg.encoder == "vit_mini":
        return build_sam("vit_mini", checkpoint="random", frozen=False).train()
    raise ValueError(f"unknown encoder {cfg.encoder!r}: 'conv' or 'vit_mini'")


def save_weights(sam: Sam, path: str | Path) -> Path:
    """Write SAM's state dict as float16 safetensors (official key layout), atomically."""
    from safetensors.torch import save

    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in sam.state_dict().items()}
    data = save(state, metadata={"format": "pt", "model": "wps-sam tiny SAM"})
    return atomic_write(path, lambda f: f.write(data))


class _Run:
    """The state of one pre-training run in ``out``: model, head, optimiser, log; saving and resuming."""

    def __init__(self, out: Path, cfg: PretrainConfig, init: str | None, device: torch.device) -> None:
        self.out, self.cfg, self.device = out, cfg, device
        self.autocast = autocast_dtype(cfg.bf16, device)  # None: float32
        torch.manual_seed(cfg.batches.seed)  # the initial weights
        self.sam = new_sam(cfg, init).to(device)
        self.stride = self.sam.image_encoder.img_size // self.sam.prompt_encoder.image_embedding_size[0]
        names = PretrainBatches(cfg.batches).objects.names
        self.head = ObjectClassifierHead(self.sam.prompt_encoder.embed_dim, len(names)).to(device)
        params = [*self.sam.parameters(), *self.head.parameters()]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
            ],
            lr=cfg.lr,
        )
        self.step, self.rows, self.elapsed_before = 0, [], 0.0
        self.started = time.time()
        state_path = out / STATE_NAME
        if state_path.is_file():
            state = torch.load(state_path, map_location=device, weights_only=True)
            self.sam.load_state_dict(state["model"])
            self.head.load_state_dict(state["head"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step, self.rows, self.elapsed_before = (
                state["step"],
                json.loads(state["log"]),
                state["elapsed_s"],
            )
            logger.info("resuming from %s at step %d", state_path, self.step)
        elif init is None:
            self._warm_start()

    def _warm_start(self) -> None:
        if self.cfg.tied_attention_init:
            tie_decoder_attention(self.sam)
        t = time.time()
        scenes = [SyntheticShapes(seed=self.cfg.batches.seed + 2_000_003)[i][0] for i in range(4)]
        ious = localisation_warmup(self.sam, scenes, self.cfg.box_warmup_steps, self.cfg.batches.seed)
        if ious:
            self.rows.append(
                {
                    "step": 0,
                    "box_warmup_steps": len(ious),
                    "box_warmup_final_iou": round(float(np.mean(ious[-10:])), 4),
                    "box_warmup_s": round(time.time() - t, 1),
                }
            )

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def save(self) -> None:
        save_weights(self.sam, self.out / WEIGHTS_NAME)
        state = {
            "model": self.sam.state_dict(),
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "log": json.dumps(self.rows),
            "elapsed_s": self.elapsed,
            "config": json.dumps(asdict(self.cfg)),
        }
        atomic_torch_save(self.out / STATE_NAME, state)
        atomic_write_text(self.out / LOG_NAME, "".join(json.dumps(r) + "\n" for r in self.rows))


def _train_step(run: _Run, batch: dict[str, torch.Tensor], lr: float) -> dict[str, float]:
    cfg, sam = run.cfg, run.sam
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    batch = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}
    size = batch["images"].shape[1]
    images = torch.cat([batch["images"], batch["object_images"]])
    num_scenes = len(batch["images"])
    amp = torch.autocast(run.device.type, dtype=run.autocast) if run.autocast else contextlib.nullcontext()
    with amp, prompt_frame(sam.prompt_encoder, size, size // run.stride):
        embeddings = sam.image_encoder(images_to_input(sam, images))
        terms = mask_objective(sam, embeddings[:num_scenes], batch, cfg.mask_weights, cfg.mask_recipe)
        loss = terms["loss"]
        if len(batch["object_images"]):
            terms |= knowledge_terms(run.head, embeddings[num_scenes:], batch["object_labels"])
            loss = loss + cfg.object_weight * terms["loss_objects"]
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(sam.parameters(), cfg.grad_clip)
    run.optimizer.step()
    return {k: float(v.detach()) for k, v in terms.items()} | {"grad_norm": float(grad_norm), "res": size}


def _evaluate(run: _Run, held_out: list) -> dict:
    res = evaluate_prompted_miou(
        run.sam, [i for i, _ in held_out], [m for _, m in held_out], run.cfg.eval_masks_per_image
    )
    return {
        "step": run.step,
        "eval_box_miou": round(res["box_miou"], 4),
        "eval_point_miou": round(res["point_miou"], 4),
        "eval_masks": res["n_masks"],
    }


def _summary(run: _Run, window: list[dict], lr: float) -> dict:
    row = {"step": run.step, "lr": round(lr, 7), "elapsed_s": round(run.elapsed, 1)}
    keys = {k for w in window for k in w}
    return row | {k: round(float(np.mean([w[k] for w in window if k in w])), 4) for k in sorted(keys)}


def pretrain_tiny_sam(
    out: str | Path,
    cfg: PretrainConfig,
    init: str | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> Path:
    """Train the tiny SAM from scratch (or from ``init`` weights) as ``cfg`` says, on ``device``
    (``"cpu"``, ``"cuda"``, ...); resume from ``out``.

    Writes ``out/sam_tiny.safetensors`` (loadable by ``build_sam("tiny", checkpoint=...)``),
    ``out/pretrain_log.jsonl`` (training terms every ``log_every`` steps, held-out box/point mIoU of
    generic scenes every ``eval_every`` steps) and ``out/pretrain_state.pt`` (resume state).
    Returns the weights' path.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(out, cfg, init, torch.device(device))
    steps = cfg.batches.steps
    held_out = [
        SyntheticShapes(seed=cfg.batches.seed + HELD_OUT_SEED_OFFSET)[i] for i in range(cfg.eval_images)
    ]
    loader = DataLoader(
        PretrainBatches(cfg.batches),
        batch_size=None,
        sampler=range(run.step, steps),
        num_workers=cfg.loader_workers,
        prefetch_factor=2 if cfg.loader_workers else None,
        persistent_workers=False,
        pin_memory=run.device.type == "cuda",
    )
    last_save, window, lr = time.time(), [], cfg.lr
    for batch in loader:
        done = max(run.step / steps, run.elapsed / cfg.time_budget_s if cfg.time_budget_s else 0.0)
        if done >= 1.0:
            logger.info("time budget of %.0f s spent at step %d", cfg.time_budget_s, run.step)
            run.rows.append({"step": run.step, "stopped": "time budget"})
            break
        lr = lr_at(run.step, cfg, done)
        t = time.time()
        window.append(_train_step(run, batch, lr) | {"sec": time.time() - t})
        run.step += 1
        if run.step % cfg.log_every == 0 or run.step == steps:
            run.rows.append(_summary(run, window, lr))
            window = []
            if progress:
                logger.info("step %d/%d %s", run.step, steps, json.dumps(run.rows[-1]))
        if run.step % cfg.eval_every == 0 or run.step == steps:
            run.rows.append(_evaluate(run, held_out))
            run.sam.train()
            if progress:
                logger.info("step %d held-out %s", run.step, json.dumps(run.rows[-1]))
        if time.time() - last_save > cfg.checkpoint_every_s:
            run.save()
            last_save = time.time()
    if not run.rows or "eval_box_miou" not in run.rows[-1]:
        run.rows.append(_evaluate(run, held_out))
    run.save()
    run.sam.eval()
    return out / WEIGHTS_NAME
