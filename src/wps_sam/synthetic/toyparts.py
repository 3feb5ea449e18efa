"""ToyParts: a part-segmentation benchmark generator modelled on PartImageNet.

Scenes hold one to ``max_objects`` articulated objects (:mod:`wps_sam.synthetic.toyparts_shapes`) placed
with random scale, rotation, flip and position over a textured background with distractor clutter;
foreground occluders and later objects hide parts of earlier ones. Every part and every detail gets
its own random colour and texture, so a part is recognised by its shape and context, never by colour.

The output has PartImageNet's layout::

    DIR/images/<split>/toyparts_<split>_<index>.jpg
    DIR/annotations/<split>/<split>.json      COCO: images, annotations, categories

with one annotation per (object, part class) holding the *visible* pixels of that part (several
pieces give a multi-polygon), category ids 0..39 in PartImageNet's order, and polygons in pixel-corner
coordinates that pycocotools rasterises back to exactly the visible mask (a piece with a hole is cut
in two; COCO RLE is only a safety net, never needed so far). Image and annotation ids start at 1.
Generation is deterministic: image ``i`` of ``split`` is drawn from a
generator seeded with ``(seed, crc32(split), i)``, so splits never share images, the same arguments
give byte-identical files, and :func:`write_toyparts` draws them in parallel (one process per
CPU core) with the same files as one process would write.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from wps_sam.atomic import atomic_write_text
from wps_sam.synthetic.point_labels import keep_points_only
from wps_sam.synthetic.polygons import mask_to_polygons
from wps_sam.synthetic.toyparts_scene import Scene, ToyPartsConfig, render_scene
from wps_sam.synthetic.toyparts_shapes import PART_CLASSES, SUPERCATEGORIES

__all__ = [
    "PART_CLASSES",
    "SUPERCATEGORIES",
    "Scene",
    "ToyPartsConfig",
    "annotate_scene",
    "generate_toyparts",
    "mask_to_polygons",
    "render_scene",
    "write_toyparts",
]

logger = logging.getLogger(__name__)

# Below this many images a split is drawn in this process: starting workers costs more than it saves.
PARALLEL_FROM = 64


def annotate_scene(scene: Scene, image_id: int, first_id: int, min_area: int = 20) -> list[dict]:
    """COCO annotations of the visible parts of ``scene``, one per (object, part class).

    Ids count up from ``first_id``; parts with fewer than ``min_area`` visible pixels are left out.
    """
    from pycocotools import mask as mask_utils

    from ..data.rle import decode_masks

    anns = []
    for k, sl in enumerate(ndimage.find_objects(scene.labels), start=1):
        if sl is None:
            continue
        mask = scene.labels[sl] == k
        area = int(mask.sum())
        if area < min_area:
            continue
        h, w = mask.shape
        polys = mask_to_polygons(mask)
        # Rasterise back in the window: exact there means exact in the image, the shift is whole pixels.
        drawn = decode_masks(mask_utils.merge(mask_utils.frPyObjects(polys, h, w)))
        x0, y0 = sl[1].start, sl[0].start
        if np.array_equal(drawn, mask):
            segmentation: list | dict = [np.add(p, np.tile([x0, y0], len(p) // 2)).tolist() for p in polys]
        else:  # never seen; kept so that masks are exact whatever happens
            full = np.asfortranarray(scene.labels == k, dtype=np.uint8)
            segmentation = {
                "size": list(full.shape),
                "counts": mask_utils.encode(full)["counts"].decode("ascii"),
            }
        anns.append(
            {
                "id": first_id + len(anns),
                "image_id": image_id,
                "category_id": PART_CLASSES.index(scene.parts[k - 1][1]),
                "segmentation": segmentation,
                "area": float(area),
                "bbox": [float(x0), float(y0), float(w), float(h)],
                "iscrowd": 0,
            }
        )
    return anns


def _draw_image(config: ToyPartsConfig, split: str, index: int) -> tuple[bytes, list[dict]]:
    """Image ``index`` of ``split`` as JPEG bytes, and its annotations with ids counted from 1."""
    scene = render_scene(config, split, index)
    buf = io.BytesIO()
    Image.fromarray(scene.image).save(buf, format="JPEG", quality=config.jpeg_quality)
    return buf.getvalue(), annotate_scene(scene, index + 1, 1, config.min_area)


def _drawn_images(
    config: ToyPartsConfig, split: str, count: int, workers: int
) -> Iterator[tuple[bytes, list[dict]]]:
    """:func:`_draw_image` of images 0..count-1 in order, over ``workers`` processes (1: in this one).

    Every image is drawn from its own generator, so the files are the same whatever ``workers``. The
    workers are forked (where the platform can): spawned ones would re-import the caller's script."""
    import multiprocessing

    if workers <= 1 or count < PARALLEL_FROM or "fork" not in multiprocessing.get_all_start_methods():
        yield from (_draw_image(config, split, i) for i in range(count))
        return
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    # The children draw with numpy, PIL and scipy only: none touches the parent's torch thread pools.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        yield from pool.map(partial(_draw_image, config, split), range(count), chunksize=16)


def write_toyparts(
    out: str | Path,
    train: int,
    val: int,
    config: ToyPartsConfig,
    progress: bool = False,
    point_fraction: float = 0.0,
    workers: int | None = None,
) -> dict:
    """Write a ToyParts data set under ``out`` (see the module docstring); returns a summary.

    ``point_fraction``: the share of the training split's parts that keep only a point
    (:func:`~.point_labels.keep_points_only`); the held-out split keeps every mask for evaluation.
    The images do not depend on it. ``workers``: processes that draw the images (``None``: one per
    CPU core); the files do not depend on it.
    """
    from tqdm import tqdm

    out = Path(out)
    if workers is None:  # the cores this process may run on (a container may allow fewer than it has)
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # The part classes of the drawn super-categories only, so that a model's classes are the ones that
    # occur; each keeps its id among all ToyParts classes.
    categories = [
        {"id": i, "name": n, "supercategory": n.split(" ")[0]}
        for i, n in enumerate(PART_CLASSES)
        if n.split(" ")[0] in config.supercategories
    ]
    summary: dict = {"out": str(out), "classes": [c["name"] for c in categories], "splits": {}}
    bar = tqdm(total=train + val, desc="toyparts", unit="img", disable=not progress)
    for split, count in (("train", train), ("val", val)):
        image_dir = out / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for index, (jpeg, image_anns) in enumerate(_drawn_images(config, split, count, workers)):
            name = f"toyparts_{split}_{index:06d}.jpg"
            (image_dir / name).write_bytes(jpeg)
            images.append({"id": index + 1, "file_name": name, "height": config.size, "width": config.size})
            anns += [{**a, "id": len(anns) + k + 1} for k, a in enumerate(image_anns)]
            bar.update()
        if split == "train" and point_fraction:
            anns = keep_points_only(anns, point_fraction, config.seed, config.size, config.size)
        info = {"description": "ToyParts, a synthetic PartImageNet-style part data set", "version": "1.0"}
        info.update(seed=config.seed, size=config.size, split=split)
        if split == "train" and point_fraction:
            info["point_fraction"] = point_fraction
        coco = {"info": info, "images": images, "annotations": anns, "categories": categories}
        # The json goes last and atomically: once it exists, every image it names is complete.
        atomic_write_text(
            out / "annotations" / split / f"{split}.json", json.dumps(coco, separators=(",", ":"))
        )
        points = sum("point" in a for a in anns)
        summary["splits"][split] = {"images": len(images), "annotations": len(anns), "point_only": points}
        logger.info("toyparts %s: %d images, %d annotations", split, len(images), len(anns))
    bar.close()
    return summary


def generate_toyparts(
    out: str | Path,
    train: int,
    val: int,
    size: int = 256,
    seed: int = 0,
    progress: bool = False,
    point_fraction: float = 0.0,
    supercategories: tuple[str, ...] = tuple(SUPERCATEGORIES),
) -> dict:
    """Write ``train`` and ``val`` ToyParts images of ``size`` px under ``out``, drawn from ``seed``
    with objects of ``supercategories`` only; a share ``point_fraction`` of the training parts
    labelled by a point only.

    Returns ``{"out", "classes": the part classes of supercategories, "splits": {split: {"images",
    "annotations", "point_only"}}}``.
    """
    config = ToyPartsConfig(size=size, seed=seed, supercategories=tuple(supercategories))
    return write_toyparts(out, train, val, config, progress=progress, point_fraction=point_fraction)
