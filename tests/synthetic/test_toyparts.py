"""ToyParts: PartImageNet layout, exact visible masks, determinism and the part vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wps_sam.errors import ConfigError
from wps_sam.synthetic import toyparts
from wps_sam.synthetic.toyparts import (
    PART_CLASSES,
    SUPERCATEGORIES,
    ToyPartsConfig,
    annotate_scene,
    generate_toyparts,
    mask_to_polygons,
    render_scene,
)

pycocotools = pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

# pycocotools 2.0 decodes through an __array__ that numpy 2 warns about; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TRAIN, VAL = 8, 4


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("toyparts")
    return out, generate_toyparts(out, train=TRAIN, val=VAL, seed=3)


@pytest.fixture(scope="module")
def cocos(dataset: tuple[Path, dict]) -> dict[str, COCO]:
    out, _ = dataset
    return {split: COCO(str(out / "annotations" / split / f"{split}.json")) for split in ("train", "val")}


def test_vocabulary() -> None:
    assert len(SUPERCATEGORIES) >= 6
    assert len(PART_CLASSES) >= 20 and len(set(PART_CLASSES)) == len(PART_CLASSES)
    assert {"Quadruped Head", "Car Tier", "Aeroplane Engine", "Bottle Mouth"} <= set(PART_CLASSES)


def test_layout_and_summary(dataset: tuple[Path, dict], cocos: dict[str, COCO]) -> None:
    out, summary = dataset
    assert summary["classes"] == PART_CLASSES
    for split, count in (("train", TRAIN), ("val", VAL)):
        coco = cocos[split]
        assert len(coco.imgs) == count == summary["splits"][split]["images"]
        assert len(coco.anns) == summary["splits"][split]["annotations"] > count
        cats = sorted(coco.cats.values(), key=lambda c: c["id"])
        assert [c["name"] for c in cats] == PART_CLASSES
        assert all(c["name"].startswith(c["supercategory"] + " ") for c in cats)
        for img in coco.imgs.values():
            with Image.open(out / "images" / split / img["file_name"]) as im:
                assert im.size == (img["width"], img["height"]) == (256, 256)
                assert im.mode == "RGB"


def test_masks_match_boxes_and_areas(cocos: dict[str, COCO]) -> None:
    for coco in cocos.values():
        for ann in coco.anns.values():
            img = coco.imgs[ann["image_id"]]
            mask = coco.annToMask(ann)
            assert mask.shape == (img["height"], img["width"])
            ys, xs = np.nonzero(mask)
            x, y, w, h = ann["bbox"]
            assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            assert 0 <= x and 0 <= y and x + w <= img["width"] and y + h <= img["height"]
            assert ann["area"] == mask.sum() >= 20
            assert ann["iscrowd"] == 0 and ann["category_id"] in coco.cats


def test_visible_masks_are_disjoint(cocos: dict[str, COCO]) -> None:
    for coco in cocos.values():
        for image_id in coco.imgs:
            masks = [coco.annToMask(a) for a in coco.imgToAnns[image_id]]
            assert masks and np.sum(masks, axis=0).max() == 1


def test_annotations_are_the_visible_labels() -> None:
    """One annotation per (object, part class), equal to the label map drawn with the image."""
    config = ToyPartsConfig(seed=1)
    for index in range(4):
        scene = render_scene(config, "train", index)
        assert len(set(scene.parts)) == len(scene.parts)
        anns = annotate_scene(scene, 1, 1, config.min_area)
        kept = [k for k in range(1, len(scene.parts) + 1) if (scene.labels == k).sum() >= config.min_area]
        assert len(anns) == len(kept)
        for ann, k in zip(anns, kept):
            rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], 256, 256))
            np.testing.assert_array_equal(mask_utils.decode(rle), scene.labels == k)
            assert PART_CLASSES[ann["category_id"]] == scene.parts[k - 1][1]


def test_deterministic_by_seed(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = dataset
    generate_toyparts(tmp_path / "same", train=TRAIN, val=VAL, seed=3)
    assert _files(tmp_path / "same") == _files(out)
    generate_toyparts(tmp_path / "other", train=2, val=0, seed=4)
    other = _files(tmp_path / "other")
    for name, data in other.items():
        if name.endswith(".jpg"):
            assert (out / name).read_bytes() != data


def test_files_do_not_depend_on_workers(
    dataset: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = dataset
    monkeypatch.setattr(toyparts, "PARALLEL_FROM", 1)  # the fixture's splits are below the default
    toyparts.write_toyparts(tmp_path / "two", TRAIN, VAL, ToyPartsConfig(seed=3), workers=2)
    assert _files(tmp_path / "two") == _files(out)


def test_splits_do_not_share_images(dataset: tuple[Path, dict]) -> None:
    out, _ = dataset
    train = {p.read_bytes() for p in (out / "images" / "train").iterdir()}
    val = {p.read_bytes() for p in (out / "images" / "val").iterdir()}
    assert len(train) == TRAIN and len(val) == VAL and not train & val


@pytest.mark.parametrize("sup", list(SUPERCATEGORIES))
def test_every_object_shows_all_its_parts(sup: str) -> None:
    config = ToyPartsConfig(max_objects=1, clutter=(0, 0), occluder_prob=0.0, supercategories=(sup,))
    seen: set[str] = set()
    for index in range(6):
        scene = render_scene(config, "val", index)
        seen |= {name for k, (_, name) in enumerate(scene.parts, 1) if (scene.labels == k).sum() >= 20}
    assert seen == {f"{sup} {part}" for part in SUPERCATEGORIES[sup]}


def test_mask_to_polygons_is_exact() -> None:
    rng = np.random.default_rng(0)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        mask = rng.random((h, w)) < rng.uniform(0.2, 0.8)  # holes, diagonal contacts, single pixels
        polys = mask_to_polygons(mask)
        if not mask.any():
            assert polys == []
            continue
        drawn = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, h, w)))
        np.testing.assert_array_equal(drawn, mask)


def test_ring_is_cut_into_polygons() -> None:
    mask = np.zeros((9, 9), bool)
    mask[1:8, 1:8] = True
    mask[3:6, 3:6] = False
    polys = mask_to_polygons(mask)
    assert len(polys) == 2
    drawn = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, 9, 9)))
    np.testing.assert_array_equal(drawn, mask)


def test_json_is_compact_and_plain(dataset: tuple[Path, dict]) -> None:
    out, _ = dataset
    text = (out / "annotations" / "val" / "val.json").read_text()
    data = json.loads(text)
    assert set(data) == {"info", "images", "annotations", "categories"}
    assert data["images"][0].keys() == {"id", "file_name", "height", "width"}


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError):
        ToyPartsConfig(supercategories=("Dragon",))
    with pytest.raises(ConfigError):
        ToyPartsConfig(max_objects=0)


def test_cli_draws_the_named_supercategories(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from wps_sam.cli import main

    out = tmp_path / "cars-fish"
    argv = ["data", "toyparts", "--out", str(out), "--train", "3", "--val", "1", "--size", "96"]
    assert main([*argv, "--supercategories", "Car, Fish", "--no-progress"]) == 0
    assert "wrote ToyParts (7 part classes)" in capsys.readouterr().out
    for split in ("train", "val"):
        coco = json.loads((out / "annotations" / split / f"{split}.json").read_text())
        assert {c["supercategory"] for c in coco["categories"]} == {"Car", "Fish"}
        # Each class keeps its id among all ToyParts classes.
        assert all(PART_CLASSES[c["id"]] == c["name"] for c in coco["categories"])
        ids = {c["id"] for c in coco["categories"]}
        assert coco["annotations"] and all(a["category_id"] in ids for a in coco["annotations"])

    unknown = tmp_path / "dragons"
    assert main([*argv[:3], str(unknown), *argv[4:], "--supercategories", "Dragon"]) == 2
    assert "unknown or empty ['Dragon']" in capsys.readouterr().err
    assert not unknown.exists()
    with pytest.raises(SystemExit) as refused:  # argparse's own refusal
        main([*argv, "--supercategories", " , "])
    assert refused.value.code == 2
    assert "expected comma-separated names" in capsys.readouterr().err
