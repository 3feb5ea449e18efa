"""The annotation parser on malformed json: it returns an index or raises DataError, never anything else.

And what it keeps is safe to use: every kept box lies inside its image and every kept mask rasterises
(pycocotools trusts its input, so a malformed RLE or polygon that slipped through could crash it).
"""

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from wps_sam.data.coco import PartDataIndex, instance_mask, load_split
from wps_sam.errors import DataError

FILES = {"a.png": (12, 16), "b.png": (20, 10), "n01_c.png": (8, 8)}  # name -> (H, W) on disk

garbage = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
small_int = st.integers(-3, 6)
number = (
    st.integers(-50, 60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([10**400, -(10**30), 1e308, True])
)
size = st.integers(-2, 40) | st.sampled_from([0, 10**9, 10**40]) | st.floats() | garbage

file_name = (
    st.sampled_from([*FILES, "c.png", "missing.png", "", "x" * 300, "../a.png", "a\x00.png"]) | garbage
)
image = st.fixed_dictionaries(
    {"id": small_int | garbage},
    optional={"file_name": file_name, "height": size, "width": size},
)
category = st.fixed_dictionaries({"id": small_int, "name": st.sampled_from(["p", "q", "r"])}) | garbage

rle_counts = (
    st.text(alphabet=st.characters(min_codepoint=40, max_codepoint=120), max_size=12)
    | st.lists(st.integers(-5, 400) | st.sampled_from([2**32, 2**40]) | st.floats(), min_size=0, max_size=6)
    | garbage
)
rle = st.fixed_dictionaries({}, optional={"size": st.lists(size, max_size=3), "counts": rle_counts})
polygon = st.lists(number, max_size=10)
segmentation = st.lists(polygon, max_size=3) | polygon | rle | st.lists(rle, min_size=1, max_size=2) | garbage
annotation = st.fixed_dictionaries(
    {},
    optional={
        "id": small_int | garbage,
        "image_id": small_int | garbage,
        "category_id": small_int | garbage,
        "bbox": st.lists(number, min_size=3, max_size=5) | garbage,
        "segmentation": segmentation,
        "iscrowd": garbage,
    },
)
document = (
    st.fixed_dictionaries(
        {},
        optional={
            "images": st.lists(image, max_size=5) | garbage,
            "annotations": st.lists(annotation | garbage, max_size=8),
            "categories": st.lists(category, max_size=3) | garbage,
        },
    )
    | garbage
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("malformed")
    rng = np.random.default_rng(0)
    for name, (h, w) in FILES.items():
        path = root / "images" / "train" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path)
    (root / "images" / "train" / "c.png").write_bytes(b"not an image")
    (root / "annotations" / "train").mkdir(parents=True)
    return root


def _load(root, text, class_names=None):
    (root / "annotations" / "train" / "train.json").write_text(text)
    try:
        return load_split(root, "train", class_names=class_names)
    except DataError as e:
        assert str(e) and "\n" not in str(e)
        return None


def _assert_usable(index: PartDataIndex) -> None:
    for entry in index.images:
        assert entry.height > 0 and entry.width > 0
        for part in entry.parts:
            x0, y0, x1, y1 = part.box.tolist()
            assert all(math.isfinite(v) for v in part.box.tolist())
            assert 0 <= x0 < x1 <= entry.width and 0 <= y0 < y1 <= entry.height
            assert 0 <= part.label < index.num_classes
            if part.segmentation is not None and entry.height * entry.width <= 10**6:
                assert instance_mask(part, entry.height, entry.width).shape == (entry.height, entry.width)
    for record in index.skipped_images + index.skipped_annotations + index.repaired:
        assert isinstance(record["reason"], str) and record["reason"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=document, with_class_names=st.booleans())
@example(doc={"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "p"}],
              "annotations": [{"image_id": 1, "category_id": 1, "bbox": None,
                               "segmentation": {"size": [12, 16], "counts": "0a"}}]},
         with_class_names=False)  # fmt: skip
def test_malformed_json_gives_an_index_or_a_data_error(root, doc, with_class_names):
    text = json.dumps(doc)  # NaN and Infinity included, as Python's json writes them
    index = _load(root, text, ["p", "q"] if with_class_names else None)
    if index is not None:
        _assert_usable(index)


VALID = {"images": [{"id": 1, "file_name": "a.png", "height": 12, "width": 16}],
         "categories": [{"id": 1, "name": "p"}]}  # fmt: skip


def _annotation(**fields):
    return {"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], **fields}


@pytest.mark.parametrize(
    "doc,skipped",
    [
        # Each of these once crashed the parser or pycocotools, or slipped through to crash training.
        ({**VALID, "images": [*VALID["images"], {"id": 2, "file_name": "x" * 300}]}, None),  # name too long
        ({**VALID, "annotations": [_annotation(bbox=[10**400, 1, 4, 4])]}, "non-finite"),  # int overflow
        ({**VALID, "annotations": [_annotation(segmentation={"size": [12, 16], "counts": "0a"})]}, "RLE"),
        ({**VALID, "annotations": [_annotation(segmentation={"size": [12, 16], "counts": [1, 2]})]}, "RLE"),
        ({**VALID, "annotations": [_annotation(segmentation={"size": [-12, 16], "counts": [1]})]}, "RLE"),
        ({**VALID, "annotations": [_annotation(segmentation={"size": [12, 16], "counts": "é"})]}, "RLE"),
        (
            {
                **VALID,
                "annotations": [
                    _annotation(
                        segmentation=[{"size": [12, 16], "counts": [192]}, {"size": [6, 8], "counts": [48]}]
                    )
                ],
            },
            "RLE",
        ),
        ({**VALID, "annotations": [_annotation(segmentation=[[0, 0, 1e9, 0, 1e9, 1e9]])]}, "polygon"),
        ({**VALID, "annotations": [_annotation(segmentation=[[0, 0, 2**70, 0, 5, 5]])]}, "polygon"),
        ({**VALID, "images": [{"id": 1, "file_name": "a.png", "height": 10**12, "width": 10**12}]}, None),
        ({**VALID, "annotations": [_annotation(), "annotation as text"]}, "not an object"),
    ],
)
def test_past_crashers(root, doc, skipped):
    index = _load(root, json.dumps({"annotations": [], **doc}))
    assert index is not None
    _assert_usable(index)
    if skipped is not None:
        assert any(skipped in r["reason"] for r in index.skipped_annotations), index.skipped_annotations


@pytest.mark.parametrize(
    "text",
    ['{"images": [' + "1" * 5000 + "]}", "[" * 100_000, "\udcff", "{"],
    ids=["5000-digit-int", "deep-nesting", "not-utf8", "cut"],
)
def test_unparseable_json_is_a_data_error(root, text):
    path = root / "annotations" / "train" / "train.json"
    path.write_text(text, errors="surrogateescape")
    with pytest.raises(DataError, match="train.json"):
        load_split(root, "train")
