"""Evaluating a trained WPS-SAM on a split: the standard protocol and the paper's, in one pass."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..config import Config
from ..data.coco import PartDataIndex, instance_mask
from ..data.datasets import PartSegmentationDataset, collate_parts
from ..data.transforms import SamTransform
from ..engine.loop import encoder_autocast
from ..errors import DataError
from ..modeling.wps_sam import WPSSAM
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
) -> dict[str, Any]:
    """Standard mIoU/mACC (one confusion matrix, original frame) and the paper protocol of ``index``.

    Returns ``{"miou", "macc", "pixel_acc", "per_class", "confusion", "paper_protocol": {...},
    "images": n}``; ``confusion`` is the [C+1, C+1] pixel count matrix (rows: ground truth).
    """
    from tqdm import tqdm

    if not index.has_masks:
        raise DataError(
            f"split '{index.split}' of {index.root} has no segmentation masks; evaluation needs masks"
        )
    image_size = model.image_encoder.img_size
    # The parts' points are never read here: box centres spare the interior points' distance transform.
    dataset = PartSegmentationDataset(index, SamTransform(image_size), point_mode="box_center")
    paper_gt = PaperGroundTruth(index, image_size)
    loader = DataLoader(
        dataset,
        batch_size=batch_size or cfg.train.batch_size,
        shuffle=False,
        collate_fn=collate_parts,
        num_workers=cfg.data.num_workers,
    )
    confusion = ConfusionMatrix(model.num_classes + 1)
    paper = PaperProtocol()
    was_training = model.prompter.training
    model.eval()
    for batch in tqdm(loader, desc=f"eval {index.split}", disable=not progress, dynamic_ncols=True):
        images = batch["images"].to(device)
        with encoder_autocast(device, cfg.train.amp, cfg.train.cpu_amp):
            embeddings = model.embed(images).float()
            mirrored = model.embed(images, mirrored=True).float() if cfg.inference.flip_test else None
        predictions = model.predict(
            embeddings,
            cfg.inference.score_threshold,
            cfg.inference.point_multimask,
            mirrored_embeddings=mirrored,
        )
        for pred, target in zip(predictions, batch["targets"]):
            height, width = target["original_size"]
            entry = index.images[target["index"]]
            # Each ground-truth mask is rasterised once, in the original frame; the paper protocol
            # resizes it to the input frame as the official loader does.
            originals = [instance_mask(p, entry.height, entry.width) for p in entry.parts]
            decoded = {p.ann_id: (p.segmentation, m) for p, m in zip(entry.parts, originals) if p.is_polygon}
            paper_masks, paper_labels = paper_gt.masks(entry.image_id, (height, width), decoded)
            probs_input = masks_to_input_frame(pred.mask_logits, image_size).sigmoid().cpu()
            paper.update(
                probs_input,
                pred.labels.cpu(),
                paper_masks,
                paper_labels,
                torch.ones(len(paper_labels), dtype=torch.bool),
            )
            probs = masks_to_frame(pred.mask_logits, image_size, target["input_size"], (height, width))
            pred_map = compose_semantic_map(
                probs.sigmoid().cpu(),
                pred.labels.cpu(),
                pred.scores.cpu(),
                _probability(cfg.inference.mask_threshold),
            )
            gt_masks = torch.from_numpy(_stack_masks(originals, height, width))
            gt_map = semantic_map_from_gt(gt_masks, target["labels"].cpu())
            confusion.update(pred_map, gt_map)
    model.prompter.train(was_training)
    result = confusion.compute(["background", *index.class_names])
    result["confusion"] = confusion.matrix.tolist()  # pixels; rows: ground truth, background first
    result["paper_protocol"] = paper.compute()
    result["images"] = len(dataset)
    return result


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
