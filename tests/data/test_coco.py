"""Loading COCO part annotations in the PartImageNet layout."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from tests.data.fixtures import write_part_dataset

from wps_sam.data.coco import PartInstance, instance_mask, load_split
from wps_sam.errors import DataError


def _masks(root: Path) -> list[np.ndarray]:
    index = load_split(root, "train")
    return [instance_mask(p, e.height, e.width) for e in index.images for p in e.parts]


def test_polygons_and_rle_give_the_same_masks(tmp_path):
    kinds = ("polygon", "rle", "rle_uncompressed", "mixed")
    for kind in kinds:
        write_part_dataset(tmp_path / kind, "train", 3, segmentation=kind, multi_polygon=True)
    reference = _masks(tmp_path / "polygon")
    assert reference and all(m.dtype == bool and m.any() for m in reference)
    for kind in kinds[1:]:
        masks = _masks(tmp_path / kind)
        assert len(masks) == len(reference)
        for a, b in zip(masks, reference):
            np.testing.assert_array_equal(a, b)


def test_parts_of_several_polygons_are_merged(tmp_path):
    write_part_dataset(tmp_path, "train", 2, multi_polygon=True)
    index = load_split(tmp_path, "train")
    for entry in index.images:
        for part in entry.parts:
            assert part.is_polygon and len(part.segmentation) == 2
            mask = instance_mask(part, entry.height, entry.width)
            pieces = [
                instance_mask(PartInstance(0, 0, part.box, [p], True), entry.height, entry.width)
                for p in part.segmentation
            ]
            np.testing.assert_array_equal(mask, pieces[0] | pieces[1])
            ys, xs = np.nonzero(mask)  # the box spans both pieces
            assert part.box[0] <= xs.min() and part.box[2] >= xs.max() + 1


def test_categories_with_any_ids_iscrowd_bool_and_empty_images(tmp_path):
    write_part_dataset(
        tmp_path, "train", 5, category_ids=(20, 3, 7), unused_category=True, empty_images=2, iscrowd_bool=True
    )
    index = load_split(tmp_path, "train")
    assert index.category_ids == [3, 7, 20, 30]
    assert index.class_names == ["part3", "part7", "part20", "unused"] and index.num_classes == 4
    assert len(index.images) == 5 and [len(e.parts) for e in index.images][-2:] == [0, 0]
    data = json.loads((tmp_path / "annotations/train/train.json").read_text())
    label_of_id = {3: 0, 7: 1, 20: 2}
    parts = [p for e in index.images for p in e.parts]
    assert [p.label for p in parts] == [label_of_id[a["category_id"]] for a in data["annotations"]]
    assert not any(p.iscrowd for p in parts) and 3 not in {p.label for p in parts}
    assert not (index.skipped_images or index.skipped_annotations or index.repaired)
    a = data["annotations"][0]
    x, y, w, h = a["bbox"]
    np.testing.assert_allclose(parts[0].box, [x, y, x + w, y + h])
    assert parts[0].box.dtype == np.float32


def test_class_names_of_a_run_map_by_name(tmp_path):
    write_part_dataset(tmp_path, "train", 3, category_ids=(1, 2), unused_category=True)
    index = load_split(tmp_path, "train", class_names=["part2", "part1", "other"])
    assert index.class_names == ["part2", "part1", "other"] and index.category_ids == [2, 1, -1]
    data = json.loads((tmp_path / "annotations/train/train.json").read_text())
    parts = [p for e in index.images for p in e.parts]
    assert [p.label for p in parts] == [{2: 0, 1: 1}[a["category_id"]] for a in data["annotations"]]
    # "unused" is unknown to the run but no annotation uses it: fine. "part1" used and unknown: error.
    with pytest.raises(DataError, match="part1"):
        load_split(tmp_path, "train", class_names=["part2", "unused"])


def test_boxes_only_split(tmp_path):
    write_part_dataset(tmp_path, "train", 3, segmentation="none")
    index = load_split(tmp_path, "train")
    assert index.num_parts > 0 and not index.has_masks
    part = index.images[0].parts[0]
    assert part.segmentation is None
    with pytest.raises(DataError, match="no segmentation"):
        instance_mask(part, index.images[0].height, index.images[0].width)


def test_box_derived_from_segmentation_when_bbox_missing(tmp_path):
    write_part_dataset(tmp_path / "a", "train", 2, segmentation="rle")
    write_part_dataset(tmp_path / "b", "train", 2, segmentation="rle", with_bbox=False)
    with_bbox, without = load_split(tmp_path / "a", "train"), load_split(tmp_path / "b", "train")
    for ea, eb in zip(with_bbox.images, without.images):
        for pa, pb in zip(ea.parts, eb.parts):
            np.testing.assert_allclose(pa.box, pb.box)
    assert not without.repaired


def test_alternative_layouts(tmp_path):
    write_part_dataset(tmp_path / "flat", "val", 2, flat_layout=True)
    assert len(load_split(tmp_path / "flat", "val").images) == 2
    write_part_dataset(tmp_path / "pin", "train", 3, synset_folders=True)
    index = load_split(tmp_path / "pin", "train")
    assert len(index.images) == 3 and all(e.path.is_file() for e in index.images)
    assert index.images[0].path.parent.name == index.images[0].file_name.split("_")[0]


def test_clear_errors_for_unusable_input(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_split(tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match=r"annotations/train/train\.json or .*annotations/train\.json"):
        load_split(tmp_path, "train")
    json_path = write_part_dataset(tmp_path, "train", 1)
    json_path.write_text('{"images": [}')
    with pytest.raises(DataError, match=r"train\.json: invalid JSON at line 1"):
        load_split(tmp_path, "train")
    json_path.write_text('{"images": [], "categories": []}')
    with pytest.raises(DataError, match=r"train\.json: missing .*'annotations'"):
        load_split(tmp_path, "train")
    json_path.write_text("[1, 2]")
    with pytest.raises(DataError, match="top level"):
        load_split(tmp_path, "train")


def test_faulty_annotations_are_skipped_or_repaired_with_reasons(tmp_path):
    json_path = write_part_dataset(tmp_path, "train", 3, max_parts=1)
    data = json.loads(json_path.read_text())
    img = data["images"][0]
    w, h = img["width"], img["height"]
    good = data["annotations"][0]
    base = {k: v for k, v in good.items() if k not in ("segmentation", "id")}
    faulty = [
        {**base, "id": 1, "category_id": 999},
        {**base, "id": 2, "bbox": [math.nan, 0, 5, 5]},
        {**base, "id": 3, "bbox": [1, 1, 0, 5]},
        {**base, "id": 4, "bbox": [w + 5, 0, 5, 5]},
        {**base, "id": 5, "image_id": 12345},
        {**base, "id": 6, "bbox": [w - 4, h - 4, 10, 10]},  # partly outside: clipped
        {**base, "id": 7, "segmentation": [[1, 1, 5, 1], good["segmentation"][0]]},
        {**good, "id": 8, "bbox": [math.nan, 0, 5, 5]},  # a usable mask gives the box
    ]
    data["annotations"] += faulty
    data["images"].append({"id": 7, "file_name": "missing.png", "height": 10, "width": 10})
    json_path.write_text(json.dumps(data))  # json writes and reads NaN
    index = load_split(tmp_path, "train")
    skipped = {r["ann_id"]: r["reason"] for r in index.skipped_annotations}
    assert set(skipped) == {1, 2, 3, 4, 5}
    assert "category" in skipped[1] and "non-finite" in skipped[2] and "zero area" in skipped[3]
    assert "outside" in skipped[4] and "image id" in skipped[5]
    assert [r["file_name"] for r in index.skipped_images] == ["missing.png"]
    repaired = {r.get("ann_id"): r["reason"] for r in index.repaired}
    assert "clipped" in repaired[6] and "degenerate polygon" in repaired[7]
    assert "from the segmentation" in repaired[8]
    np.testing.assert_allclose(
        next(p for p in index.images[0].parts if p.ann_id == 8).box, index.images[0].parts[0].box
    )
    clipped = next(p for p in index.images[0].parts if p.ann_id == 6)
    np.testing.assert_allclose(clipped.box, [w - 4, h - 4, w, h])
    fixed = next(p for p in index.images[0].parts if p.ann_id == 7)
    assert len(fixed.segmentation) == 1 and instance_mask(fixed, h, w).any()
