"""Parts labelled by a point only: the mixed supervision of a real annotation project, on ToyParts.

:func:`keep_points_only` turns a share of a split's COCO annotations into clicks: the annotation
loses its box, mask and area and keeps ``point: [x, y]``, the pixel centre of its mask farthest
from the part's boundary (where an annotator clicks; :func:`~wps_sam.data.targets.interior_point`),
in pixels of the original frame, or the click the caller gives it (``clicks``, e.g. one made from
the part's box alone). Which parts are chosen depends only on the seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..data.coco import PartInstance, instance_mask
from ..data.targets import interior_point


def keep_points_only(
    anns: list[dict],
    fraction: float,
    seed: int,
    height: int,
    width: int,
    clicks: Mapping[int, Sequence[float]] | None = None,
) -> list[dict]:
    """``anns`` with ``round(fraction * len(anns))`` of them, drawn by ``seed``, reduced to a point.

    ``height`` x ``width``: the images' size (every ToyParts image of a split has one size). The
    others are returned unchanged; the order and the ids are kept. ``clicks``: the (x, y) click of
    each annotation by id, instead of its mask's interior point; every chosen annotation needs one.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"the point fraction must be in [0, 1], got {fraction}")
    count = round(fraction * len(anns))
    chosen = set(np.random.default_rng([seed, 0x9017]).permutation(len(anns))[:count].tolist())
    return [_as_point(ann, height, width, clicks) if k in chosen else ann for k, ann in enumerate(anns)]


def _as_point(ann: dict, height: int, width: int, clicks: Mapping[int, Sequence[float]] | None) -> dict:
    if clicks is None:
        part = PartInstance(ann["id"], 0, None, ann["segmentation"], isinstance(ann["segmentation"], list))
        x, y = interior_point(instance_mask(part, height, width)).tolist()
    elif ann["id"] in clicks:
        x, y = (float(v) for v in clicks[ann["id"]])
    else:
        raise ValueError(f"no click given for annotation {ann['id']}")
    keep = ("id", "image_id", "category_id", "iscrowd")
    return {k: ann[k] for k in keep} | {"point": [round(x, 2), round(y, 2)]}
