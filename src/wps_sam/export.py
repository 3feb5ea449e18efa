"""Export of predictions: semantic label-map PNGs and COCO-style instances with RLE masks.

Everything here is in the original image frame (H x W pixels, boxes XYXY in pixels), and every file
is written atomically through :mod:`wps_sam.atomic`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from wps_sam.atomic import atomic_write, atomic_write_json
from wps_sam.data.rle import decode_masks


def save_label_map(path: str | Path, label_map: np.ndarray | torch.Tensor) -> Path:
    """Write a semantic label map (0 = background, k = part class k-1) as a grayscale PNG.

    The PNG is 8-bit when every label is below 256, else 16-bit; the pixel values are the labels.

    Args:
        path: destination file.
        label_map: [H, W] non-negative integer labels (numpy or torch), at most 65535.
    """
    from PIL import Image

    arr = label_map.cpu().numpy() if isinstance(label_map, torch.Tensor) else np.asarray(label_map)
    if arr.ndim != 2:
        raise ValueError(f"label_map must be [H, W], got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise ValueError(f"labels must be in 0..65535, got [{arr.min()}, {arr.max()}]")
    if arr.size == 0 or arr.max() < 256:
        image = Image.fromarray(arr.astype(np.uint8))  # 8-bit grayscale ("L")
    else:
        image = Image.fromarray(arr.astype(np.uint16))  # 16-bit grayscale ("I;16")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def load_label_map(path: str | Path) -> np.ndarray:
    """Read a label map written by :func:`save_label_map`; returns [H, W] int64."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image).astype(np.int64)


def encode_rle(mask: np.ndarray | torch.Tensor) -> dict[str, Any]:
    """COCO run-length encoding of one binary mask.

    Args:
        mask: bool [H, W] (numpy or torch).

    Returns:
        ``{"size": [H, W], "counts": str}``: compressed COCO RLE (column-major, as pycocotools),
        with ``counts`` decoded to a UTF-8 string so that it can be written as JSON.
    """
    arr = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {arr.shape}")
    rle = mask_utils.encode(np.asfortranarray(arr.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("utf-8")}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_rle`; also reads uncompressed RLE (``counts`` a list of ints).

    Returns:
        bool [H, W] mask.
    """
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, list):
        compressed = mask_utils.frPyObjects(rle, h, w)
    else:
        compressed = {"size": [h, w], "counts": counts.encode("utf-8") if isinstance(counts, str) else counts}
    return decode_masks(compressed).astype(bool)


def instances_to_json(
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    scores: Sequence[float] | np.ndarray | torch.Tensor,
    boxes: np.ndarray | torch.Tensor,
    masks: np.ndarray | torch.Tensor,
    class_names: Sequence[str],
) -> list[dict[str, Any]]:
    """Part instances of one image as JSON-ready dicts.

    Args:
        labels: [K] part classes in 0..C-1.
        scores: [K] query scores in [0, 1].
        boxes: [K, 4] XYXY boxes in pixels, original frame.
        masks: bool [K, H, W] masks, original frame.
        class_names: the C part names, indexed by class.

    Returns:
        K dicts ``{"class_id": int (0-based), "class_name": str, "score": float,
        "box_xyxy": [x0, y0, x1, y1], "segmentation": COCO RLE (see :func:`encode_rle`),
        "area": int (mask pixels)}``.
    """

    def to_numpy(x: Any) -> np.ndarray:
        return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    labels_np, scores_np = to_numpy(labels).astype(np.int64), to_numpy(scores).astype(np.float64)
    boxes_np, masks_np = to_numpy(boxes).astype(np.float64), to_numpy(masks).astype(bool)
    k = labels_np.shape[0]
    if scores_np.shape != (k,) or boxes_np.shape != (k, 4) or masks_np.ndim != 3 or masks_np.shape[0] != k:
        raise ValueError(
            f"expected labels [K], scores [K], boxes [K, 4], masks [K, H, W] with one K; got "
            f"{labels_np.shape}, {scores_np.shape}, {boxes_np.shape}, {masks_np.shape}"
        )
    if k and (labels_np.min() < 0 or labels_np.max() >= len(class_names)):
        raise ValueError(f"labels must be in 0..{len(class_names) - 1}, got {labels_np.tolist()}")
    instances = []
    for i in range(k):
        instances.append(
            {
                "class_id": int(labels_np[i]),
                "class_name": class_names[labels_np[i]],
                "score": float(scores_np[i]),
                "box_xyxy": [float(v) for v in boxes_np[i]],
                "segmentation": encode_rle(masks_np[i]),
                "area": int(masks_np[i].sum()),
            }
        )
    return instances


def prediction_record(file: str, height: int, width: int, instances: Sequence[Any]) -> dict[str, Any]:
    """One image's entry of ``predictions.json`` (``wps-sam predict``, ``wps-sam serve``) from the
    :class:`~wps_sam.predictor.PartInstanceResult` of its parts (original frame)."""
    return {
        "file": file,
        "height": int(height),
        "width": int(width),
        "instances": [
            {
                "class_id": inst.class_id,
                "class_name": inst.class_name,
                "score": round(inst.score, 5),
                "box_xyxy": [float(v) for v in inst.box_xyxy],
                "segmentation": encode_rle(inst.mask),
            }
            for inst in instances
        ],
    }


def save_instances_json(path: str | Path, instances: list[dict[str, Any]]) -> Path:
    """Write the output of :func:`instances_to_json` (or a list of them) atomically as JSON."""
    return atomic_write_json(path, instances)
