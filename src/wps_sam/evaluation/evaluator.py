"""Evaluating a trained WPS-SAM on a split: the standard protocol and the paper's, in one pass."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..config import Config
from ..data.cached import CachedRows
from ..data.coco import PartDataIndex, instance_mask
from ..data.datasets import PartSegmentationDataset, collate_parts
from ..data.transforms import SamTransform
from ..engine.loop import encoder_autocast
from ..errors import DataError
from ..modeling.wps_sam import WPSSAM, PartPrediction
from ..postprocess import compose_semantic_map, semantic_map_from_gt
from ..sam.decoder import masks_to_frame, masks_to_input_frame
from .metrics import ConfusionMatrix
from .paper_ground_truth import PaperGroundTruth
from .paper_protocol import PaperProtocol

logger = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(
    model: WPSSAM,
    index: PartDataIndex,
    cfg: Config,
    device: torch.device,
    batch_size: int | None = None,
    progress: bool = True,
    embeddings: Tensor | CachedRows | None = None,
    mirrored_embeddings: Tensor | CachedRows | None = None,
) -> dict[str, Any]:
    """Standard mIoU/mACC (one confusion matrix, original frame) and the paper protocol of ``index``.

    ``embeddings``: [N, 256, h, w] the frozen encoder's embeddings of ``index.images`` in order (any
    float dtype), or the embedding cache's rows of them (:func:`~wps_sam.data.cached.split_embeddings`),
    read instead of encoding the images; with ``inference.flip_test`` also ``mirrored_embeddings``,
    those of the left-right mirrored input frames. Returns ``{"miou", "macc", "pixel_acc",
    "per_class", "confusion", "paper_protocol": {...}, "images": n}``; ``confusion`` is the
    [C+1, C+1] pixel count matrix (rows: ground truth).
    """
    from tqdm import tqdm

    if not index.has_masks:
        raise DataError(
            f"split '{index.split}' of {index.root} has no segmentation masks; evaluation needs masks"
        )
    if embeddings is not None:
        _check_embeddings(embeddings, mirrored_embeddings, len(index.images), cfg.inference.flip_test)
    image_size = model.image_encoder.img_size
    # The parts' points are never read here: box centres spare the interior points' distance transform.
    dataset = PartSegmentationDataset(index, SamTransform(image_size), point_mode="box_center")
    loader = DataLoader(
        dataset,
        batch_size=batch_size or cfg.train.batch_size,
        shuffle=False,
        collate_fn=collate_parts,
        num_workers=cfg.data.num_workers,
    )
    scores = _Scores(index, image_size, model.num_classes, _probability(cfg.inference.mask_threshold))
    was_training = model.prompter.training
    model.eval()
    for batch in tqdm(loader, desc=f"eval {index.split}", disable=not progress, dynamic_ncols=True):
        embedded, mirrored = _batch_embeddings(model, batch, cfg, device, embeddings, mirrored_embeddings)
        predictions = model.predict(
            embedded,
            cfg.inference.score_threshold,
            cfg.inference.point_multimask,
            mirrored_embeddings=mirrored,
        )
        for pred, target in zip(predictions, batch["targets"]):
            scores.update(pred, target)
    model.prompter.train(was_training)
    return scores.result() | {"images": len(dataset)}


class _Scores:
    """The standard protocol's confusion matrix (original frame) and the paper protocol of a split,
    one image's prediction at a time."""

    def __init__(
        self, index: PartDataIndex, image_size: int, num_classes: int, mask_probability: float
    ) -> None:
        self.index, self.image_size, self.mask_probability = index, image_size, mask_probability
        self.paper_gt = PaperGroundTruth(index, image_size)
        self.confusion = ConfusionMatrix(num_classes + 1)
        self.paper = PaperProtocol()

    def update(self, pred: PartPrediction, target: dict[str, Any]) -> None:
        height, width = target["original_size"]
        entry = self.index.images[target["index"]]
        # Each ground-truth mask is rasterised once, in the original frame; the paper protocol
        # resizes it to the input frame as the official loader does.
        originals = [instance_mask(p, entry.height, entry.width) for p in entry.parts]
        decoded = {p.ann_id: (p.segmentation, m) for p, m in zip(entry.parts, originals) if p.is_polygon}
        paper_masks, paper_labels = self.paper_gt.masks(entry.image_id, (height, width), decoded)
        probs_input = masks_to_input_frame(pred.mask_logits, self.image_size).sigmoid().cpu()
        self.paper.update(
            probs_input,
            pred.labels.cpu(),
            paper_masks,
            paper_labels,
            torch.ones(len(paper_labels), dtype=torch.bool),
        )
        probs = masks_to_frame(pred.mask_logits, self.image_size, target["input_size"], (height, width))
        pred_map = compose_semantic_map(
            probs.sigmoid().cpu(), pred.labels.cpu(), pred.scores.cpu(), self.mask_probability
        )
        gt_masks = torch.from_numpy(_stack_masks(originals, height, width))
        self.confusion.update(pred_map, semantic_map_from_gt(gt_masks, target["labels"].cpu()))

    def result(self) -> dict[str, Any]:
        result = self.confusion.compute(["background", *self.index.class_names])
        result["confusion"] = self.confusion.matrix.tolist()  # pixels; rows: ground truth, background first
        result["paper_protocol"] = self.paper.compute()
        return result


def _batch_embeddings(
    model: WPSSAM,
    batch: dict[str, Any],
    cfg: Config,
    device: torch.device,
    embeddings: Tensor | CachedRows | None,
    mirrored_embeddings: Tensor | CachedRows | None,
) -> tuple[Tensor, Tensor | None]:
    """float32 [B, 256, h, w] embeddings of the batch's images and, with ``inference.flip_test``, of
    their mirrored frames: the given rows, or the frozen encoder's."""
    flip_test = cfg.inference.flip_test
    if embeddings is not None:
        rows = torch.tensor([t["index"] for t in batch["targets"]])
        mirrored = mirrored_embeddings[rows].to(device).float() if flip_test else None
        return embeddings[rows].to(device).float(), mirrored
    images = batch["images"].to(device)
    with encoder_autocast(device, cfg.train.amp, cfg.train.cpu_amp):
        embedded = model.embed(images).float()
        mirrored = model.embed(images, mirrored=True).float() if flip_test else None
    return embedded, mirrored


def _check_embeddings(
    embeddings: Tensor | CachedRows, mirrored: Tensor | CachedRows | None, num_images: int, flip_test: bool
) -> None:
    """One row per image, and as many mirrored ones with ``flip_test`` (cached rows have the cache's
    shape: only their count is checked)."""
    if len(embeddings) != num_images or (isinstance(embeddings, Tensor) and embeddings.dim() != 4):
        raise ValueError(
            f"evaluate: embeddings must be [{num_images}, C, h, w], one per image of the split; got "
            f"{_described(embeddings)}"
        )
    if not flip_test:
        return
    if mirrored is None:
        raise ValueError("evaluate: inference.flip_test needs the mirrored frames' embeddings too")
    tensors = isinstance(mirrored, Tensor) and isinstance(embeddings, Tensor)
    if (mirrored.shape != embeddings.shape) if tensors else (len(mirrored) != len(embeddings)):
        raise ValueError(
            f"evaluate: mirrored embeddings {_described(mirrored)} must match the embeddings "
            f"{_described(embeddings)}"
        )


def _described(rows: Tensor | CachedRows) -> str:
    return str(tuple(rows.shape)) if isinstance(rows, Tensor) else f"({len(rows)} cached rows)"


def _probability(logit_threshold: float) -> float:
    return float(torch.sigmoid(torch.tensor(logit_threshold)))


def _stack_masks(masks: list, height: int, width: int):
    import numpy as np

    if not masks:
        return np.zeros((0, height, width), dtype=bool)
    stacked = np.stack(masks)
    if stacked.shape[1:] != (height, width):
        # The json's size disagreed with the file: resize the decoded masks to the image.
        resized = torch.nn.functional.interpolate(
            torch.from_numpy(stacked)[None].float(), (height, width), mode="nearest"
        )[0]
        return resized.bool().numpy()
    return stacked
