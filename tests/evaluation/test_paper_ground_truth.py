"""The paper protocol selects and resizes ground truth as the official WPS-SAM loader does, case by case.

The official pipeline is rebuilt here from its parts (pycocotools' ``COCO.annToMask`` and
segment-anything's ``ResizeLongestSide.apply_image``, padded to the square), and each case where our
clean loader and the official one part ways is pinned.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from segment_anything.utils.transforms import ResizeLongestSide
from tests.data.fixtures import rectangle_polygon

from wps_sam.data.coco import instance_mask, load_split
from wps_sam.data.transforms import SamTransform
from wps_sam.evaluation import paper_ground_truth
from wps_sam.evaluation.paper_ground_truth import PaperGroundTruth, official_selection, resized_like_sam

H, W, S = 40, 64, 40  # a 1.6x resize, as in the case

ANNOTATIONS = [
    # 1: a clean rectangle, kept by both
    {"id": 1, "category_id": 1, "segmentation": [rectangle_polygon(3, 4, 20, 15)], "bbox": [3, 4, 17, 11]},
    # 2: raw first polygon of 2 points, then a good piece: our loader keeps the piece, official drops
    {"id": 2, "category_id": 2, "segmentation": [[30.0, 2.0, 36.0, 2.0], rectangle_polygon(25, 3, 38, 12)],
     "bbox": [25, 3, 13, 9]},
    # 3: odd number of values: our loader drops the part, official scores it (last value ignored)
    {"id": 3, "category_id": 1, "segmentation": [[22.0, 16.0, 35.0, 16.0, 35.0, 23.0, 22.0, 23.0, 9.0]],
     "bbox": [22, 16, 13, 7]},
    # 4: zero-area polygon with a zero-width box: our loader drops it, official scores an empty mask
    {"id": 4, "category_id": 2, "segmentation": [[5.0, 18.0, 5.0, 22.0, 5.0, 24.0]], "bbox": [5, 18, 0, 6]},
    # 5: an RLE: official fails on segmentation[0]; not scored here
    {"id": 5, "category_id": 1, "segmentation": {"size": [H, W], "counts": [10, 5, 2545]}, "bbox": [0, 10, 1, 5]},
    # 6: a non-finite first polygon: pycocotools cannot rasterise it safely; not scored
    {"id": 6, "category_id": 2, "segmentation": [[1.0, 1.0, float("nan"), 2.0, 3.0, 3.0]], "bbox": [1, 1, 2, 2]},
]  # fmt: skip


@pytest.fixture
def data(tmp_path):
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "annotations" / "val").mkdir(parents=True)
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(tmp_path / "images" / "val" / "a.png")
    anns = [{**a, "image_id": 7, "iscrowd": 0, "area": 1.0} for a in ANNOTATIONS]
    coco = {
        "images": [{"id": 7, "file_name": "a.png", "height": H, "width": W}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "head"}, {"id": 2, "name": "tail"}],
    }
    path = tmp_path / "annotations" / "val" / "val.json"
    path.write_text(json.dumps(coco))
    return tmp_path, path


def official_masks(path, ann_ids):
    """The official loader's masks of ``ann_ids``: annToMask, apply_image, padded to the square."""
    coco, resize = COCO(str(path)), ResizeLongestSide(S)
    out = []
    for ann in coco.loadAnns(ann_ids):
        mask = resize.apply_image(coco.annToMask(ann))
        square = np.zeros((S, S), bool)
        square[: mask.shape[0], : mask.shape[1]] = mask > 0
        out.append(square)
    return np.stack(out)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools itself
def test_the_official_selection_and_masks(data):
    root, path = data
    index = load_split(root, "val")
    assert sorted(p.ann_id for p in index.images[0].parts) == [1, 2, 5]  # our clean parsing
    truth = PaperGroundTruth(index, S)
    assert [p.ann_id for p in truth.parts[7]] == [1, 3, 4]
    masks, labels = truth.masks(7, (H, W))
    assert labels.tolist() == [0, 0, 1]
    assert torch.equal(masks, torch.from_numpy(official_masks(path, [1, 3, 4])))
    assert masks[1].any() and not masks[2].any()  # the odd polygon is drawn, the zero-area one empty


def test_bilinear_rounding_follows_sam_and_differs_from_nearest():
    mask = np.zeros((H, W), np.uint8)
    mask[8:20, 10:32] = 1
    mask[22, 32:61] = 1  # a one-pixel line: where the filters disagree
    sam = ResizeLongestSide(S).apply_image(mask)
    got = resized_like_sam(mask, sam.shape, S)
    assert torch.equal(got[: sam.shape[0], : sam.shape[1]], torch.from_numpy(sam > 0))
    assert not got[sam.shape[0] :].any() and not got[:, sam.shape[1] :].any()
    nearest = SamTransform(S).apply_masks(mask[None].astype(bool), (H, W))[0]  # the standard protocol's
    assert (got != nearest).any()


def test_masks_decoded_for_the_standard_protocol_are_reused(data, monkeypatch):
    root, _ = data
    index = load_split(root, "val")
    truth = PaperGroundTruth(index, S)
    part = next(p for p in index.images[0].parts if p.ann_id == 1)
    decoded = {1: (part.segmentation, instance_mask(part, H, W))}
    want, _ = truth.masks(7, (H, W))
    calls = []
    real = paper_ground_truth.decode_masks
    monkeypatch.setattr(paper_ground_truth, "decode_masks", lambda r: calls.append(1) or real(r))
    got, _ = truth.masks(7, (H, W), decoded)
    assert torch.equal(got, want) and len(calls) == 2  # parts 3 and 4 only


@pytest.mark.parametrize(
    "seg, kept",
    [
        ([[0.0, 0.0, 5.0, 0.0, 5.0]], True),  # 5 values: more than four
        ([[0.0, 0.0, 5.0, 0.0]], False),  # 4 values: dropped
        ([rectangle_polygon(0, 0, 4, 4), [1.0, 1.0, 2.0, 2.0]], True),  # a later 2-point piece stays
        ([rectangle_polygon(0, 0, 4, 4), [1.0]], True),  # a one-value piece is left out of the mask
        ([], False),
        ({"size": [4, 4], "counts": "0"}, False),
        ([["a", 1, 2, 3, 4, 5]], False),
    ],
)
def test_official_selection_cases(seg, kept):
    polygons = official_selection(seg)
    assert (polygons is not None) == kept
    if kept:
        assert polygons[0] == seg[0] and all(len(p) >= 2 for p in polygons)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools itself
def test_polygons_are_drawn_on_the_jsons_canvas_when_the_file_is_larger(data):
    from wps_sam.data.checks import triaged_split

    root, path = data
    coco = json.loads(path.read_text())
    coco["images"][0].update(height=H // 2, width=W // 2)  # the file is twice the json's size
    for ann in coco["annotations"]:
        if isinstance(ann["segmentation"], list):
            ann["segmentation"] = [[v / 2 for v in p] for p in ann["segmentation"]]
    coco["annotations"] = [a for a in coco["annotations"] if a["id"] in (1, 3)]
    path.write_text(json.dumps(coco))
    index = triaged_split(root, "val")  # rescales its entry to the file
    assert (index.images[0].height, index.images[0].width) == (H, W)
    masks, _ = PaperGroundTruth(index, S).masks(7, (H, W))
    assert torch.equal(masks, torch.from_numpy(official_masks(path, [1, 3])))
