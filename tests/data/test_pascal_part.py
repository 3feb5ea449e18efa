"""Pascal-Part -> PartImageNet layout: a tiny release written in the official .mat structure, converted,
read back with our COCO reader; masks are the expected unions, faults are counted; the groupings'
class counts and that no raw part feeds two groups."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from wps_sam.cli import main
from wps_sam.data.coco import instance_mask, load_split
from wps_sam.data.pascal_part import category_names, convert_pascal_part
from wps_sam.data.pascal_part_groupings import GROUPINGS, RAW_PARTS, VOC_CLASSES, part_group

H, W = 12, 16


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _structs(fields: tuple[str, ...], rows: list[tuple]) -> np.ndarray:
    """A (1, N) MATLAB struct array, as savemat writes it and the release holds it."""
    array = np.empty((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        for name, value in zip(fields, row):
            array[name][0, i] = value
    return array


def obj(cls: str, mask: np.ndarray, *parts: tuple[str, np.ndarray]) -> tuple:
    pieces = [(name, m.astype(np.uint8)) for name, m in parts]
    parts_array = _structs(("part_name", "mask"), pieces) if pieces else np.zeros((0, 0))  # as in the release
    return (cls, VOC_CLASSES.index(cls) + 1, mask.astype(np.uint8), parts_array)


def write_mat(path: Path, *objects: tuple) -> None:
    rows = _structs(("class", "class_ind", "mask", "parts"), list(objects))
    savemat(path, {"anno": {"imname": path.stem, "objects": rows}})


A, B, C, D, E, F = (f"2008_00000{i}" for i in range(1, 7))  # the train list
V1, V2, UNLISTED = "2009_000001", "2009_000002", "2010_000001"  # the val list; one in no list

# The expected masks per image: (category, mask) in annotation order (objects, then their groups).
HEAD = (box(0, 4, 1, 5) | box(0, 1, 0, 6)) & ~box(3, 7, 0, 6)  # torso, a later part, wins row 3
EXPECTED_58 = {
    A: [
        ("person head", HEAD),
        ("person torso", box(3, 7, 0, 6)),
        ("person lower arm", box(7, 9, 0, 3)),
        ("tvmonitor screen", box(1, 5, 9, 15)),
        (
            "tvmonitor frame",
            box(0, 6, 8, 16) & ~box(1, 5, 9, 15) & ~box(5, 6, 8, 10),
        ),  # not the unknown stand
        ("boat whole", box(8, 12, 8, 16)),
    ],
    B: [
        ("dog head", box(0, 2, 0, 3)),
        ("dog torso", box(0, 6, 0, 8) & ~box(0, 2, 0, 3)),  # torso + rest
        ("dog head", box(6, 8, 0, 3)),
        ("dog tail", box(11, 12, 0, 8)),
        ("dog torso", box(6, 11, 0, 8) & ~box(6, 8, 0, 3)),  # rest only
    ],
    V1: [("aeroplane body", box(2, 6, 2, 12)), ("aeroplane engine", box(6, 7, 3, 5) | box(6, 7, 8, 10))],
    V2: [("pottedplant pot", box(6, 12, 4, 10))],
}


def write_release(root: Path) -> tuple[Path, Path]:
    """VOCdevkit/VOC2010 and trainval/Annotations_Part with every case the converter must handle."""
    voc = root / "VOCdevkit" / "VOC2010"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "train.txt").write_text("\n".join([A, B, C, D, E, F]) + "\n")
    (voc / "ImageSets" / "Main" / "val.txt").write_text(f"{V1}\n{V2}\n")
    for name in (A, B, C, D, F, V1, V2, UNLISTED):  # E's JPEG is missing
        Image.new("RGB", (W, H), (90, 120, 150)).save(voc / "JPEGImages" / f"{name}.jpg")
    parts = root / "trainval" / "Annotations_Part"
    parts.mkdir(parents=True)
    person = obj(
        "person", box(0, 10, 0, 6), ("head", box(0, 4, 1, 5)), ("hair", box(0, 1, 0, 6)),
        ("torso", box(3, 7, 0, 6)), ("llarm", box(7, 8, 0, 3)), ("lhand", box(8, 9, 0, 3)),
        ("tentacle", box(9, 10, 0, 2)),
    )  # fmt: skip
    tv = obj("tvmonitor", box(0, 6, 8, 16), ("screen", box(1, 5, 9, 15)), ("stand", box(5, 6, 8, 10)))
    write_mat(parts / f"{A}.mat", person, tv, obj("boat", box(8, 12, 8, 16)))
    dog1 = obj(
        "dog",
        box(0, 6, 0, 8),
        ("head", box(0, 2, 0, 3)),
        ("torso", box(2, 5, 0, 6)),
        ("lfleg", box(0, 0, 0, 0)),
    )
    dog2 = obj(
        "dog",
        box(6, 12, 0, 8),
        ("head", box(6, 8, 0, 3)),
        ("tail", box(11, 12, 0, 8)),
        ("torso", np.ones((5, 5))),
    )
    empty_cat = obj("cat", box(0, 0, 0, 0), ("head", box(0, 2, 0, 2)))
    tv = obj("tvmonitor", box(6, 12, 10, 16), ("screen", np.ones((3, 3))))  # no usable part: no frame either
    write_mat(parts / f"{B}.mat", dog1, dog2, obj("bird", box(0, 4, 10, 16)), empty_cat, tv)
    (parts / f"{D}.mat").write_bytes(b"MATLAB 5.0 MAT-file, but then nothing of the sort" * 3)
    write_mat(parts / f"{E}.mat", obj("boat", box(0, 4, 0, 4)))
    savemat(parts / f"{F}.mat", {"anno": {"imname": F}})  # no objects field
    aeroplane = obj("aeroplane", box(2, 7, 2, 12), ("body", box(2, 6, 2, 12)), ("engine_1", box(6, 7, 3, 5)),
                    ("engine_2", box(6, 7, 8, 10)))  # fmt: skip
    write_mat(parts / f"{V1}.mat", aeroplane)  # one object
    write_mat(
        parts / f"{V2}.mat", obj("pottedplant", box(6, 12, 4, 10), ("pot", box(6, 12, 4, 10)))
    )  # one part
    write_mat(parts / f"{UNLISTED}.mat", obj("boat", box(0, 4, 0, 4)))
    return root / "VOCdevkit", parts


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, Path]:
    return write_release(tmp_path_factory.mktemp("pascal-part"))


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("converted")
    return out, convert_pascal_part(*release, out)


def _masks_by_image(root: Path, split: str) -> dict[str, list[tuple[str, np.ndarray]]]:
    index = load_split(root, split)
    assert not index.skipped_images and not index.skipped_annotations and not index.repaired
    return {
        Path(e.file_name).stem: [
            (index.class_names[p.label], instance_mask(p, e.height, e.width)) for p in e.parts
        ]
        for e in index.images
    }


@pytest.mark.parametrize("split", ["train", "val"])
def test_masks_are_the_expected_unions(converted, split):
    got = _masks_by_image(converted[0], split)
    expected = {k: v for k, v in EXPECTED_58.items() if k in ((A, B) if split == "train" else (V1, V2))}
    assert list(got) == list(expected)  # ImageSets decide the split; unlisted and faulty images are out
    for image, anns in expected.items():
        assert [name for name, _ in got[image]] == [name for name, _ in anns], image
        for (name, mask), (_, want) in zip(got[image], anns):
            np.testing.assert_array_equal(mask.astype(bool), want, err_msg=f"{image} {name}")


def test_layout_and_categories(converted, release):
    out, summary = converted
    index = load_split(out, "train")
    assert index.class_names == category_names(GROUPINGS["pascal-part-58"]) == summary["classes"]
    source = release[0] / "VOC2010" / "JPEGImages" / f"{A}.jpg"
    assert (out / "images" / "train" / f"{A}.jpg").stat().st_ino == source.stat().st_ino  # a hard link


def test_summary_counts_the_faults(converted):
    summary = converted[1]
    train, val = summary["splits"]["train"], summary["splits"]["val"]
    assert (train["images"], train["annotations"], val["images"], val["annotations"]) == (2, 11, 2, 3)
    reasons = {item["image"]: item["reason"] for item in train["images_skipped"]}
    assert set(reasons) == {D, E, F}
    assert "unreadable .mat" in reasons[D] and "not found" in reasons[E] and "'objects'" in reasons[F]
    assert train["listed_without_mat"] == 1 and train["images_without_annotations"] == 0
    assert summary["unknown_part_names"] == {"person tentacle": 1, "tvmonitor stand": 1}
    assert summary["objects_without_parts"] == 1  # the bird
    assert summary["empty_masks"] == 2  # the dog's leg, the cat
    assert [(s["image"], s["object"], s["part"]) for s in summary["masks_skipped"]] == [
        (B, 2, "torso"),
        (B, 5, "screen"),
    ]
    assert summary["objects_of_unconverted_classes"] == {}


def test_person_part_6_converts_people_only(release, tmp_path):
    summary = convert_pascal_part(*release, tmp_path, grouping="person-part-6", splits=("train",))
    assert summary["classes"] == [
        f"person {p}" for p in ("head", "torso", "upper arm", "lower arm", "upper leg", "lower leg")
    ]
    got = _masks_by_image(tmp_path, "train")
    assert [name for name, _ in got[A]] == ["person head", "person torso", "person lower arm"]
    assert list(got) == [A] and summary["splits"]["train"]["images_without_annotations"] == 1
    unconverted = {"tvmonitor": 2, "boat": 1, "dog": 2, "bird": 1, "cat": 1}
    assert summary["objects_of_unconverted_classes"] == unconverted


def test_cli_end_to_end(release, tmp_path, capsys):
    voc, parts = release
    args = ["data", "pascal-part", "--voc", str(voc), "--parts", str(parts.parent), "--out", str(tmp_path)]
    assert main([*args, "--grouping", "raw", "--splits", "val", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "wrote Pascal-Part raw (193 part classes)" in printed and "val: 2 images / 3 parts" in printed
    assert [name for name, _ in _masks_by_image(tmp_path, "val")[V1]] == [
        "aeroplane body",
        "aeroplane engine",
    ]
    assert main([*args, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "train: 2 images / 11 parts (3 images skipped)" in printed and "person tentacle x1" in printed
    assert "1 object(s) without parts, 2 empty mask(s), 2 mask(s) of another shape" in printed


@pytest.mark.parametrize("flag", ["--voc", "--parts"])
def test_cli_missing_folder_is_one_line(release, tmp_path, capsys, flag):
    paths = {"--voc": str(release[0]), "--parts": str(release[1]), flag: str(tmp_path / "nowhere")}
    argv = ["data", "pascal-part", *[v for item in paths.items() for v in item], "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("wps-sam data: error: ") and "does not exist" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "grouping, classes",
    [("pascal-part-58", 57), ("pascal-part-116", 116), ("person-part-6", 6), ("raw", 193)],
)
def test_grouping_class_counts(grouping, classes):
    names = category_names(GROUPINGS[grouping])
    assert len(names) == len(set(names)) == classes


@pytest.mark.parametrize("grouping", sorted(GROUPINGS))
def test_every_raw_part_feeds_one_group_at_most(grouping):
    for cls, table in GROUPINGS[grouping].items():
        stems = Counter(s for group in table.groups.values() for s in group)
        assert max(stems.values(), default=1) == 1, (grouping, cls, stems.most_common(1))
        assert set(stems) <= set(RAW_PARTS[cls]), (grouping, cls, set(stems) - set(RAW_PARTS[cls]))
        if table.groups:  # the groupings shipped leave no raw part of a grouped class out
            assert set(stems) == set(RAW_PARTS[cls]), (grouping, cls)


def test_numbered_parts_match_by_stem():
    ov, pp58 = GROUPINGS["pascal-part-116"], GROUPINGS["pascal-part-58"]
    assert (
        part_group(pp58["bus"], "window_12") == "window" and part_group(pp58["car"], "headlight_4") == "light"
    )
    assert part_group(ov["train"], "coach_2") == "coach" and part_group(ov["train"], "cleftside_1") == "side"
    assert part_group(ov["car"], "door_2") == "door" and part_group(pp58["aeroplane"], "engine_1") == "engine"
    assert part_group(pp58["person"], "lwing") is None
    assert (
        category_names(ov)[:2] == ["aeroplane body", "aeroplane stern"]
        and category_names(ov)[-1] == "tvmonitor screen"
    )
