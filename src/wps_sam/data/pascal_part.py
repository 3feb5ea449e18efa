"""The official Pascal-Part release converted into the PartImageNet layout.

Input: VOC2010 (``JPEGImages/<id>.jpg``, ``ImageSets/Main/<split>.txt``) and Pascal-Part's
``Annotations_Part/<id>.mat`` (Chen et al., CVPR 2014): a struct ``anno`` whose ``objects`` carry
``class``, ``class_ind``, ``mask`` (HxW uint8, image frame) and ``parts`` (``part_name``, ``mask``;
possibly empty). Pascal-Part annotates VOC2010 trainval, so a split is the images of VOC's list that
have a ``.mat``. Output::

    OUT/images/<split>/<id>.jpg              hard links to VOC's JPEGs (copies where links fail)
    OUT/annotations/<split>/<split>.json     COCO: compressed-RLE masks, category ids 0..K-1

One annotation per (object, group) of the grouping (:mod:`wps_sam.data.pascal_part_groupings`):
several objects of a class stay separate; the pieces of a group within one object are merged. The
parts of an object are painted in file order and **a later part wins** where two overlap, so a pixel
belongs to one group only. ``rest`` is the object's pixels that no part of it covers, whatever that
part's name (an unknown part never turns into, say, a tvmonitor frame), and only for objects with a
usable part; ``whole`` is the object mask.
Skipped and counted: parts with unknown names, objects of classes the grouping leaves out, objects
without parts (a class with part groups then yields nothing), empty masks, masks of another shape than
the image, unreadable or malformed ``.mat`` files and missing JPEGs (their images are skipped). Images
left with no annotation are not written (for ``person-part-6`` this keeps the images with people, as
Pascal-Person-Part does). The json of a split is written last and atomically.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wps_sam.atomic import atomic_write_text
from wps_sam.data.images import image_size
from wps_sam.data.pascal_part_groupings import GROUPINGS, WHOLE, ClassGroups, Grouping, part_group
from wps_sam.errors import ConfigError, DataError

__all__ = ["PartObject", "category_names", "convert_pascal_part", "read_part_annotation"]

logger = logging.getLogger(__name__)

_VOC_SUBDIRS = (".", "VOC2010", "VOCdevkit/VOC2010")


@dataclass
class PartObject:
    """One annotated object: its VOC class, HxW bool mask, and (raw part name, HxW bool mask) in file order."""

    cls: str
    mask: np.ndarray
    parts: list[tuple[str, np.ndarray]]


@dataclass
class _Tally:
    """What conversion skipped, over all splits."""

    unknown_parts: Counter = field(default_factory=Counter)  # "<class> <raw name>" -> parts
    other_classes: Counter = field(default_factory=Counter)  # class -> objects not converted
    objects_without_parts: int = 0
    empty_masks: int = 0
    masks_skipped: list[dict] = field(default_factory=list)


def _group_names(table: ClassGroups) -> list[str]:
    """The groups of a class in category order: its groups, then a rest group of its own, or whole."""
    names = list(table.groups)
    if table.rest and table.rest not in names:
        names.append(table.rest)
    return [*names, WHOLE] if table.whole else names


def category_names(grouping: Grouping) -> list[str]:
    """``"<class> <group>"`` for every group of ``grouping``; index k is category id k."""
    return [f"{cls} {group}" for cls, table in grouping.items() for group in _group_names(table)]


def _structs(value: Any) -> list:
    """The structs of a loadmat struct array, any shape ((1, N), (N, 1), (0, 0) when empty)."""
    from scipy.io.matlab import mat_struct

    items = np.asarray(value, dtype=object).ravel().tolist()
    if not all(isinstance(item, mat_struct) for item in items):
        raise DataError(f"expected a struct array, got {type(value).__name__}")
    return items


def _field(struct: Any, name: str) -> Any:
    if name not in getattr(struct, "_fieldnames", ()):
        raise DataError(f"a struct without the field '{name}'")
    return getattr(struct, name)


def _text(value: Any) -> str:
    array = np.asarray(value)
    if array.dtype.kind != "U":
        raise DataError(f"expected a string, got {array.dtype}")
    return "".join(array.ravel().tolist()).strip()


def _mask(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 2 or array.dtype.kind not in "biuf":
        raise DataError(f"a mask must be a 2-D numeric array, got {array.dtype} of shape {array.shape}")
    return array != 0


def read_part_annotation(path: Path) -> list[PartObject]:
    """The objects of one ``Annotations_Part`` file; :class:`DataError` if it is unreadable or malformed."""
    from scipy.io import loadmat

    try:
        data = loadmat(path, struct_as_record=False, squeeze_me=False)
    except Exception as e:  # a corrupt or foreign file can raise anything in scipy's readers
        raise DataError(f"unreadable .mat {path.name} ({type(e).__name__}: {e})") from e
    try:
        anno = _structs(data.get("anno", np.zeros((0, 0))))
        if len(anno) != 1:
            raise DataError(f"expected one struct 'anno', found {len(anno)}")
        objects = []
        for obj in _structs(_field(anno[0], "objects")):
            parts = [
                (_text(_field(p, "part_name")), _mask(_field(p, "mask")))
                for p in _structs(_field(obj, "parts"))
            ]
            objects.append(PartObject(_text(_field(obj, "class")), _mask(_field(obj, "mask")), parts))
    except DataError as e:
        raise DataError(f"malformed .mat {path.name}: {e}") from e
    return objects


def _group_masks(
    obj: PartObject, table: ClassGroups, shape: tuple[int, int], where: dict, tally: _Tally
) -> dict[str, np.ndarray]:
    """Group name -> HxW bool mask of one object, by the rules of the module docstring."""
    if obj.mask.shape != shape:
        tally.masks_skipped.append({**where, "reason": f"object mask {obj.mask.shape} on a {shape} image"})
        return {}
    if not obj.mask.any():
        tally.empty_masks += 1
        return {}
    if table.whole:
        return {WHOLE: obj.mask}
    if not obj.parts:
        tally.objects_without_parts += 1
        return {}
    names = _group_names(table)
    labels = np.zeros(shape, np.int16)  # 0: no group; k: names[k - 1]
    covered = np.zeros(shape, bool)
    for name, mask in obj.parts:
        if mask.shape != shape:
            tally.masks_skipped.append(
                {**where, "part": name, "reason": f"mask {mask.shape} on a {shape} image"}
            )
            continue
        if not mask.any():
            tally.empty_masks += 1
            continue
        covered |= mask
        group = part_group(table, name)
        if group is None:
            tally.unknown_parts[f"{obj.cls} {name}"] += 1
            continue
        labels[mask] = names.index(group) + 1  # painter's order: a later part wins
    if table.rest and covered.any():  # without a usable part the rest would be the whole object
        labels[obj.mask & ~covered] = names.index(table.rest) + 1
    groups = {group: labels == k for k, group in enumerate(names, start=1)}
    return {group: mask for group, mask in groups.items() if mask.any()}


def _annotations(
    objects: list[PartObject],
    grouping: Grouping,
    category_ids: dict[str, int],
    shape: tuple[int, int],
    image: str,
    tally: _Tally,
) -> list[dict]:
    """COCO annotations (without ids) of the groups of every object of one image."""
    from pycocotools import mask as mask_utils

    anns = []
    for index, obj in enumerate(objects, start=1):
        table = grouping.get(obj.cls)
        if table is None:
            tally.other_classes[obj.cls] += 1
            continue
        for group, mask in _group_masks(obj, table, shape, {"image": image, "object": index}, tally).items():
            rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
            anns.append(
                {
                    "category_id": category_ids[f"{obj.cls} {group}"],
                    "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                }
            )
    return anns


def _place_image(src: Path, dst: Path) -> None:
    """Hard-link ``src`` at ``dst``; a copy where a link cannot be made (another file system)."""
    if dst.exists():
        if os.path.samefile(src, dst):
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _find_voc(voc: Path) -> Path:
    for sub in _VOC_SUBDIRS:
        if (voc / sub / "JPEGImages").is_dir():
            return voc / sub
    if not voc.is_dir():
        raise DataError(f"VOC2010 folder {voc} does not exist")
    raise DataError(f"{voc} holds no JPEGImages/ (nor VOC2010/JPEGImages/, VOCdevkit/VOC2010/JPEGImages/)")


def _find_parts(parts: Path) -> Path:
    if not parts.is_dir():
        raise DataError(
            f"Pascal-Part folder {parts} does not exist (expected Annotations_Part/ with .mat files)"
        )
    nested = parts / "Annotations_Part"
    return nested if nested.is_dir() else parts


def _split_ids(voc: Path, split: str) -> list[str]:
    path = voc / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise DataError(f"no image list for split '{split}': expected {path}")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _convert_split(
    ids: list[str],
    voc: Path,
    parts: Path,
    image_dir: Path,
    grouping: Grouping,
    category_ids: dict[str, int],
    tally: _Tally,
    bar: Any,
) -> tuple[list[dict], list[dict], dict]:
    """(images, annotations, split summary) of one split; images are linked into ``image_dir``."""
    images: list[dict] = []
    anns: list[dict] = []
    skipped: list[dict] = []
    without = 0
    for name in ids:
        bar.update()
        src = voc / "JPEGImages" / f"{name}.jpg"
        try:
            height, width = image_size(src)
            objects = read_part_annotation(parts / f"{name}.mat")
        except DataError as e:
            skipped.append({"image": name, "reason": str(e)})
            continue
        image_anns = _annotations(objects, grouping, category_ids, (height, width), name, tally)
        if not image_anns:
            without += 1
            continue
        _place_image(src, image_dir / f"{name}.jpg")
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": f"{name}.jpg", "height": height, "width": width})
        anns += [{"id": len(anns) + k, "image_id": image_id, **a} for k, a in enumerate(image_anns, start=1)]
    summary = {
        "images": len(images),
        "annotations": len(anns),
        "images_skipped": skipped,
        "images_without_annotations": without,
    }
    return images, anns, summary


def convert_pascal_part(
    voc: Path,
    parts: Path,
    out: Path,
    grouping: str = "pascal-part-58",
    splits: Sequence[str] = ("train", "val"),
    progress: bool = False,
) -> dict:
    """Convert Pascal-Part into the PartImageNet layout under ``out`` (see the module docstring).

    ``voc``: the VOC2010 folder (or one holding ``VOC2010/`` or ``VOCdevkit/VOC2010/``); ``parts``:
    ``Annotations_Part/`` (or its parent). Returns ``{"out", "grouping", "classes", "splits": {split:
    {"images", "annotations", "images_skipped": [{"image", "reason"}], "images_without_annotations",
    "listed_without_mat"}}, "unknown_part_names": {"<class> <name>": count}, "objects_without_parts",
    "objects_of_unconverted_classes": {class: count}, "empty_masks", "masks_skipped": [{"image",
    "object", "part"?, "reason"}]}``.
    """
    from tqdm import tqdm

    if grouping not in GROUPINGS:
        raise ConfigError(f"unknown Pascal-Part grouping '{grouping}'; known: {sorted(GROUPINGS)}")
    tables, classes = GROUPINGS[grouping], category_names(GROUPINGS[grouping])
    voc, parts, out = _find_voc(Path(voc)), _find_parts(Path(parts)), Path(out)
    annotated = {p.stem for p in parts.glob("*.mat")}
    listed = {split: _split_ids(voc, split) for split in splits}
    ids = {split: [i for i in names if i in annotated] for split, names in listed.items()}
    category_ids = {name: k for k, name in enumerate(classes)}
    categories = [{"id": k, "name": n, "supercategory": n.split(" ")[0]} for k, n in enumerate(classes)]
    tally = _Tally()
    summary: dict = {"out": str(out), "grouping": grouping, "classes": classes, "splits": {}}
    bar = tqdm(total=sum(map(len, ids.values())), desc="pascal-part", unit="img", disable=not progress)
    for split in splits:
        image_dir = out / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        images, anns, split_summary = _convert_split(
            ids[split], voc, parts, image_dir, tables, category_ids, tally, bar
        )
        split_summary["listed_without_mat"] = len(listed[split]) - len(ids[split])
        info = {"description": f"Pascal-Part ({grouping}), converted by wps-sam", "split": split}
        coco = {"info": info, "images": images, "annotations": anns, "categories": categories}
        # The json goes last and atomically: once it exists, every image it names is in place.
        atomic_write_text(
            out / "annotations" / split / f"{split}.json", json.dumps(coco, separators=(",", ":"))
        )
        summary["splits"][split] = split_summary
        logger.info("pascal-part %s: %d images, %d annotations", split, len(images), len(anns))
        if skipped := split_summary["images_skipped"]:
            example = f"{skipped[0]['image']}: {skipped[0]['reason']}"
            logger.warning("pascal-part %s: %d image(s) skipped, e.g. %s", split, len(skipped), example)
    bar.close()
    summary.update(
        unknown_part_names=dict(tally.unknown_parts.most_common()),
        objects_without_parts=tally.objects_without_parts,
        objects_of_unconverted_classes=dict(tally.other_classes.most_common()),
        empty_masks=tally.empty_masks,
        masks_skipped=tally.masks_skipped,
    )
    return summary
