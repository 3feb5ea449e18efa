"""Pre-training of the tiny SAM foundation model on synthetic shapes (class-agnostic, promptable).

One step, as in SAM's own training (Kirillov et al. 2023, §3 and appendix A): B synthetic scenes are
encoded once each; P target masks per scene are prompted either by their box (jittered by ~10% of the
side, at most 20 px; single-mask output) or by random points (one positive point: the three ambiguity
masks, of which only the lowest loss back-propagates; 2-3 points with negatives: single-mask output).
Loss = 20 focal + 1 dice on the 64x64 low-resolution logits against the area-downsampled target, plus
the MSE between the IoU head and the IoU of each thresholded mask. Iterative correction clicks are left
out: the WPS-SAM demo prompts with one box or one point, and each click would double the decoder cost.

The weights (``sam_tiny.safetensors``, float16) and the resume state are written atomically every few
minutes, so that a killed run loses little and resumes where it stopped.

Frames: every prompt is in the 256 px input frame, SAM's convention (segment-anything's predictor):
points are pixel indices (X, Y) and boxes XYXY with inclusive maxima; the prompt encoder adds 0.5.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

from ..atomic import atomic_torch_save, atomic_write, atomic_write_text
from .losses import dice_loss, mask_iou, sigmoid_focal_loss
from .shapes import ShapesConfig, SyntheticShapes

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "sam_tiny.safetensors"
STATE_NAME = "pretrain_state.pt"
LOG_NAME = "pretrain_log.jsonl"


@dataclass(frozen=True)
class PretrainConfig:
    """Numbers of one pre-training run (pixels in the 256 px input frame)."""

    steps: int = 2000
    batch_size: int = 8
    prompts_per_image: int = 8
    lr: float = 8e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    final_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    p_box: float = 0.5  # share of prompts that are boxes; the rest are points
    p_multi_point: float = 0.25  # steps whose point prompts have 2-3 points (with negatives)
    box_noise: float = 0.1  # std of the box jitter, as a share of the box side
    box_noise_max: float = 20.0
    seed: int = 0
    log_every: int = 50
    eval_every: int = 250
    eval_images: int = 32
    eval_masks_per_image: int = 8
    checkpoint_every_s: float = 180.0
    # On a shared machine, a wall-clock budget: the schedule follows max(step / steps, time / budget)
    # and training stops when either runs out, so the learning rate has decayed by the deadline.
    time_budget_s: float | None = None
    # From scratch, start the decoder's cross-attentions with tied query/key projections (see
    # ``tie_decoder_attention``), so that positional encodings attend to nearby positions at once.
    tied_attention_init: bool = True
    # From scratch, first teach the prompt encoder and mask decoder "the mask is the box" on frozen
    # embeddings of a few scenes (cheap: no encoder pass); see ``localisation_warmup``.
    box_warmup_steps: int = 150


def predict_masks_batched(
    sam: Sam, image_embeddings: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's ``MaskDecoder.predict_masks`` with one image embedding per prompt, for prompts of many images.

    Args:
        image_embeddings: [N, 256, h, w], the embedding of each prompt's image.
        sparse: [N, T, 256] sparse prompt embeddings; dense: [N, 256, h, w].

    Returns:
        All four masks' low-resolution logits [N, 4, 4h, 4w] and IoU predictions [N, 4]
        (index 0 is the single-mask output, 1-3 the multimask outputs).
    """
    dec = sam.mask_decoder
    n = sparse.shape[0]
    output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(n, -1, -1), sparse), dim=1)
    src = image_embeddings + dense
    pos_src = sam.prompt_encoder.get_dense_pe().expand(n, -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = dec.transformer(src, pos_src, tokens)
    iou_token_out, mask_tokens_out = hs[:, 0, :], hs[:, 1 : 1 + dec.num_mask_tokens, :]
    upscaled = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1
    )
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    return masks, dec.iou_prediction_head(iou_token_out)


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight XYXY box of a bool mask [H, W], inclusive maxima (SAM's ``batched_mask_to_box``)."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def sample_prompts(
    rng: np.random.Generator, masks: np.ndarray, n: int, cfg: PretrainConfig, n_points: int
) -> dict[str, np.ndarray]:
    """Pick ``n`` targets of one scene and prompt each by a jittered box or by points.

    Args:
        masks: bool [M, S, S] targets.
        n_points: points per point prompt this step (1: positive only; 2-3: extra positive or
            negative points).

    Returns:
        ``target`` int [n] (index into masks), ``is_box`` bool [n], ``box`` float [n, 4] (XYXY),
        ``coords`` float [n, n_points, 2] (X, Y), ``labels`` int [n, n_points] (1 positive, 0 negative).
    """
    size = masks.shape[-1]
    target = rng.choice(len(masks), n, replace=len(masks) < n)
    is_box = rng.random(n) < cfg.p_box
    box = np.zeros((n, 4), np.float32)
    coords = np.zeros((n, n_points, 2), np.float32)
    labels = np.ones((n, n_points), np.int64)
    for j, t in enumerate(target):
        m = masks[t]
        tight = mask_box(m)
        side = np.repeat(tight[2:] - tight[:2] + 1, 2)[[0, 2, 1, 3]]  # (w, h, w, h)
        noise = np.clip(rng.normal(0, cfg.box_noise * side), -cfg.box_noise_max, cfg.box_noise_max)
        box[j] = np.clip(tight + noise, 0, size - 1)
        ys, xs = np.nonzero(m)
        i = rng.integers(len(xs))
        coords[j, 0] = xs[i], ys[i]
        for k in range(1, n_points):
            if rng.random() < 0.5:
                i = rng.integers(len(xs))
                coords[j, k] = xs[i], ys[i]
            else:  # a negative point just outside the mask, near its box
                x0, y0, x1, y1 = (tight + np.array([-10, -10, 10, 10])).clip(0, size - 1).astype(int)
                oy, ox = np.nonzero(~m[y0 : y1 + 1, x0 : x1 + 1])
                if len(ox) == 0:
                    oy, ox = np.nonzero(~m)
                    y0 = x0 = 0
                if len(ox):
                    i = rng.integers(len(ox))
                    coords[j, k], labels[j, k] = (ox[i] + x0, oy[i] + y0), 0
                else:
                    coords[j, k] = coords[j, 0]
    return {"target": target, "is_box": is_box, "box": box, "coords": coords, "labels": labels}


def _images_to_input(sam: Sam, images: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 [S, S, 3] images -> SAM's normalised input [B, 3, S, S]."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return sam.preprocess(x)


class _Step:
    """Loss of one batch of scenes, as named terms (SAM's criterion)."""

    def __init__(self, sam: Sam, cfg: PretrainConfig):
        self.sam, self.cfg = sam, cfg

    def _mask_loss(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        focal, dice = sigmoid_focal_loss(logits, target), dice_loss(logits, target)
        return {
            "focal": focal,
            "dice": dice,
            "total": self.cfg.focal_weight * focal + self.cfg.dice_weight * dice,
        }

    def __call__(self, scenes: list[tuple[np.ndarray, np.ndarray]], step: int) -> dict[str, torch.Tensor]:
        cfg, sam = self.cfg, self.sam
        rng = np.random.default_rng((cfg.seed, step, 1))
        n_points = 1 if rng.random() >= cfg.p_multi_point else int(rng.integers(2, 4))
        prompts = [sample_prompts(rng, masks, cfg.prompts_per_image, cfg, n_points) for _, masks in scenes]
        targets = torch.cat(
            [torch.from_numpy(masks[p["target"]]) for (_, masks), p in zip(scenes, prompts)]
        ).float()
        low_targets = F.avg_pool2d(targets[:, None], 4)[:, 0]  # [N, 64, 64] soft
        img_index = torch.arange(len(scenes)).repeat_interleave(cfg.prompts_per_image)
        is_box = torch.from_numpy(np.concatenate([p["is_box"] for p in prompts]))

        embeddings = sam.image_encoder(_images_to_input(sam, [img for img, _ in scenes]))
        terms: dict[str, list[torch.Tensor]] = {k: [] for k in ("total", "focal", "dice", "iou")}
        stats: dict[str, torch.Tensor] = {}
        for group in ("box", "point"):
            sel = is_box if group == "box" else ~is_box
            if not sel.any():
                continue
            if group == "box":
                boxes = torch.from_numpy(np.concatenate([p["box"] for p in prompts]))[sel]
                sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
            else:
                coords = torch.from_numpy(np.concatenate([p["coords"] for p in prompts]))[sel]
                labels = torch.from_numpy(np.concatenate([p["labels"] for p in prompts]))[sel]
                sparse, dense = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
            logits, iou_pred = predict_masks_batched(sam, embeddings[img_index[sel]], sparse, dense)
            tgt = low_targets[sel]
            multimask = group == "point" and n_points == 1
            outs = slice(1, 4) if multimask else slice(0, 1)
            logits, iou_pred = logits[:, outs], iou_pred[:, outs]
            tgt = tgt[:, None].expand_as(logits)
            losses = self._mask_loss(logits, tgt)  # each [n, K]
            best = losses["total"].argmin(1)  # SAM: back-propagate only the best of ambiguous masks
            rows = torch.arange(len(best))
            iou = mask_iou(logits, tgt)  # [n, K]
            for k in ("total", "focal", "dice"):
                terms[k].append(losses[k][rows, best])
            terms["iou"].append(F.mse_loss(iou_pred, iou, reduction="none").mean(1))
            stats[f"train_iou_{group}"] = iou[rows, best].mean()
        out = {f"loss_{k}": torch.cat(v).mean() for k, v in terms.items()}
        out["loss"] = out["loss_total"] + cfg.iou_weight * out["loss_iou"]
        return {**out, **stats}


def tie_decoder_attention(sam: Sam) -> None:
    """Initialise each cross-attention of SAM's mask decoder with ``k_proj = q_proj``.

    Attention logits then start as ``(Wx) . (Wy)``, roughly proportional to ``x . y``: an image token
    and a prompt token whose positional encodings are close attend to each other from the first step.
    With independent random projections, the decoder first has to discover this alignment, and from
    scratch it sits for hundreds of steps predicting empty masks.
    """
    layers = list(sam.mask_decoder.transformer.layers)
    attns = [
        a for layer in layers for a in (layer.cross_attn_token_to_image, layer.cross_attn_image_to_token)
    ]
    attns.append(sam.mask_decoder.transformer.final_attn_token_to_image)
    with torch.no_grad():
        for attn in attns:
            if attn.k_proj.weight.shape == attn.q_proj.weight.shape:
                attn.k_proj.weight.copy_(attn.q_proj.weight)
                attn.k_proj.bias.copy_(attn.q_proj.bias)


def localisation_warmup(sam: Sam, cfg: PretrainConfig, scenes: list[np.ndarray]) -> list[float]:
    """Train the prompt encoder and mask decoder to output a random box's own region, as a mask.

    From scratch, the decoder must learn to align the positional encodings of prompts and image tokens
    before any mask can follow a prompt; until then it predicts empty masks and the whole model sits on
    a plateau (hundreds of steps on the full task). On this toy task (fixed image embeddings of
    ``scenes``, no encoder pass, boxes of 30-90 px) the alignment appears within ~100 cheap steps.

    Returns the IoU of each step.
    """
    if cfg.box_warmup_steps <= 0:
        return []
    with torch.no_grad():
        embeddings = sam.image_encoder(_images_to_input(sam, scenes))
    params = [*sam.prompt_encoder.parameters(), *sam.mask_decoder.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    gen = torch.Generator().manual_seed(cfg.seed)
    size = sam.image_encoder.img_size
    low = size // 4
    yy, xx = torch.meshgrid(torch.arange(low) + 0.5, torch.arange(low) + 0.5, indexing="ij")
    ious = []
    n = 16
    for _ in range(cfg.box_warmup_steps):
        centre = torch.rand(n, 2, generator=gen) * (size - 60) + 30
        side = torch.rand(n, 2, generator=gen) * 60 + 30
        boxes = torch.cat([centre - side / 2, centre + side / 2], 1).clamp(0, size - 1)
        b = boxes / 4
        target = (
            (xx >= b[:, 0, None, None])
            & (xx <= b[:, 2, None, None] + 0.25)
            & (yy >= b[:, 1, None, None])
            & (yy <= b[:, 3, None, None] + 0.25)
        ).float()
        index = torch.randint(len(scenes), (n,), generator=gen)
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
        logits = predict_masks_batched(sam, embeddings[index], sparse, dense)[0][:, 0]
        loss = (
            cfg.focal_weight * sigmoid_focal_loss(logits, target)
            + cfg.dice_weight * dice_loss(logits, target)
        ).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        ious.append(mask_iou(logits, target).mean().item())
    return ious


def _progress(step: int, elapsed_s: float, cfg: PretrainConfig) -> float:
    """Fraction of the run done: by steps or, with a time budget, by wall time if that is further."""
    done = step / cfg.steps
    if cfg.time_budget_s:
        done = max(done, elapsed_s / cfg.time_budget_s)
    return done


def _lr_at(step: int, cfg: PretrainConfig, progress: float | None = None) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``final_lr_ratio * lr`` over the run."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if progress is None:
        progress = step / cfg.steps
    warm = cfg.warmup_steps / cfg.steps
    t = (progress - warm) / max(1e-9, 1 - warm)
    return cfg.lr * (
        cfg.final_lr_ratio + (1 - cfg.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    )


def save_weights(sam: Sam, path: str | Path) -> Path:
    """Write SAM's state dict as float16 safetensors (official key layout), atomically."""
    from safetensors.torch import save

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in sam.state_dict().items()}
    data = save(state, metadata={"format": "pt", "model": "wps-sam tiny SAM"})
    return atomic_write(path, lambda f: f.write(data))


@torch.no_grad()
def evaluate_prompted_miou(
    sam: Sam,
    images: Sequence[np.ndarray],
    masks_per_image: Sequence[np.ndarray],
    max_masks_per_image: int | None = None,
) -> dict[str, float]:
    """Mean IoU of SAM's masks prompted by each ground-truth mask's box and by one interior point.

    Box: the tight box (inclusive maxima), single-mask output. Point: the pixel farthest from the mask's
    outline (a deterministic "centre" point), multimask output, the mask with the highest predicted
    IoU. Masks are upsampled to the original resolution and thresholded at 0 logit.

    Args:
        images: uint8 [H, W, 3] RGB, any size (resized to SAM's input frame as segment-anything does).
        masks_per_image: bool [M, H, W] per image; empty masks are skipped.
        max_masks_per_image: evaluate only the first masks of each image.

    Returns:
        ``box_miou``, ``point_miou`` and ``n_masks``.
    """
    from scipy.ndimage import distance_transform_edt
    from segment_anything.utils.transforms import ResizeLongestSide

    was_training = sam.training
    sam.eval()
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    box_ious: list[torch.Tensor] = []
    point_ious: list[torch.Tensor] = []
    for image, masks in zip(images, masks_per_image):
        masks = np.asarray(masks, bool)[:max_masks_per_image]
        masks = masks[masks.reshape(len(masks), -1).any(1)]
        if len(masks) == 0:
            continue
        original = image.shape[:2]
        resized = transform.apply_image(image)
        input_size = resized.shape[:2]
        embedding = sam.image_encoder(_images_to_input_padded(sam, resized))
        boxes = transform.apply_boxes(np.stack([mask_box(m) for m in masks]), original)
        points = []
        for m in masks:
            dist = distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
            y, x = np.unravel_index(dist.argmax(), dist.shape)
            points.append([x, y])
        points = transform.apply_coords(np.array(points, np.float32), original)
        gt = torch.from_numpy(masks)
        pe = sam.prompt_encoder.get_dense_pe()
        sparse, dense = sam.prompt_encoder(points=None, boxes=torch.as_tensor(boxes).float(), masks=None)
        low, _ = sam.mask_decoder(embedding, pe, sparse, dense, multimask_output=False)
        pred = sam.postprocess_masks(low, input_size, original)[:, 0] > 0
        box_ious.append(mask_iou(pred.float() * 2 - 1, gt.float()))
        coords = torch.as_tensor(points).float()[:, None]
        labels = torch.ones(len(masks), 1, dtype=torch.long)
        sparse, dense = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        low, iou_pred = sam.mask_decoder(embedding, pe, sparse, dense, multimask_output=True)
        low = low[torch.arange(len(masks)), iou_pred.argmax(1)][:, None]
        pred = sam.postprocess_masks(low, input_size, original)[:, 0] > 0
        point_ious.append(mask_iou(pred.float() * 2 - 1, gt.float()))
    sam.train(was_training)
    if not box_ious:
        return {"box_miou": float("nan"), "point_miou": float("nan"), "n_masks": 0}
    box, point = torch.cat(box_ious), torch.cat(point_ious)
    return {"box_miou": box.mean().item(), "point_miou": point.mean().item(), "n_masks": len(box)}


def evaluate_coco_miou(
    sam: Sam, annotations: str | Path, images_dir: str | Path, max_images: int | None = None
) -> dict[str, float]:
    """:func:`evaluate_prompted_miou` on a COCO-format part dataset (e.g. ToyParts val): every
    annotation of the first ``max_images`` images (in id order) is one ground-truth mask."""
    from PIL import Image
    from pycocotools.coco import COCO

    coco = COCO(str(annotations))
    images, masks = [], []
    for image_id in sorted(coco.getImgIds())[:max_images]:
        info = coco.loadImgs(image_id)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
        if not anns:
            continue
        images.append(np.asarray(Image.open(Path(images_dir) / info["file_name"]).convert("RGB")))
        masks.append(np.stack([coco.annToMask(a).astype(bool) for a in anns]))
    return evaluate_prompted_miou(sam, images, masks)


def _images_to_input_padded(sam: Sam, resized: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)[None].float()
    return sam.preprocess(x)


def _write_log(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def pretrain_tiny_sam(
    out: str | Path,
    steps: int,
    batch_size: int = 8,
    prompts_per_image: int = 8,
    lr: float = 8e-4,
    seed: int = 0,
    log_every: int = 50,
    init: str | None = None,
    progress: bool = True,
    **overrides: float,
) -> Path:
    """Train the tiny SAM from scratch (or from ``init``) on synthetic shapes; resume from ``out``.

    Writes ``out/sam_tiny.safetensors`` (float16 state dict, loadable by
    ``build_sam("tiny", checkpoint=...)``), ``out/pretrain_log.jsonl`` (training terms every
    ``log_every`` steps, held-out box/point mIoU every ``eval_every`` steps) and
    ``out/pretrain_state.pt`` (resume state). Extra keyword arguments override
    :class:`PretrainConfig` fields. Returns the weights' path.
    """
    from ..sam.backbones import build_sam

    cfg = PretrainConfig(
        steps=steps,
        batch_size=batch_size,
        prompts_per_image=prompts_per_image,
        lr=lr,
        seed=seed,
        log_every=log_every,
        **overrides,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights_path, state_path, log_path = out / WEIGHTS_NAME, out / STATE_NAME, out / LOG_NAME
    sam = build_sam("tiny", checkpoint=init or "random", frozen=False).train()
    if init is None and cfg.tied_attention_init:
        tie_decoder_attention(sam)
    decay = [p for p in sam.parameters() if p.ndim >= 2]
    no_decay = [p for p in sam.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    start, rows, elapsed_before = 0, [], 0.0
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        sam.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, rows, elapsed_before = state["step"], json.loads(state["log"]), state["elapsed_s"]
        logger.info("resuming from %s at step %d", state_path, start)

    train_data = SyntheticShapes(seed=cfg.seed, cfg=ShapesConfig())
    if start == 0 and init is None:
        t_warm = time.time()
        warm_scenes = [SyntheticShapes(seed=cfg.seed + 2_000_003)[i][0] for i in range(4)]
        ious = localisation_warmup(sam, cfg, warm_scenes)
        if ious:
            rows.append(
                {
                    "step": 0,
                    "box_warmup_steps": len(ious),
                    "box_warmup_final_iou": round(float(np.mean(ious[-10:])), 4),
                    "box_warmup_s": round(time.time() - t_warm, 1),
                }
            )
            logger.info("box warm-up: %d steps, final IoU %.3f", len(ious), rows[-1]["box_warmup_final_iou"])
    held_out = SyntheticShapes(seed=cfg.seed + 1_000_003, cfg=ShapesConfig())
    eval_set = [held_out[i] for i in range(cfg.eval_images)]
    criterion = _Step(sam, cfg)
    t0, last_save, window = time.time(), time.time(), []

    def checkpoint(step: int) -> None:
        save_weights(sam, weights_path)
        state = {
            "model": sam.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "log": json.dumps(rows),
            "elapsed_s": elapsed_before + time.time() - t0,
            "config": json.dumps(asdict(cfg)),
        }
        atomic_torch_save(state_path, state)
        _write_log(log_path, rows)

    def evaluate(step: int) -> None:
        res = evaluate_prompted_miou(
            sam, [i for i, _ in eval_set], [m for _, m in eval_set], cfg.eval_masks_per_image
        )
        rows.append(
            {
                "step": step,
                "eval_box_miou": round(res["box_miou"], 4),
                "eval_point_miou": round(res["point_miou"], 4),
                "eval_masks": res["n_masks"],
            }
        )
        if progress:
            logger.info(
                "step %d held-out box mIoU %.3f point mIoU %.3f", step, res["box_miou"], res["point_miou"]
            )

    for step in range(start, cfg.steps):
        ts = time.time()
        progress_done = _progress(step, elapsed_before + ts - t0, cfg)
        if progress_done >= 1.0:
            logger.info("time budget of %.0f s spent at step %d", cfg.time_budget_s, step)
            rows.append({"step": step, "stopped": "time budget"})
            evaluate(step)
            checkpoint(step)
            break
        lr_now = _lr_at(step, cfg, progress_done)
        for g in opt.param_groups:
            g["lr"] = lr_now
        scenes = [train_data[step * cfg.batch_size + b] for b in range(cfg.batch_size)]
        terms = criterion(scenes, step)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(sam.parameters(), cfg.grad_clip)
        opt.step()
        window.append(
            {k: v.item() for k, v in terms.items()} | {"grad_norm": grad_norm.item(), "sec": time.time() - ts}
        )
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            row = {
                "step": done,
                "lr": round(lr_now, 7),
                "elapsed_s": round(elapsed_before + time.time() - t0, 1),
            }
            row |= {
                k: round(float(np.mean([w[k] for w in window if k in w])), 4)
                for k in window[-1]
                if any(k in w for w in window)
            }
            rows.append(row)
            window = []
            if progress:
                logger.info(
                    "step %d/%d loss %.4f (focal %.4f dice %.4f iou %.4f) %.2fs/step",
                    done,
                    cfg.steps,
                    row["loss"],
                    row["loss_focal"],
                    row["loss_dice"],
                    row["loss_iou"],
                    row["sec"],
                )
        if done % cfg.eval_every == 0 or done == cfg.steps:
            evaluate(done)
        if time.time() - last_save > cfg.checkpoint_every_s or done == cfg.steps:
            checkpoint(done)
            last_save = time.time()
    if start >= cfg.steps and not weights_path.is_file():
        checkpoint(start)
    sam.eval()
    return weights_path
