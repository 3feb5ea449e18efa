"""The demo's baselines, scored exactly as ``wps-sam eval`` scores WPS-SAM.

Every method maps image ``i`` of the held-out split to a semantic part map in the image's original
frame (0 background, k = part class k-1), and :func:`score` accumulates one
:class:`~wps_sam.evaluation.metrics.ConfusionMatrix` over the split against the ground-truth maps
that the evaluator builds (:func:`gt_semantic_map`: the smaller part wins where parts overlap).

- ``sam-gt-box-oracle`` (:class:`SamBoxOracle`): SAM prompted with each ground-truth box, single-mask
  output, the part's own label at score 1, composed by :func:`~wps_sam.postprocess.compose_semantic_map`
  as WPS-SAM's predictions are. The teacher tokens WPS-SAM learns to emit are exactly these prompts,
  so this is the ceiling of a box-trained prompter on this SAM.
- ``box-fill`` (:func:`box_fill_map`): every ground-truth box filled as its part's mask; the smaller
  box wins where boxes overlap, as the smaller part does in the ground truth.
- ``fully-supervised`` (:func:`lraspp`): torchvision's LR-ASPP MobileNetV3-Large, no pretrained
  weights, trained from the full masks (:func:`fit_segmenter`).
- ``fully-supervised-sam-head`` (:class:`EmbeddingHead`): a small convolutional head on the same
  frozen SAM embedding, trained from the full masks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from segment_anything.modeling import Sam
from torch import Tensor, nn

from ..data.coco import ImageEntry, PartDataIndex, instance_mask
from ..data.images import read_image
from ..data.transforms import PIXEL_MEAN, PIXEL_STD, SamTransform
from ..engine.order import epoch_order
from ..engine.schedule import adamw, warmup_cosine
from ..evaluation.metrics import ConfusionMatrix
from ..postprocess import compose_semantic_map, semantic_map_from_gt
from ..sam.decoder import PromptMaskDecoder, masks_to_frame
from ..sam.teacher import TeacherTokens

logger = logging.getLogger(__name__)

IGNORE = 255  # label of padding pixels in the input frame: no loss
MapFn = Callable[[int], Tensor]  # image position in the split -> LongTensor [H, W] semantic map


def _labels(entry: ImageEntry) -> Tensor:
    return torch.tensor([p.label for p in entry.parts], dtype=torch.int64)


def gt_semantic_map(entry: ImageEntry) -> Tensor:
    """The ground-truth semantic map of one image, original frame, as ``wps-sam eval`` builds it."""
    masks = np.zeros((len(entry.parts), entry.height, entry.width), dtype=bool)
    for k, part in enumerate(entry.parts):
        masks[k] = instance_mask(part, entry.height, entry.width)
    return semantic_map_from_gt(torch.from_numpy(masks), _labels(entry))


def score(
    predict: MapFn, gt_maps: Sequence[Tensor], class_names: Sequence[str], desc: str, progress: bool = True
) -> dict:
    """Standard mIoU/mACC of ``predict`` over a split whose ground-truth maps are ``gt_maps``.

    Returns :meth:`ConfusionMatrix.compute`'s dict plus ``"images"``.
    """
    from tqdm import tqdm

    confusion = ConfusionMatrix(len(class_names) + 1)
    for i in tqdm(range(len(gt_maps)), desc=desc, disable=not progress, dynamic_ncols=True, leave=False):
        confusion.update(predict(i), gt_maps[i].long())
    result = confusion.compute(["background", *class_names])
    result["images"] = len(gt_maps)
    return result


# --- box-fill ---------------------------------------------------------------------------------


def box_masks(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """bool [N, height, width]: the pixels whose centre lies inside each XYXY box (pixel edges)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    xs = np.arange(width) + 0.5
    ys = np.arange(height) + 0.5
    inside_x = (xs[None] >= boxes[:, 0:1]) & (xs[None] <= boxes[:, 2:3])  # [N, W]
    inside_y = (ys[None] >= boxes[:, 1:2]) & (ys[None] <= boxes[:, 3:4])  # [N, H]
    return inside_y[:, :, None] & inside_x[:, None, :]


def box_fill_map(entry: ImageEntry) -> Tensor:
    """Every ground-truth box of ``entry`` filled with its part's class; the smaller box wins."""
    boxes = np.stack([p.box for p in entry.parts]) if entry.parts else np.zeros((0, 4))
    return semantic_map_from_gt(torch.from_numpy(box_masks(boxes, entry.height, entry.width)), _labels(entry))


# --- SAM prompted with the ground-truth boxes ----------------------------------------------------


class SamBoxOracle:
    """SAM's frozen prompt encoder and mask decoder on each ground-truth box of an image.

    Args:
        sam: the frozen SAM whose embeddings ``embeddings`` are.
        index: the split.
        embeddings: [N, 256, h, w] SAM image embeddings of ``index.images``, in order (a tensor, or
            the embedding cache's :class:`~wps_sam.data.cached.CachedRows` of them).
        mask_threshold: logit above which a mask covers a pixel (``inference.mask_threshold``).
    """

    def __init__(
        self, sam: Sam, index: PartDataIndex, embeddings: Tensor, mask_threshold: float = 0.0
    ) -> None:
        if len(embeddings) != len(index.images):
            raise ValueError(f"{len(embeddings)} embeddings for {len(index.images)} images")
        self.teacher = TeacherTokens(sam.prompt_encoder)
        self.decoder = PromptMaskDecoder(sam.prompt_encoder, sam.mask_decoder)
        self.transform = SamTransform(sam.image_encoder.img_size)
        self.index = index
        self.embeddings = embeddings
        self.threshold = float(torch.sigmoid(torch.tensor(mask_threshold)))

    @torch.no_grad()
    def __call__(self, i: int) -> Tensor:
        entry = self.index.images[i]
        if not entry.parts:
            return torch.zeros((entry.height, entry.width), dtype=torch.long)
        labels = _labels(entry)
        return compose_semantic_map(
            self.part_logits(i).sigmoid(), labels, torch.ones(len(labels)), self.threshold
        )

    @torch.no_grad()
    def part_logits(self, i: int) -> Tensor:
        """[P, H, W] SAM's mask logits of each ground-truth box of image ``i`` (P >= 1 parts), in the
        image's original frame."""
        entry = self.index.images[i]
        size = (entry.height, entry.width)
        boxes = self.transform.apply_boxes(np.stack([p.box for p in entry.parts]), size)
        tokens = self.teacher(boxes=torch.from_numpy(boxes))  # [P, 2, 256], input frame
        logits, _ = self.decoder(self.embeddings[[i]].float(), tokens[None])  # [1, P, 4h, 4w]
        return masks_to_frame(logits[0], self.transform.image_size, self.transform.input_size(size), size)


# --- fully supervised: data, networks, training -----------------------------------------------


@dataclass
class SemanticSplit:
    """A split's images and ground-truth maps in SAM's input frame, kept in memory.

    ``images``: uint8 [N, 3, S, S] resized as :class:`SamTransform` does, zero-padded (not normalised);
    ``labels``: uint8 [N, S, S] semantic maps, :data:`IGNORE` on padding; ``input_sizes`` (h, w) and
    ``original_sizes`` (H, W) per image.
    """

    images: Tensor
    labels: Tensor
    input_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]

    def normalised(self, idx: Sequence[int] | Tensor) -> Tensor:
        """float32 [B, 3, S, S] images normalised with SAM's mean/std, padding 0 (as SamTransform)."""
        mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
        x = (self.images[idx].float() - mean) / std
        return x * (self.labels[idx] != IGNORE)[:, None]


def load_semantic_split(
    index: PartDataIndex, gt_maps: Sequence[Tensor], image_size: int, progress: bool = True, desc: str = ""
) -> SemanticSplit:
    """Read every image of ``index`` into a :class:`SemanticSplit` (input frame of side ``image_size``)."""
    from tqdm import tqdm

    if len(index.images) and max(int(m.max()) for m in gt_maps) >= IGNORE:
        raise ValueError(f"a split with {index.num_classes} part classes does not fit uint8 label maps")
    transform = SamTransform(image_size)
    n = len(index.images)
    images = torch.zeros(n, 3, image_size, image_size, dtype=torch.uint8)
    labels = torch.full((n, image_size, image_size), IGNORE, dtype=torch.uint8)
    input_sizes, original_sizes = [], []
    for i in tqdm(
        range(n), desc=desc or f"load {index.split}", disable=not progress, dynamic_ncols=True, leave=False
    ):
        image = read_image(index.images[i].path)
        size = image.shape[:2]
        gt = gt_maps[i]
        if tuple(gt.shape) != tuple(size):
            raise ValueError(f"{index.images[i].path}: the file is {size}, its annotations {tuple(gt.shape)}")
        h, w = transform.input_size(size)
        resized = np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        images[i, :, :h, :w] = torch.from_numpy(resized).permute(2, 0, 1)
        labels[i, :h, :w] = F.interpolate(gt[None, None].float(), (h, w), mode="nearest-exact")[0, 0].to(
            torch.uint8
        )
        input_sizes.append((h, w))
        original_sizes.append((int(size[0]), int(size[1])))
    return SemanticSplit(images, labels, input_sizes, original_sizes)


def lraspp(num_labels: int) -> nn.Module:
    """torchvision's LR-ASPP MobileNetV3-Large, randomly initialised (no pretrained weights at all)."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_labels)


class EmbeddingHead(nn.Module):
    """A plain segmentation head on SAM's frozen image embedding: [B, 256, h, w] -> [B, L, 4h, 4w].

    The embedding is first standardised with training-set statistics (:meth:`set_input_stats`), as
    images are for any network: the tiny SAM's embedding is dominated by a pattern that is the same
    for every image (its across-image standard deviation is a few percent of its magnitude), which
    would otherwise swamp the image-dependent part. Then two 3x3 convolutions at the embedding's
    resolution, two 2x transposed-convolution steps (as SAM's own mask decoder upscales its
    embedding) and a 1x1 classifier over the L labels.
    """

    def __init__(self, num_labels: int, embed_dim: int = 256, width: int = 128) -> None:
        super().__init__()

        def block(cin: int, cout: int, up: bool) -> list[nn.Module]:
            conv = nn.ConvTranspose2d(cin, cout, 2, stride=2) if up else nn.Conv2d(cin, cout, 3, padding=1)
            return [conv, nn.BatchNorm2d(cout), nn.GELU()]

        self.register_buffer("input_mean", torch.zeros(1, embed_dim, 1, 1))
        self.register_buffer("input_std", torch.ones(()))
        self.layers = nn.Sequential(
            *block(embed_dim, width, False),
            *block(width, width, False),
            *block(width, width // 2, True),
            *block(width // 2, width // 4, True),
            nn.Conv2d(width // 4, num_labels, 1),
        )

    @torch.no_grad()
    def set_input_stats(self, embeddings: Tensor) -> None:
        """Standardise inputs with the mean embedding [1, C, h, w] and the scalar std around it."""
        mean = torch.zeros_like(embeddings[:1], dtype=torch.float32)
        for chunk in embeddings.split(256):
            mean += chunk.float().sum(0, keepdim=True)
        mean /= len(embeddings)
        var = sum(float(((chunk.float() - mean) ** 2).sum()) for chunk in embeddings.split(256))
        self.input_mean = mean
        self.input_std = torch.tensor(max(var / embeddings.numel(), 1e-12) ** 0.5)

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.layers((embeddings.float() - self.input_mean) / self.input_std)


def fit_segmenter(
    model: nn.Module,
    batch: Callable[[list[int], bool], tuple[Tensor, Tensor]],
    num_items: int,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 1e-4,
    warmup_steps: int = 0,
    seed: int = 0,
    desc: str = "fit",
    progress: bool = True,
    class_weights: Tensor | None = None,
    bf16: bool = False,
) -> dict:
    """Train ``model`` with pixel-wise cross-entropy (``IGNORE`` pixels left out) for ``steps`` steps.

    ``class_weights`` [L]: per-label weights of the cross-entropy (:func:`balanced_class_weights`);
    ``bf16``: the forward pass under bf16 autocast on the CPU (the loss in float32).

    ``batch(indices, flip)`` returns (logits [B, L, S, S], labels [B, S, S]) for the given items,
    mirrored left-right when ``flip``; the data order of epoch e is :func:`epoch_order` of (seed, e),
    as in WPS-SAM's trainer. AdamW with linear warmup and cosine decay. Returns ``{"steps",
    "batch_size", "image_passes", "seconds", "final_loss"}``.
    """
    from tqdm import tqdm

    torch.manual_seed(seed)
    flips = torch.Generator().manual_seed(seed + 1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(params, lr, weight_decay)
    scheduler = warmup_cosine(optimizer, warmup_steps, steps)
    per_epoch = math.ceil(num_items / batch_size)
    model.train()
    started, loss_avg = time.time(), None
    bar = tqdm(total=steps, desc=desc, disable=not progress, dynamic_ncols=True)
    for step in range(steps):
        epoch, position = divmod(step, per_epoch)
        order = epoch_order(num_items, seed, epoch)
        idx = order[position * batch_size : (position + 1) * batch_size]
        flip = bool(torch.rand((), generator=flips) < 0.5)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, labels = batch(idx, flip)
        loss = F.cross_entropy(logits.float(), labels.long(), weight=class_weights, ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_avg = loss.item() if loss_avg is None else 0.9 * loss_avg + 0.1 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_avg:.3f}")
    bar.close()
    model.eval()
    return {
        "steps": steps,
        "batch_size": batch_size,
        "image_passes": steps * batch_size,
        "seconds": round(time.time() - started, 2),
        "final_loss": loss_avg,
    }


def balanced_class_weights(labels: Tensor, num_labels: int) -> Tensor:
    """[L] cross-entropy weights from label maps (``IGNORE`` left out): the square root of the
    inverse frequency, mean 1, so that small parts count against the background (as the probe
    of ``shared/tools/feature_probe.py`` weighs them)."""
    # One count per uint8 value (IGNORE included) over the whole flattened stack: 80x faster on the
    # CPU than selecting the labelled pixels first (~4 s for the demo's 1600 maps).
    counts = torch.bincount(labels.flatten(), minlength=IGNORE + 1)[:num_labels].float()
    weights = (counts.sum() / (counts + 1)).sqrt()
    return weights / weights.mean()


def _to_original(logits: Tensor, input_size: tuple[int, int], original_size: tuple[int, int]) -> Tensor:
    """[L, S, S] logits (input frame) -> LongTensor [H, W] argmax map in the original frame."""
    h, w = input_size
    cropped = logits[None, :, :h, :w].float()
    if (h, w) != tuple(original_size):
        cropped = F.interpolate(cropped, original_size, mode="bilinear", align_corners=False)
    return cropped[0].argmax(0)


def lraspp_batch(model: nn.Module, data: SemanticSplit) -> Callable[[list[int], bool], tuple[Tensor, Tensor]]:
    """The ``batch`` function of :func:`fit_segmenter` for an image network on ``data``."""

    def batch(idx: list[int], flip: bool) -> tuple[Tensor, Tensor]:
        x, y = data.normalised(idx), data.labels[idx]
        if flip:
            x, y = x.flip(-1), y.flip(-1)
        return model(x)["out"], y

    return batch


def mean_of_views(logits: Tensor, mirrored_back: Tensor, dim: int) -> Tensor:
    """The log of the mean softmax (over ``dim``, the labels) of two views' logits, the mirror's
    already flipped back: logits of the averaged prediction."""
    return ((logits.softmax(dim) + mirrored_back.softmax(dim)) / 2).log()


def lraspp_predictor(model: nn.Module, data: SemanticSplit, flip_test: bool = False) -> MapFn:
    """Label maps of ``data``'s images; ``flip_test``: the mean of the softmax of each image and of
    its mirror image's, flipped back (the test-time mirroring WPS-SAM's dense prompter may use)."""

    @torch.no_grad()
    def predict(i: int) -> Tensor:
        x = data.normalised([i])
        logits = model.eval()(x)["out"][0]
        if flip_test:
            logits = mean_of_views(logits, model(x.flip(-1))["out"][0].flip(-1), dim=0)
        return _to_original(logits, data.input_sizes[i], data.original_sizes[i])

    return predict


def head_batch(
    head: nn.Module, embeddings: Tensor, data: SemanticSplit, mirrored: Tensor | None = None
) -> Callable[[list[int], bool], tuple[Tensor, Tensor]]:
    """The ``batch`` function of :func:`fit_segmenter` for a head on frozen embeddings.

    The loss is taken at the head's own resolution (4h x 4w, that of SAM's mask logits), on label
    maps sampled there at pixel centres. A mirrored embedding is not the embedding of the mirrored
    image: ``flip`` takes the embeddings of the mirrored images, ``mirrored`` (those WPS-SAM trains
    on with ``train.augment=hflip``), with mirrored labels; without them it is ignored. (The images
    are square here, so the whole frame mirrors.)
    """
    side = 4 * embeddings.shape[-1]
    labels = F.interpolate(data.labels[:, None].float(), (side, side), mode="nearest-exact")[:, 0].to(
        torch.uint8
    )

    def batch(idx: list[int], flip: bool) -> tuple[Tensor, Tensor]:
        if flip and mirrored is not None:
            return head(mirrored[idx]), labels[idx].flip(-1)
        return head(embeddings[idx]), labels[idx]

    return batch


def head_predictor(
    head: nn.Module, embeddings: Tensor, data: SemanticSplit, mirrored: Tensor | None = None
) -> MapFn:
    """Label maps of ``data``'s images from their embeddings; with ``mirrored`` (the embeddings of
    the mirror images, square frames) the mean of both views' softmax, the mirror's flipped back."""
    size = data.labels.shape[-1]

    @torch.no_grad()
    def predict(i: int) -> Tensor:
        logits = head.eval()(embeddings[i : i + 1])
        if mirrored is not None:
            logits = mean_of_views(logits, head(mirrored[i : i + 1]).flip(-1), dim=1)
        logits = F.interpolate(logits, (size, size), mode="bilinear", align_corners=False)[0]
        return _to_original(logits, data.input_sizes[i], data.original_sizes[i])

    return predict
