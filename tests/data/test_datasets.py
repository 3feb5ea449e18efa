"""The part data set in SAM's input frame, and reading images from disk."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tests.data.fixtures import write_part_dataset
from torch.utils.data import DataLoader

import wps_sam.data.datasets as datasets_module
from wps_sam.data.coco import load_split
from wps_sam.data.datasets import PartSegmentationDataset, collate_parts
from wps_sam.data.images import image_size, read_image
from wps_sam.data.transforms import SamTransform
from wps_sam.errors import DataError

S = 64


def _dataset(root, segmentation="polygon", **kwargs) -> PartSegmentationDataset:
    write_part_dataset(root, "train", 3, segmentation=segmentation, empty_images=1)
    return PartSegmentationDataset(load_split(root, "train"), SamTransform(S), **kwargs)


def test_items_in_the_input_frame(tmp_path):
    ds = _dataset(tmp_path, with_masks=True)
    assert len(ds) == 3
    item = ds[0]
    entry = ds.index.images[0]
    n = len(entry.parts)
    assert item["image"].shape == (3, S, S) and item["image"].dtype == torch.float32
    assert item["labels"].dtype == torch.int64 and item["labels"].shape == (n,)
    assert item["boxes"].shape == (n, 4) and item["boxes"].dtype == torch.float32
    assert item["points"].shape == (n, 2) and item["masks"].shape == (n, S, S)
    assert item["masks"].dtype == torch.bool
    assert item["original_size"] == (entry.height, entry.width) and item["image_id"] == entry.image_id
    assert item["input_size"] == ds.transform.input_size(item["original_size"]) and item["index"] == 0
    original_boxes = np.stack([p.box for p in entry.parts])
    np.testing.assert_allclose(item["boxes"], ds.transform.apply_boxes(original_boxes, item["original_size"]))
    for k in range(n):  # interior points land inside their part's mask
        x, y = item["points"][k].tolist()
        assert item["masks"][k, int(y), int(x)]


def test_image_without_parts_and_collate(tmp_path):
    ds = _dataset(tmp_path, with_masks=True)
    empty = ds[2]
    assert empty["labels"].shape == (0,) and empty["boxes"].shape == (0, 4)
    assert empty["points"].shape == (0, 2) and empty["masks"].shape == (0, S, S)
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_parts)))
    assert batch["images"].shape == (3, 3, S, S) and len(batch["targets"]) == 3
    assert empty["has_box"].shape == (0,) and empty["has_box"].dtype == torch.bool
    assert set(batch["targets"][0]) == {
        "labels",
        "boxes",
        "points",
        "has_box",
        "masks",
        "image_id",
        "index",
        "original_size",
        "input_size",
    }
    assert [t["index"] for t in batch["targets"]] == [0, 1, 2]


def test_boxes_only_split_trains_but_cannot_evaluate(tmp_path):
    ds = _dataset(tmp_path, segmentation="none", supervision="point")
    item = ds[0]
    assert "masks" not in item and item["points"].shape[0] == item["boxes"].shape[0] > 0
    centers = (item["boxes"][:, :2] + item["boxes"][:, 2:]) / 2  # no mask: box centres
    torch.testing.assert_close(item["points"], centers)
    assert "masks" not in collate_parts([item])["targets"][0]
    message = f"split 'train' of {tmp_path} has no segmentation masks; evaluation needs masks"
    with pytest.raises(DataError) as info:
        PartSegmentationDataset(ds.index, ds.transform, with_masks=True)
    assert str(info.value) == message


def test_box_center_mode(tmp_path):
    ds = _dataset(tmp_path, point_mode="box_center")
    item = ds[1]
    torch.testing.assert_close(item["points"], (item["boxes"][:, :2] + item["boxes"][:, 2:]) / 2)


def test_points_are_computed_once(tmp_path, monkeypatch):
    calls = []
    original = datasets_module.weak_points
    monkeypatch.setattr(datasets_module, "weak_points", lambda *a, **k: calls.append(1) or original(*a, **k))
    ds = _dataset(tmp_path)
    first, second = ds[0], ds[0]
    torch.testing.assert_close(first["points"], second["points"])
    assert len(calls) == 1


def test_the_image_file_wins_over_the_json_size(tmp_path):
    reference = _dataset(tmp_path / "ref", with_masks=True)
    json_path = write_part_dataset(tmp_path / "big", "train", 3, empty_images=1)
    data = json.loads(json_path.read_text())
    for img in data["images"]:  # the json claims twice the real size, annotations drawn at that size
        img["height"], img["width"] = 2 * img["height"], 2 * img["width"]
    for ann in data["annotations"]:
        ann["bbox"] = [2 * v for v in ann["bbox"]]
        ann["segmentation"] = [[2 * v for v in poly] for poly in ann["segmentation"]]
    json_path.write_text(json.dumps(data))
    ds = PartSegmentationDataset(load_split(tmp_path / "big", "train"), SamTransform(S), with_masks=True)
    got, want = ds[0], reference[0]
    assert got["original_size"] == want["original_size"]
    torch.testing.assert_close(got["boxes"], want["boxes"])
    assert (got["masks"] == want["masks"]).float().mean() > 0.99
    assert any("scaled" in r["reason"] for r in ds.index.repaired)


def test_bad_options():
    with pytest.raises(ValueError, match="supervision"):
        PartSegmentationDataset(None, SamTransform(S), supervision="mask")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="point mode"):
        PartSegmentationDataset(None, SamTransform(S), point_mode="centroid")  # type: ignore[arg-type]


# --- reading images -------------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 30, 3), dtype=np.uint8)
    pixels[:, :15] = (255, 0, 0)  # stored: red left half, blue right half
    pixels[:, 15:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: the left half goes on top
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    image = read_image(path)
    assert image.shape == (30, 20, 3) and image_size(path) == (30, 20)
    assert image[3, 10, 0] > 200 and image[3, 10, 2] < 50
    assert image[26, 10, 2] > 200 and image[26, 10, 0] < 50


def _palette_image(colour: tuple[int, int, int]) -> Image.Image:
    image = Image.new("P", (5, 4), 1)
    image.putpalette([0, 0, 0, *colour])
    return image


@pytest.mark.parametrize(
    "name, make, expected",
    [
        ("gray.png", lambda: Image.new("L", (5, 4), 77), (77, 77, 77)),
        ("rgba.png", lambda: Image.new("RGBA", (5, 4), (10, 20, 30, 0)), (10, 20, 30)),
        ("palette.png", lambda: _palette_image((200, 100, 0)), (200, 100, 0)),
        ("deep.png", lambda: Image.fromarray(np.full((4, 5), 25700, dtype=np.uint16)), (100, 100, 100)),
        ("white.png", lambda: Image.fromarray(np.full((4, 5), 65535, dtype=np.uint16)), (255, 255, 255)),
        ("cmyk.jpg", lambda: Image.new("CMYK", (5, 4), (0, 0, 0, 0)), None),
    ],
)
def test_any_mode_reads_as_rgb(tmp_path, name, make, expected):
    make().save(tmp_path / name)
    image = read_image(tmp_path / name)
    assert image.shape == (4, 5, 3) and image.dtype == np.uint8
    if expected is not None:
        assert tuple(image[1, 2]) == expected


def test_unreadable_images_name_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.jpg"):
        read_image(bad)
    with pytest.raises(DataError, match="absent.png.*not found"):
        read_image(tmp_path / "absent.png")


def test_mirrored_items_are_the_flipped_image_and_annotations(tmp_path):
    from wps_sam.data.coco import load_split
    from wps_sam.data.datasets import PartSegmentationDataset
    from wps_sam.data.transforms import SamTransform

    write_part_dataset(tmp_path, "train", 2, size_range=(30, 50), seed=4, segmentation="mixed")
    index = load_split(tmp_path, "train")
    plain = PartSegmentationDataset(index, SamTransform(64), with_masks=True)
    mirror = PartSegmentationDataset(index, SamTransform(64), with_masks=True, mirrored=True)
    for i in range(2):
        a, b = plain[i], mirror[i]
        h, w = a["input_size"]
        assert torch.equal(b["image"][:, :h, :w], a["image"][:, :h, :w].flip(-1))
        assert torch.equal(b["masks"][:, :h, :w], a["masks"][:, :h, :w].flip(-1))
        width = index.images[i].width * 64 / max(index.images[i].height, index.images[i].width)
        torch.testing.assert_close(b["boxes"][:, [0, 2]], width - a["boxes"][:, [2, 0]])
        assert torch.equal(b["labels"], a["labels"])
