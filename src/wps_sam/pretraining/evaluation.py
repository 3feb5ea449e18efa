"""How good the tiny SAM's masks are: SAM prompted by each ground-truth mask's box and by one click.

The figures of ``PRETRAIN_LOG.md`` and of the tiny-SAM targets: per-mask IoU at the image's full
resolution, SAM's masks thresholded at logit 0. These functions follow segment-anything's
``SamPredictor`` step for step (resize the longest side, pad, decode, upscale).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import Sam

from .losses import mask_iou
from .prompts import interior_point, mask_box


@torch.no_grad()
def evaluate_prompted_miou(
    sam: Sam,
    images: Sequence[np.ndarray],
    masks_per_image: Sequence[np.ndarray],
    max_masks_per_image: int | None = None,
) -> dict[str, float]:
    """Mean IoU of SAM's masks prompted by each ground-truth mask's box and by one interior point.

    With segment-anything's ``SamPredictor``: box: the tight box (inclusive maxima), single-mask
    output; point: the pixel farthest from the mask's outline (a deterministic "centre" point),
    multimask output, the mask with the highest predicted IoU (and, as ``point_single_miou``, the
    same click's single-mask output). Masks come at the original resolution, thresholded at logit 0
    (the predictor's ``mask_threshold``).

    Args:
        images: uint8 [H, W, 3] RGB, any size (resized to SAM's input frame as segment-anything does).
        masks_per_image: bool [M, H, W] per image; empty masks are skipped.
        max_masks_per_image: evaluate only the first masks of each image.

    Returns:
        ``box_miou``, ``point_miou``, ``point_single_miou`` and ``n_masks``.
    """
    from segment_anything import SamPredictor

    was_training = sam.training
    sam.eval()
    predictor = SamPredictor(sam)
    box_ious: list[torch.Tensor] = []
    point_ious: list[torch.Tensor] = []
    single_ious: list[torch.Tensor] = []
    for image, masks in zip(images, masks_per_image):
        masks = np.asarray(masks, bool)[:max_masks_per_image]
        masks = masks[masks.reshape(len(masks), -1).any(1)]
        if len(masks) == 0:
            continue
        predictor.set_image(image)
        original = image.shape[:2]
        transform = predictor.transform
        boxes = transform.apply_boxes(np.stack([mask_box(m) for m in masks]), original)
        points = transform.apply_coords(np.stack([interior_point(m) for m in masks]), original)
        device = predictor.device
        gt = torch.from_numpy(masks).float().to(device)
        pred, _, _ = predictor.predict_torch(
            None, None, torch.as_tensor(boxes, device=device).float(), multimask_output=False
        )
        box_ious.append(mask_iou(pred[:, 0].float() * 2 - 1, gt))
        labels = torch.ones(len(masks), 1, dtype=torch.long, device=device)
        clicks = torch.as_tensor(points, device=device).float()[:, None]
        pred, iou_pred, _ = predictor.predict_torch(clicks, labels, multimask_output=True)
        best = pred[torch.arange(len(masks), device=device), iou_pred.argmax(1)]
        point_ious.append(mask_iou(best.float() * 2 - 1, gt))
        pred, _, _ = predictor.predict_torch(clicks, labels, multimask_output=False)
        single_ious.append(mask_iou(pred[:, 0].float() * 2 - 1, gt))
    sam.train(was_training)
    if not box_ious:
        nan = float("nan")
        return {"box_miou": nan, "point_miou": nan, "point_single_miou": nan, "n_masks": 0}
    box, point, single = torch.cat(box_ious), torch.cat(point_ious), torch.cat(single_ious)
    return {
        "box_miou": box.mean().item(),
        "point_miou": point.mean().item(),
        "point_single_miou": single.mean().item(),
        "n_masks": len(box),
    }


def evaluate_coco_miou(
    sam: Sam, annotations: str | Path, images_dir: str | Path, max_images: int | None = None
) -> dict[str, float]:
    """:func:`evaluate_prompted_miou` on a COCO-format part dataset (e.g. ToyParts val): every
    annotation of the first ``max_images`` images (in id order) is one ground-truth mask."""
    from PIL import Image
    from pycocotools.coco import COCO

    from ..data.rle import decode_masks

    coco = COCO(str(annotations))
    images, masks = [], []
    for image_id in sorted(coco.getImgIds())[:max_images]:
        info = coco.loadImgs(image_id)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
        if not anns:
            continue
        images.append(np.asarray(Image.open(Path(images_dir) / info["file_name"]).convert("RGB")))
        masks.append(np.stack([decode_masks(coco.annToRLE(a)).astype(bool) for a in anns]))
    return evaluate_prompted_miou(sam, images, masks)
