"""Small random data sets in the PartImageNet layout, for tests of any module.

``write_part_dataset(tmp_path, "train", 4)`` writes ``images/train/*.png`` and
``annotations/train/train.json`` with rectangular parts, and returns the json's path. Options cover
what real COCO exports contain (see the function's docstring). Everything is seeded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

from wps_sam.data.coco import PartInstance, instance_mask

SEGMENTATIONS = ("polygon", "rle", "rle_uncompressed", "none", "mixed")


def rectangle_polygon(x0: int, y0: int, x1: int, y1: int) -> list[float]:
    """Flat COCO polygon of the rectangle with corners (x0, y0) and (x1, y1), pixels."""
    return [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO RLE with a list of counts (column-major runs, starting with background) of bool [H, W]."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def _encode(polygons: list[list[float]], height: int, width: int, kind: str) -> list | dict:
    if kind == "polygon":
        return polygons
    mask = instance_mask(PartInstance(0, 0, np.zeros(4, np.float32), polygons, True), height, width)
    if kind == "rle_uncompressed":
        return uncompressed_rle(mask)
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def write_part_dataset(
    root: Path,
    split: str,
    n_images: int,
    *,
    segmentation: str = "polygon",
    multi_polygon: bool = False,
    category_ids: tuple[int, ...] = (1, 2, 3),
    unused_category: bool = False,
    empty_images: int = 0,
    iscrowd_bool: bool = False,
    with_bbox: bool = True,
    flat_layout: bool = False,
    synset_folders: bool = False,
    size_range: tuple[int, int] = (24, 48),
    max_parts: int = 3,
    seed: int = 0,
) -> Path:
    """Write ``n_images`` random RGB PNGs and their COCO json under ``root``; return the json path.

    ``segmentation``: "polygon", "rle" (compressed string counts), "rle_uncompressed" (list counts),
    "none" (boxes only, no ``segmentation`` key) or "mixed" (cycles polygon / rle / rle_uncompressed).
    ``multi_polygon``: every part is two disjoint rectangles. ``category_ids``: the json ids of the
    part classes (names "part<id>"); ``unused_category`` adds one more (id max+10) that no annotation
    uses. The last ``empty_images`` images have no annotations. ``iscrowd_bool`` writes ``false``
    instead of 0. ``with_bbox=False`` omits ``bbox``. ``flat_layout`` writes
    ``annotations/<split>.json``; ``synset_folders`` stores files as PartImageNet does
    (``images/<split>/<synset>/<file_name>`` while the json names only ``<file_name>``).
    Parts are rectangles of at least 4 x 4 pixels; every image has 1..``max_parts`` parts.
    """
    if segmentation not in SEGMENTATIONS:
        raise ValueError(f"segmentation must be one of {SEGMENTATIONS}")
    rng = np.random.default_rng(seed)
    root = Path(root)
    image_dir = root / "images" / split
    categories = [{"id": c, "name": f"part{c}", "supercategory": "thing"} for c in category_ids]
    if unused_category:
        categories.append({"id": max(category_ids) + 10, "name": "unused", "supercategory": "thing"})
    images, annotations = [], []
    for k in range(n_images):
        height, width = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
        synset = f"n{k % 2:08d}"
        file_name = f"{synset}_{k}.png" if synset_folders else f"img_{k:04d}.png"
        path = image_dir / synset / file_name if synset_folders else image_dir / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)).save(path)
        images.append({"id": 100 + k, "file_name": file_name, "height": height, "width": width})
        if k >= n_images - empty_images:
            continue
        for _ in range(int(rng.integers(1, max_parts + 1))):
            polygons = []
            for _ in range(2 if multi_polygon else 1):
                # Two pieces go to the left and right halves so that they never overlap.
                lo, hi = (
                    (0, width)
                    if not multi_polygon
                    else ((0, width // 2) if not polygons else (width // 2, width))
                )
                x0 = int(rng.integers(lo, hi - 4))
                x1 = int(rng.integers(x0 + 4, hi + 1))
                y0 = int(rng.integers(0, height - 4))
                y1 = int(rng.integers(y0 + 4, height + 1))
                polygons.append(rectangle_polygon(x0, y0, x1, y1))
            n = len(annotations)
            kind = ("polygon", "rle", "rle_uncompressed")[n % 3] if segmentation == "mixed" else segmentation
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
            ann = {
                "id": 1000 + n,
                "image_id": 100 + k,
                "category_id": int(category_ids[int(rng.integers(len(category_ids)))]),
                "area": float(mask_utils.area(rle)),
                "iscrowd": False if iscrowd_bool else 0,
            }
            if with_bbox:
                ann["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
            if kind != "none":
                ann["segmentation"] = _encode(polygons, height, width, kind)
            annotations.append(ann)
    json_path = root / "annotations" / (f"{split}.json" if flat_layout else f"{split}/{split}.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    data = {"images": images, "annotations": annotations, "categories": categories}
    json_path.write_text(json.dumps(data))
    return json_path
