"""COCO part annotations in the PartImageNet layout, read into a typed index.

Layout (PartImageNet)::

    ROOT/images/<split>/<file_name>            (or ROOT/images/<split>/<synset>/<file_name>)
    ROOT/annotations/<split>/<split>.json      (or ROOT/annotations/<split>.json)

Everything here is in the *original* frame of the json (pixels, XYXY boxes). Faulty annotations do
not stop loading: they are skipped or repaired, and each decision is recorded with its reason on the
index (``skipped_images``, ``skipped_annotations``, ``repaired``) so that a triage step can report
them. Only problems that make the whole split unusable raise :class:`~wps_sam.errors.DataError`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from wps_sam.data.coco_json import as_int, find_annotation_file, read_annotation_json
from wps_sam.data.coco_segmentation import clean_segmentation, segmentation_rle
from wps_sam.data.images import image_size, pixel_limit
from wps_sam.data.rle import decode_masks
from wps_sam.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class PartInstance:
    """One annotated part.

    ``box``: (4,) float32 XYXY in pixels, original frame, clipped to the image; ``None`` for a part
    labelled by a point only (no box and no mask in the json).
    ``segmentation``: raw COCO polygons (list of flat [x0, y0, x1, y1, ...] lists, several for a part
    made of pieces) or an RLE dict (``counts`` as a compressed string or an uncompressed list);
    ``None`` when the json has no usable mask (boxes-only data). ``is_polygon`` tells which.
    ``iscrowd``: the json's flag (int or bool there); crowd parts are kept, consumers may drop them.
    ``point``: (2,) float32 (X, Y) in pixels, original frame: the annotated click of the part (the
    json's ``point: [x, y]``, else the first labelled COCO ``keypoints`` triple), ``None`` if none.
    """

    ann_id: int
    label: int
    box: np.ndarray | None
    segmentation: list | dict | None
    is_polygon: bool
    iscrowd: bool = False
    point: np.ndarray | None = None

    @property
    def has_box(self) -> bool:
        """False for a part labelled by a point only."""
        return self.box is not None


@dataclass
class ImageEntry:
    """One image of a split; ``height`` and ``width`` are the json's (original frame)."""

    image_id: int
    file_name: str
    path: Path
    height: int
    width: int
    parts: list[PartInstance] = field(default_factory=list)


@dataclass
class PartDataIndex:
    """A split: its classes and images, plus what loading skipped or repaired.

    ``class_names[k]`` is the name of label k; ``category_ids[k]`` its json category id (-1 when a
    run's class is absent from this json). Records are dicts with ``image_id``, ``ann_id`` (absent
    for image records), ``file_name`` (image records) and ``reason``.
    """

    root: Path
    split: str
    class_names: list[str]
    category_ids: list[int]
    images: list[ImageEntry]
    skipped_images: list[dict] = field(default_factory=list)
    skipped_annotations: list[dict] = field(default_factory=list)
    repaired: list[dict] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_parts(self) -> int:
        return sum(len(entry.parts) for entry in self.images)

    @property
    def num_point_only(self) -> int:
        """Parts labelled by a point only (no box, no mask)."""
        return sum(not part.has_box for entry in self.images for part in entry.parts)

    @property
    def has_masks(self) -> bool:
        """True iff *every* kept part has a segmentation (vacuously True for a split without parts).

        "Any part" would let evaluation treat unmasked parts as background and report wrong numbers.
        """
        return all(part.segmentation is not None for entry in self.images for part in entry.parts)


def _resolve_path(image_dir: Path, file_name: str) -> Path | None:
    # PartImageNet's json names "n01440764_10029.JPEG" while the file sits in a synset folder.
    try:
        direct = image_dir / file_name
        if direct.is_file():
            return direct
        name = Path(file_name).name
        nested = image_dir / name.split("_")[0] / name
        return nested if nested.is_file() else None
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return None


def _plausible_size(height: int | None, width: int | None) -> bool:
    """A json height/width that can describe an image (not a decompression bomb)."""
    return bool(height and width and height > 0 and width > 0 and height * width <= pixel_limit())


def _label_map(
    categories: list[Any], class_names: list[str] | None, used_ids: set[int], path: Path
) -> tuple[dict[int, int], list[str], list[int]]:
    """Category id -> label, with the class names and category ids per label."""
    names: dict[int, str] = {}
    for cat in categories:
        cat_id = as_int(cat.get("id")) if isinstance(cat, dict) else None
        if cat_id is None or not isinstance(cat.get("name"), str):
            raise DataError(f"{path}: category {cat!r} needs an integer 'id' and a string 'name'")
        if cat_id in names:
            raise DataError(f"{path}: category id {cat_id} appears twice")
        names[cat_id] = cat["name"]
    if class_names is None:
        ids = sorted(names)
        return {c: k for k, c in enumerate(ids)}, [names[c] for c in ids], ids
    if len(set(class_names)) != len(class_names):
        raise DataError(f"class names of the run are not unique: {class_names}")
    label_of_name = {n: k for k, n in enumerate(class_names)}
    unknown = sorted({names[c] for c in used_ids & names.keys() if names[c] not in label_of_name})
    if unknown:
        raise DataError(f"{path}: categories used by annotations are not classes of the run: {unknown}")
    mapping = {c: label_of_name[n] for c, n in names.items() if n in label_of_name}
    ids_of_name = {n: c for c, n in sorted(names.items(), reverse=True)}  # lowest id wins
    return mapping, list(class_names), [ids_of_name.get(n, -1) for n in class_names]


def _is_finite_number(v: Any) -> bool:
    try:
        return isinstance(v, (int, float)) and math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def _parse_box(bbox: Any, height: int, width: int) -> tuple[np.ndarray | None, str | None]:
    """COCO [x, y, w, h] -> clipped XYXY, or (None, why). A clipped box comes with a note."""
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
        return None, "no bbox" if bbox is None else f"malformed bbox {bbox!r}"
    if not all(_is_finite_number(v) for v in bbox):
        return None, f"non-finite bbox {list(bbox)}"
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return None, f"bbox of zero area {list(bbox)}"
    box = (x, y, x + w, y + h)
    clipped = tuple(min(max(v, 0.0), limit) for v, limit in zip(box, (width, height, width, height)))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None, f"bbox {list(bbox)} wholly outside the {width}x{height} image"
    note = None if box == clipped else f"bbox {list(bbox)} clipped to the image"
    return np.array(clipped, dtype=np.float32), note


def _parse_point(ann: dict, height: int, width: int) -> tuple[np.ndarray | None, str | None]:
    """The annotated click of a part: ``point: [x, y]``, else the first COCO ``keypoints`` triple
    ``[x, y, v]`` with v > 0; (None, None) when the json gives neither, (None, why) when it is unusable.
    """
    if "point" in ann:
        xy, what = ann["point"], "point"
    elif "keypoints" in ann:
        kp, what = ann["keypoints"], "keypoints"
        if not (isinstance(kp, list) and len(kp) % 3 == 0 and all(_is_finite_number(v) for v in kp)):
            return None, f"malformed keypoints {kp!r}"
        xy = next((kp[i : i + 2] for i in range(0, len(kp), 3) if kp[i + 2] > 0), None)
        if xy is None:
            return None, "no labelled keypoint"
    else:
        return None, None
    if not (isinstance(xy, (list, tuple)) and len(xy) == 2 and all(_is_finite_number(v) for v in xy)):
        return None, f"malformed {what} {xy!r}"
    x, y = float(xy[0]), float(xy[1])
    if not (0 <= x <= width and 0 <= y <= height):
        return None, f"{what} ({x:g}, {y:g}) outside the {width}x{height} image"
    return np.array([x, y], dtype=np.float32), None


def _parse_part(
    ann: dict, image_id: int, label: int, height: int, width: int, repaired: list[dict]
) -> PartInstance | str:
    """The part of one annotation, or the reason to skip it."""
    ann_id = as_int(ann.get("id"))
    ann_id = -1 if ann_id is None else ann_id
    record = {"image_id": image_id, "ann_id": ann_id}
    point, point_note = _parse_point(ann, height, width)
    if point_note and (ann.get("bbox") is not None or ann.get("segmentation")):
        repaired.append({**record, "reason": f"{point_note}; the point is ignored"})
    if ann.get("bbox") is None and not ann.get("segmentation") and (point is not None or point_note):
        # A part labelled by a point only (mixed supervision): no box, no mask.
        if point is None:
            return point_note
        return PartInstance(ann_id, label, None, None, False, bool(ann.get("iscrowd", False)), point)
    seg, is_polygon, note = clean_segmentation(ann.get("segmentation"))
    if note and seg is None:
        return note  # a mask was given but none is usable: the part cannot be evaluated
    if note:
        repaired.append({**record, "reason": note})
    if seg is not None and not is_polygon and seg["size"] != [height, width]:
        reason = f"RLE of size {seg['size']} on a {height}x{width} image; masks are resized to the image"
        repaired.append({**record, "reason": reason})
    box, box_note = _parse_box(ann.get("bbox"), height, width)
    if box is None and seg is not None:
        x, y, w, h = mask_utils.toBbox(segmentation_rle(seg, is_polygon, height, width)).tolist()
        if not is_polygon:  # an RLE of another size than the image: its box in the image's frame
            sy, sx = height / seg["size"][0], width / seg["size"][1]
            x, y, w, h = x * sx, y * sy, w * sx, h * sy
        box, _ = _parse_box([x, y, w, h], height, width)
        if box is not None and ann.get("bbox") is not None:
            repaired.append({**record, "reason": f"{box_note}; box taken from the segmentation"})
    elif box is not None and box_note:
        repaired.append({**record, "reason": box_note})
    if box is None:
        return box_note if seg is None else f"{box_note} and an empty segmentation"
    return PartInstance(ann_id, label, box, seg, is_polygon, bool(ann.get("iscrowd", False)), point)


def _read_images(images: list, image_dir: Path, index: PartDataIndex, path: Path) -> dict[int, ImageEntry]:
    """The json's image records that name a file: id -> entry; the others go to ``index.skipped_images``."""
    by_id: dict[int, ImageEntry] = {}
    for img in images:
        img = img if isinstance(img, dict) else {}
        image_id, file_name = as_int(img.get("id")), img.get("file_name")
        record = {"image_id": img.get("id"), "file_name": file_name}
        if image_id is None or not isinstance(file_name, str) or not file_name:
            index.skipped_images.append({**record, "reason": "needs an integer 'id' and a 'file_name'"})
            continue
        if image_id in by_id:
            index.skipped_images.append({**record, "reason": f"duplicate image id {image_id}"})
            continue
        file_path = _resolve_path(image_dir, file_name)
        if file_path is None:
            index.skipped_images.append({**record, "reason": f"file not found under {image_dir}"})
            continue
        height, width = as_int(img.get("height")), as_int(img.get("width"))
        if not _plausible_size(height, width):
            try:
                height, width = image_size(file_path)
            except DataError as e:
                index.skipped_images.append({**record, "reason": str(e)})
                continue
            index.repaired.append({"image_id": image_id, "reason": "height/width read from the file"})
        by_id[image_id] = ImageEntry(image_id, file_name, file_path, height, width, [])
    if images and not by_id:
        raise DataError(
            f"none of the {len(images)} images of {path} could be used, e.g. "
            f"{index.skipped_images[0]['file_name']!r}: {index.skipped_images[0]['reason']}"
        )
    return by_id


def load_split(root: str | Path, split: str, class_names: list[str] | None = None) -> PartDataIndex:
    """Read one split of a data set in the PartImageNet layout.

    Labels are 0..C-1 in order of ascending category id, named after the json's categories. With
    ``class_names`` (the classes of a trained run) categories are mapped by name instead; a category
    that annotations use but the run does not know raises :class:`DataError`.
    Images without annotations are kept with zero parts.
    """
    root = Path(root)
    path = find_annotation_file(root, split)
    data = read_annotation_json(path)
    image_dir = root / "images" / split
    if not image_dir.is_dir():
        raise DataError(f"image folder {image_dir} does not exist (annotations: {path})")
    anns = [a for a in data["annotations"] if isinstance(a, dict)]
    used = {c for c in (as_int(a.get("category_id")) for a in anns) if c is not None}
    label_of, names, cat_ids = _label_map(data["categories"], class_names, used, path)
    index = PartDataIndex(root, split, names, cat_ids, [])
    index.skipped_annotations += [
        {"image_id": None, "ann_id": None, "reason": f"annotation of type {type(a).__name__}, not an object"}
        for a in data["annotations"]
        if not isinstance(a, dict)
    ]

    by_id = _read_images(data["images"], image_dir, index, path)
    skipped_ids = {as_int(r["image_id"]) for r in index.skipped_images} - by_id.keys() - {None}
    for ann in anns:
        image_id, cat_id = as_int(ann.get("image_id")), as_int(ann.get("category_id"))
        entry = by_id.get(image_id)
        if entry is None and image_id in skipped_ids:
            reason = "its image is skipped"
        elif entry is None:
            reason = f"unknown image id {ann.get('image_id')!r}"
        elif cat_id not in label_of:
            reason = f"unknown category id {ann.get('category_id')!r}"
        else:
            part = _parse_part(ann, image_id, label_of[cat_id], entry.height, entry.width, index.repaired)
            if isinstance(part, PartInstance):
                entry.parts.append(part)
                continue
            reason = part
        index.skipped_annotations.append(
            {"image_id": ann.get("image_id"), "ann_id": ann.get("id"), "reason": reason}
        )
    index.images = list(by_id.values())
    skipped = len(index.skipped_images) + len(index.skipped_annotations)
    if skipped:  # info only: callers summarise the records in one line (wps_sam.data.checks)
        logger.info(
            "%s: skipped %d image(s) and %d annotation(s); see the index's records",
            path,
            len(index.skipped_images),
            len(index.skipped_annotations),
        )
    logger.info(
        "%s: %d images, %d parts, %d classes", path, len(index.images), index.num_parts, index.num_classes
    )
    return index


def instance_mask(part: PartInstance, height: int, width: int) -> np.ndarray:
    """Bool [height, width] mask of ``part`` (polygons merged; RLE of another size resized nearest)."""
    if part.segmentation is None:
        raise DataError(f"part {part.ann_id} has no segmentation")
    rle = segmentation_rle(part.segmentation, part.is_polygon, height, width)
    mask = decode_masks(rle).astype(bool)
    if mask.shape != (height, width):
        rows = ((np.arange(height) + 0.5) * mask.shape[0] / height).astype(np.int64)
        cols = ((np.arange(width) + 0.5) * mask.shape[1] / width).astype(np.int64)
        mask = mask[rows[:, None], cols[None, :]]
    return mask


def rescale_entry(entry: ImageEntry, height: int, width: int) -> ImageEntry:
    """``entry`` with its annotations scaled to an image of ``height`` x ``width`` (RLEs resize lazily)."""
    sx, sy = width / entry.width, height / entry.height
    parts = []
    for p in entry.parts:
        seg = p.segmentation
        if p.is_polygon:
            seg = [[v * (sx if i % 2 == 0 else sy) for i, v in enumerate(poly)] for poly in seg]
        box = None if p.box is None else (p.box * np.array([sx, sy, sx, sy])).astype(np.float32)
        point = None if p.point is None else (p.point * np.array([sx, sy])).astype(np.float32)
        parts.append(PartInstance(p.ann_id, p.label, box, seg, p.is_polygon, p.iscrowd, point))
    return ImageEntry(entry.image_id, entry.file_name, entry.path, height, width, parts)


def mirror_entry(entry: ImageEntry) -> ImageEntry:
    """``entry`` mirrored left-right: the annotations of the horizontally flipped image.

    Polygon x-coordinates (pixel corners) become ``width - x``; an RLE mask is decoded, flipped and
    encoded again; a box XYXY becomes ``(width - x1, y0, width - x0, y1)``; a point (X, Y) becomes
    ``(width - X, Y)``.
    """
    w = entry.width
    parts = []
    for p in entry.parts:
        seg = p.segmentation
        if seg is not None and p.is_polygon:
            seg = [[w - v if i % 2 == 0 else v for i, v in enumerate(poly)] for poly in seg]
        elif seg is not None:
            flipped = np.asfortranarray(instance_mask(p, entry.height, w)[:, ::-1], dtype=np.uint8)
            rle = mask_utils.encode(flipped)
            seg = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
        box = (
            None if p.box is None else np.array([w - p.box[2], p.box[1], w - p.box[0], p.box[3]], np.float32)
        )
        point = None if p.point is None else np.array([w - p.point[0], p.point[1]], np.float32)
        parts.append(PartInstance(p.ann_id, p.label, box, seg, p.is_polygon, p.iscrowd, point))
    return ImageEntry(entry.image_id, entry.file_name, entry.path, entry.height, w, parts)
