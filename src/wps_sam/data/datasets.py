"""The torch data set of part annotations, in SAM's input frame.

Each item is an image preprocessed for SAM with its parts' weak labels (boxes and points) and,
for evaluation, their masks. Training never needs masks: a split without segmentations trains.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from wps_sam.data.coco import ImageEntry, PartDataIndex, instance_mask, mirror_entry, rescale_entry
from wps_sam.data.images import read_image
from wps_sam.data.targets import POINT_MODES, weak_points
from wps_sam.data.transforms import SamTransform
from wps_sam.errors import DataError

logger = logging.getLogger(__name__)

SUPERVISIONS = ("box", "point", "mixed")
TARGET_KEYS = (
    "labels", "boxes", "points", "has_box", "masks", "image_id", "index", "original_size", "input_size",
)  # fmt: skip


def check_supervision(index: PartDataIndex, supervision: str) -> None:
    """Raise :class:`DataError` when ``index`` cannot train from ``supervision``: box supervision
    needs a box for every part; a part labelled by a point only trains with ``point`` or ``mixed``."""
    if supervision not in SUPERVISIONS:
        raise ValueError(f"unknown supervision {supervision!r}; expected one of {SUPERVISIONS}")
    point_only = index.num_point_only
    if supervision == "box" and point_only:
        raise DataError(
            f"split '{index.split}' of {index.root}: {point_only} of {index.num_parts} parts are labelled "
            "by a point only; train with --supervision mixed (each part from its own label) or point"
        )


class PartSegmentationDataset(Dataset):
    """Images of a :class:`PartDataIndex`, preprocessed by a :class:`SamTransform`.

    Item ``i`` is a dict:

    * ``"image"``: float32 [3, S, S], normalised and padded (input frame);
    * ``"labels"``: int64 [N], part classes 0..C-1;
    * ``"boxes"``: float32 [N, 4] XYXY, input frame (NaN for a part labelled by a point only);
    * ``"points"``: float32 [N, 2] (X, Y), input frame, one per part (its annotated point, else
      ``point_mode``'s);
    * ``"has_box"``: bool [N], False for a part labelled by a point only;
    * ``"masks"``: bool [N, S, S], input frame, only when ``with_masks``;
    * ``"image_id"`` (json id), ``"index"`` (= i), ``"original_size"`` (H, W), ``"input_size"`` (h, w).

    Boxes and points are always both present; ``supervision`` ("box", "point" or "mixed": each part
    its own label) names the weak label that training prompts the teacher with. Points are computed
    once per image and cached (per process: with a DataLoader, use ``persistent_workers=True`` to
    keep the cache across epochs).
    When the image file's size differs from the json's height/width, the file wins: annotations are
    scaled to it and the repair is recorded in ``index.repaired`` (in the process that saw it).
    With ``mirrored`` every image and its annotations are flipped left-right (augmentation).
    """

    def __init__(
        self,
        index: PartDataIndex,
        transform: SamTransform,
        supervision: str = "box",
        point_mode: str = "interior",
        with_masks: bool = False,
        mirrored: bool = False,
    ) -> None:
        if supervision not in SUPERVISIONS:
            raise ValueError(f"unknown supervision {supervision!r}; expected one of {SUPERVISIONS}")
        if point_mode not in POINT_MODES:
            raise ValueError(f"unknown point mode {point_mode!r}; expected one of {POINT_MODES}")
        if with_masks and not index.has_masks:
            parts = [p for entry in index.images for p in entry.parts]
            missing = sum(p.segmentation is None for p in parts)
            what = (
                "no segmentation masks"
                if missing == len(parts)
                else (f"no segmentation masks for {missing} of {len(parts)} parts")
            )
            raise DataError(f"split '{index.split}' of {index.root} has {what}; evaluation needs masks")
        self.index = index
        self.transform = transform
        self.supervision = supervision
        self.point_mode = point_mode
        self.with_masks = with_masks
        self.mirrored = mirrored
        self._points: dict[int, np.ndarray] = {}  # image index -> [N, 2] original frame
        self._rescaled: set[int] = set()
        self._mirror: dict[tuple[int, int, int], ImageEntry] = {}  # (i, H, W) -> mirrored entry

    def __len__(self) -> int:
        return len(self.index.images)

    def _entry_for(self, i: int, height: int, width: int) -> ImageEntry:
        """The annotations of image ``i`` in the frame of its file, ``height`` x ``width`` (mirrored
        when the data set is)."""
        if not self.mirrored:
            return self._file_frame_entry(i, height, width)
        key = (i, height, width)
        if key not in self._mirror:  # mirrored once: RLE masks are decoded and encoded again
            self._mirror[key] = mirror_entry(self._file_frame_entry(i, height, width))
        return self._mirror[key]

    def _file_frame_entry(self, i: int, height: int, width: int) -> ImageEntry:
        entry = self.index.images[i]
        if (entry.height, entry.width) == (height, width):
            return entry
        if i not in self._rescaled:
            self._rescaled.add(i)
            reason = (
                f"json size {entry.height}x{entry.width} differs from the file's {height}x{width}; "
                "annotations scaled to the file"
            )
            self.index.repaired.append({"image_id": entry.image_id, "reason": reason})
            logger.warning("%s: %s", entry.path, reason)
        return rescale_entry(entry, height, width)

    def _points_of(self, i: int, entry: ImageEntry) -> np.ndarray:
        if i not in self._points:
            self._points[i] = weak_points(entry.parts, entry.height, entry.width, self.point_mode)
        return self._points[i]

    def targets(self, i: int, original_size: tuple[int, int]) -> dict[str, Any]:
        """Everything of item ``i`` but the image, for a file of ``original_size`` (H, W)."""
        entry = self._entry_for(i, *original_size)
        boxes = [np.full(4, np.nan) if p.box is None else p.box for p in entry.parts]
        t = self.transform
        item = {
            "labels": torch.tensor([p.label for p in entry.parts], dtype=torch.int64),
            "boxes": torch.from_numpy(
                t.apply_boxes(np.array(boxes, np.float32).reshape(-1, 4), original_size)
            ),
            "points": torch.from_numpy(t.apply_points(self._points_of(i, entry), original_size)),
            "has_box": torch.tensor([p.has_box for p in entry.parts], dtype=torch.bool),
            "image_id": entry.image_id,
            "index": i,
            "original_size": original_size,
            "input_size": t.input_size(original_size),
        }
        if self.with_masks:
            masks = np.zeros((len(entry.parts), *original_size), dtype=bool)
            for k, part in enumerate(entry.parts):
                masks[k] = instance_mask(part, *original_size)
            item["masks"] = t.apply_masks(masks, original_size)
        return item

    def read_image(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 [H, W, 3] RGB (mirrored when the data set is)."""
        image = read_image(self.index.images[i].path)
        return np.ascontiguousarray(image[:, ::-1]) if self.mirrored else image

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        image = self.read_image(i)
        item = self.targets(i, (int(image.shape[0]), int(image.shape[1])))
        item["image"] = self.transform.apply_image(image)
        return item


def collate_parts(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Items -> ``{"images": float32 [B, 3, S, S], "targets": list of B dicts}``.

    A target holds the item's labels, boxes, points, masks (if present), image_id, index,
    original_size and input_size; parts per image vary, so targets are not stacked (as in DETR).
    """
    return {
        "images": torch.stack([item["image"] for item in batch]),
        "targets": [{k: item[k] for k in TARGET_KEYS if k in item} for item in batch],
    }
