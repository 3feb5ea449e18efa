"""The paper protocol's ground truth, selected and resized as the official WPS-SAM evaluation does.

The official data loader reads the json with pycocotools, keeps an annotation iff its *raw* first
polygon has more than four values (``len(ann['segmentation'][0]) > 4``), rasterises it with
``COCO.annToMask`` and resizes the 0/1 mask with SAM's ``ResizeLongestSide.apply_image`` (PIL's
bilinear filter on uint8: every pixel rounds to 0 or 1). The standard protocol keeps the loader's clean
parsing (:mod:`wps_sam.data.coco`); this one does not clean, so that, unlike the standard protocol,

* a part whose raw first polygon has 2 points is not scored, though the loader kept its other pieces;
* a first polygon with an odd number of values is scored (pycocotools ignores the last value);
* a zero-area polygon is scored, as an empty mask, whatever its json box.

Where the official code would crash or read out of bounds, this one leaves out: a part whose first
polygon pycocotools cannot rasterise safely (non-numeric or non-finite values, an absurd outline) or
that is an RLE (``segmentation[0]`` fails on a dict), later pieces of that kind, and parts of images
or categories the loader did not keep.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pycocotools.mask as mask_utils
import torch
from PIL import Image

from ..data.coco import PartDataIndex
from ..data.coco_json import as_int, find_annotation_file, read_annotation_json
from ..data.coco_segmentation import rasterisable_outline
from ..data.images import pixel_limit
from ..data.rle import decode_masks
from ..data.transforms import SamTransform


@dataclass(frozen=True)
class PaperPart:
    """An annotation of the official selection: its id, label (0..C-1) and raw polygons."""

    ann_id: int | None
    label: int
    polygons: list[list[float]]


def official_selection(seg: object) -> list[list[float]] | None:
    """The polygons of a raw ``segmentation`` that the official loader scores, or None if it drops it."""
    if not isinstance(seg, list) or not seg or not isinstance(seg[0], list) or len(seg[0]) <= 4:
        return None
    if not rasterisable_outline(seg[0]):
        return None
    # The first polygon stays first: pycocotools reads a list whose first item has 4 values as boxes.
    return [seg[0], *(p for p in seg[1:] if rasterisable_outline(p))]


class PaperGroundTruth:
    """Per image of ``index``, the official selection of its parts and their masks in the input frame."""

    def __init__(self, index: PartDataIndex, image_size: int) -> None:
        data = read_annotation_json(find_annotation_file(index.root, index.split))
        label_of = {cat: k for k, cat in enumerate(index.category_ids) if cat >= 0}
        # The canvas of each image's polygons is the json's size, as annToMask draws them (the
        # loader may have rescaled an entry to its file; the official code never does). A json size
        # beyond the decompression-bomb limit is not allocated: the file's size stands in.
        self.canvas = {entry.image_id: (entry.height, entry.width) for entry in index.images}
        for img in data["images"]:
            image_id = as_int(img.get("id")) if isinstance(img, dict) else None
            h, w = (as_int(img.get(k)) for k in ("height", "width")) if image_id is not None else (None, None)
            if image_id in self.canvas and h and w and h > 0 and w > 0 and h * w <= pixel_limit():
                self.canvas[image_id] = (h, w)
        kept = set(self.canvas)
        self.transform = SamTransform(image_size)
        self.parts: dict[int, list[PaperPart]] = defaultdict(list)
        for ann in data["annotations"]:
            if not isinstance(ann, dict):
                continue
            image_id, label = as_int(ann.get("image_id")), label_of.get(as_int(ann.get("category_id")))
            polygons = official_selection(ann.get("segmentation"))
            if image_id in kept and label is not None and polygons is not None:
                self.parts[image_id].append(PaperPart(as_int(ann.get("id")), label, polygons))

    def masks(
        self,
        image_id: int,
        image_shape: tuple[int, int],
        decoded: Mapping[int, tuple[list, np.ndarray]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Bool masks [N, S, S] (input frame, padded at the bottom and right) and labels [N] of an image.

        Args:
            image_shape: (height, width) of the image file, whose input frame the masks are resized to.
            decoded: ann id -> (polygons, bool [H, W] mask) already rasterised on the json's canvas; a
                part with the same id, the same polygons and that canvas is not rasterised again.
        """
        parts = self.parts.get(image_id, [])
        canvas = self.canvas.get(image_id, image_shape)
        size = self.transform.image_size
        input_size = self.transform.input_size(image_shape)
        out = torch.zeros(len(parts), size, size, dtype=torch.bool)
        for k, part in enumerate(parts):
            known = (decoded or {}).get(part.ann_id)
            if known is not None and known[0] == part.polygons and known[1].shape == canvas:
                mask = known[1].astype(np.uint8)
            else:
                mask = decode_masks(mask_utils.merge(mask_utils.frPyObjects(part.polygons, *canvas)))
            out[k] = resized_like_sam(mask, input_size, size)
        return out, torch.tensor([p.label for p in parts], dtype=torch.long)


def resized_like_sam(mask: np.ndarray, input_size: tuple[int, int], image_size: int) -> torch.Tensor:
    """uint8 0/1 [H, W] -> bool [S, S]: ``ResizeLongestSide.apply_image`` to ``input_size`` (PIL
    bilinear; each pixel rounds to 0 or 1), padded at the bottom and right to ``image_size``."""
    h, w = input_size
    out = torch.zeros(image_size, image_size, dtype=torch.bool)
    resized = np.array(Image.fromarray(mask).resize((w, h), Image.BILINEAR))
    out[:h, :w] = torch.from_numpy(resized > 0)
    return out
