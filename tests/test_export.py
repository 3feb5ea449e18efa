"""Label-map PNGs, COCO RLE and instance JSON."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from wps_sam.export import (
    decode_rle,
    encode_rle,
    instances_to_json,
    load_label_map,
    save_instances_json,
    save_label_map,
)


def test_rle_round_trip() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((13, 17)) > 0.6
    rle = encode_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [13, 17]
    json.dumps(rle)
    assert np.array_equal(decode_rle(rle), mask)
    assert int(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()})) == int(mask.sum())
    assert np.array_equal(decode_rle(encode_rle(np.zeros((3, 2), dtype=bool))), np.zeros((3, 2), dtype=bool))


def test_decode_uncompressed_rle() -> None:
    # column-major runs starting with zeros: [[1, 0], [1, 1]] -> 1, 1, 0, 1 -> counts [0, 2, 1, 1]
    mask = decode_rle({"size": [2, 2], "counts": [0, 2, 1, 1]})
    assert mask.tolist() == [[True, False], [True, True]]


@pytest.mark.parametrize(("high", "mode"), [(41, "L"), (700, "I;16")])
def test_label_map_png_round_trip(tmp_path, high: int, mode: str) -> None:
    rng = np.random.default_rng(1)
    label_map = rng.integers(0, high, size=(9, 11))
    label_map[0, 0] = high - 1
    path = save_label_map(tmp_path / "out" / "labels.png", label_map)
    with Image.open(path) as image:
        assert image.mode == mode and image.format == "PNG"
    assert np.array_equal(load_label_map(path), label_map)
    assert [p.name for p in path.parent.iterdir()] == ["labels.png"]  # no temporary file left


def test_label_map_rejects_bad_values(tmp_path) -> None:
    with pytest.raises(ValueError):
        save_label_map(tmp_path / "x.png", np.array([[-1, 0]]))
    with pytest.raises(ValueError):
        save_label_map(tmp_path / "x.png", np.zeros((2, 2, 2), dtype=np.int64))


def test_instances_to_json(tmp_path) -> None:
    masks = np.zeros((2, 6, 8), dtype=bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 4:, :] = True
    boxes = np.array([[2, 1, 5, 3], [0, 4, 8, 6]], dtype=np.float32)
    out = instances_to_json([1, 0], [0.9, 0.25], boxes, masks, ["head", "leg"])
    assert [o["class_id"] for o in out] == [1, 0] and [o["class_name"] for o in out] == ["leg", "head"]
    assert out[0]["box_xyxy"] == [2.0, 1.0, 5.0, 3.0] and out[0]["area"] == 6 and out[1]["area"] == 16
    assert out[0]["score"] == pytest.approx(0.9)
    for o, m in zip(out, masks):
        assert np.array_equal(decode_rle(o["segmentation"]), m)
    path = save_instances_json(tmp_path / "inst.json", out)
    assert json.loads(path.read_text()) == json.loads(json.dumps(out))
    assert instances_to_json([], [], np.zeros((0, 4)), np.zeros((0, 6, 8), dtype=bool), ["head"]) == []
    with pytest.raises(ValueError):
        instances_to_json([2], [0.5], boxes[:1], masks[:1], ["head", "leg"])
