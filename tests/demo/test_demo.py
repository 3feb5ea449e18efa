"""The demo: its baselines on hand cases, the data preparation, and a small smoke run of the whole."""

import json

import numpy as np
import pytest
import torch
from tests.data.fixtures import write_part_dataset

from wps_sam.data.coco import ImageEntry, PartInstance, load_split
from wps_sam.demo import DemoSettings, run_demo
from wps_sam.demo.baselines import (
    IGNORE,
    EmbeddingHead,
    SamBoxOracle,
    balanced_class_weights,
    box_fill_map,
    box_masks,
    fit_segmenter,
    gt_semantic_map,
    score,
)
from wps_sam.demo.data import MIRRORED_VAL, prepare_toyparts
from wps_sam.demo.report import targets
from wps_sam.demo.runner import METHODS
from wps_sam.demo.settings import wps_sam_config
from wps_sam.demo.stages import HeldOutSplit, held_out_embeddings
from wps_sam.engine.device import cpu_has_native_bf16
from wps_sam.recipes import DEFAULT_RECIPE
from wps_sam.sam.backbones import build_sam


def _part(label, box, polygon=None):
    return PartInstance(
        0, label, np.array(box, np.float32), [polygon] if polygon else None, polygon is not None
    )


def test_box_masks_cover_pixel_centres():
    masks = box_masks(np.array([[1, 2, 4, 3], [0.6, 0, 1.4, 1]]), 4, 5)
    expected = np.zeros((2, 4, 5), bool)
    expected[0, 2, 1:4] = True  # x centres 1.5, 2.5, 3.5 in [1, 4]; y centre 2.5 in [2, 3]
    # The second box holds no pixel centre along x (0.5 < 0.6, 1.5 > 1.4): an empty mask.
    assert np.array_equal(masks, expected)


def test_box_fill_smaller_box_wins():
    entry = ImageEntry(1, "x.png", None, 4, 6, [_part(0, [0, 0, 6, 4]), _part(1, [2, 1, 4, 3])])
    expected = torch.ones(4, 6, dtype=torch.long)
    expected[1:3, 2:4] = 2
    assert torch.equal(box_fill_map(entry), expected)


def test_box_fill_is_exact_on_rectangular_parts(tmp_path):
    # Parts that are axis-aligned rectangles are their own boxes: box-fill must score 1.0 everywhere.
    write_part_dataset(tmp_path, "val", 5, size_range=(20, 40), max_parts=3, seed=7)
    index = load_split(tmp_path, "val")
    gt = [gt_semantic_map(e) for e in index.images]
    result = score(lambda i: box_fill_map(index.images[i]), gt, index.class_names, "box-fill", progress=False)
    present = [c for c in result["per_class"] if c["iou"] is not None]
    assert result["miou"] == 1.0 and result["macc"] == 1.0 and len(present) >= 2
    assert [c["name"] for c in result["per_class"]] == ["background", *index.class_names]


def test_score_counts_like_the_confusion_matrix():
    gt = [torch.tensor([[0, 1], [1, 1]]), torch.tensor([[2, 2], [0, 0]])]
    pred = [torch.tensor([[0, 1], [0, 1]]), torch.tensor([[2, 1], [0, 0]])]
    result = score(lambda i: pred[i], gt, ["a", "b"], "hand", progress=False)
    # background: TP 3, FN 0, FP 1 -> 3/4; a: TP 2, FN 1, FP 1 -> 2/4; b: TP 1, FN 1, FP 0 -> 1/2
    assert result["miou"] == pytest.approx((3 / 4 + 2 / 4 + 1 / 2) / 3)
    assert result["macc"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)


def test_oracle_labels_each_mask_with_its_part(mini_sam):
    polygon = [2.0, 2.0, 30.0, 2.0, 30.0, 20.0, 2.0, 20.0]
    entry = ImageEntry(1, "x.png", None, 32, 48, [_part(2, [2, 2, 30, 20], polygon)])
    index = type("Index", (), {"images": [entry]})()
    torch.manual_seed(0)
    oracle = SamBoxOracle(mini_sam, index, torch.randn(1, 256, 16, 16), mask_threshold=-1e9)
    label_map = oracle(0)
    # Every pixel is covered at this threshold, all by the one part: class 2 -> label 3.
    assert label_map.shape == (32, 48) and set(label_map.unique().tolist()) == {3}
    empty = ImageEntry(2, "y.png", None, 8, 8, [])
    oracle = SamBoxOracle(mini_sam, type("Index", (), {"images": [empty]})(), torch.zeros(1, 256, 16, 16))
    assert not oracle(0).any()


def test_fit_segmenter_learns_a_constant_map():
    torch.manual_seed(0)
    head = torch.nn.Conv2d(256, 3, 1)
    embeddings = torch.randn(4, 256, 4, 4)
    labels = torch.full((4, 16, 16), 2, dtype=torch.uint8)
    labels[:, :, -2:] = IGNORE

    def batch(idx, flip):
        logits = torch.nn.functional.interpolate(head(embeddings[idx]), (16, 16), mode="bilinear")
        return logits, labels[idx]

    stats = fit_segmenter(head, batch, 4, steps=30, batch_size=2, lr=1e-2, progress=False)
    assert stats["image_passes"] == 60 and stats["steps"] == 30 and stats["final_loss"] < 0.5
    with torch.no_grad():
        assert (head(embeddings).argmax(1) == 2).all()


def test_fit_segmenter_under_bf16_autocast_keeps_float32_weights_and_learns():
    torch.manual_seed(0)
    head = torch.nn.Conv2d(256, 3, 1)
    embeddings = torch.randn(4, 256, 4, 4)
    labels = torch.full((4, 16, 16), 2, dtype=torch.uint8)
    dtypes = []

    def batch(idx, flip):
        logits = torch.nn.functional.interpolate(head(embeddings[idx]), (16, 16), mode="bilinear")
        dtypes.append(logits.dtype)
        return logits, labels[idx]

    stats = fit_segmenter(head, batch, 4, steps=30, batch_size=2, lr=1e-2, progress=False, bf16=True)
    assert set(dtypes) == {torch.bfloat16} and head.weight.dtype == torch.float32
    assert stats["final_loss"] < 0.5
    with torch.no_grad():
        assert (head(embeddings).argmax(1) == 2).all()


@pytest.mark.parametrize(("cpu_bf16", "overrides", "expected"), [
    (True, (), True),
    (False, (), False),
    (True, ("train.cpu_amp=false",), False),  # the user's override wins
])  # fmt: skip
def test_the_demo_passes_its_bf16_choice_to_wps_sam(tmp_path, cpu_bf16, overrides, expected):
    settings = DemoSettings(cpu_bf16=cpu_bf16, overrides=overrides)
    cfg = wps_sam_config(settings, tmp_path, tmp_path / "cache", "box", 0, None)
    assert cfg.train.cpu_amp is expected


def test_balanced_class_weights_count_the_labelled_pixels_only():
    labels = torch.full((2, 4, 4), IGNORE, dtype=torch.uint8)
    labels[0, :2] = 0  # 8 background pixels
    labels[1, 0, :2] = 2  # 2 pixels of class 2; class 1 has none
    weights = balanced_class_weights(labels, num_labels=3)
    counts = torch.tensor([8.0, 0.0, 2.0])
    expected = (counts.sum() / (counts + 1)).sqrt()
    torch.testing.assert_close(weights, expected / expected.mean())
    assert weights[1] > weights[2] > weights[0]


def test_embedding_head_shapes():
    assert EmbeddingHead(num_labels=5, width=16)(torch.randn(2, 256, 16, 16)).shape == (2, 5, 64, 64)


def test_prepare_toyparts_reuses_and_prunes(tmp_path):
    settings = DemoSettings(train_images=2, val_images=1, image_size=48, supercategories=("Bottle", "Fish"))
    manifest, reused = prepare_toyparts(tmp_path / "data", settings, progress=False)
    assert not reused and manifest["train"] == 2
    index = load_split(tmp_path / "data", "train")
    assert index.class_names == [
        "Fish Head",
        "Fish Body",
        "Fish Fin",
        "Fish Tail",
        "Bottle Body",
        "Bottle Mouth",
    ]
    marker = tmp_path / "data" / "images" / "train" / "marker"
    marker.write_text("kept")
    assert prepare_toyparts(tmp_path / "data", settings, progress=False)[1]
    assert marker.exists()
    other = DemoSettings(train_images=3, val_images=1, image_size=48, supercategories=("Bottle", "Fish"))
    assert not prepare_toyparts(tmp_path / "data", other, progress=False)[1]
    assert not marker.exists() and len(load_split(tmp_path / "data", "train").images) == 3


def test_targets_pass_and_fail():
    methods = {
        "wps-sam-box": {"miou": 0.6},
        "wps-sam-point": {"miou": 0.5},
        "sam-gt-box-oracle": {"miou": 0.7},
        "box-fill": {"miou": 0.45},
        "fully-supervised": {"miou": None},
        "fully-supervised-sam-head": {"miou": 0.55},
    }
    result = {t["target"]: t for t in targets(methods)}
    assert result["wps-sam-box >= 0.85 x sam-gt-box-oracle"]["pass"]  # 0.6 >= 0.595
    assert not result["wps-sam-point >= 0.75 x sam-gt-box-oracle"]["pass"]  # 0.5 < 0.525
    assert result["wps-sam-point >= 0.75 x sam-gt-box-oracle"]["threshold"] == pytest.approx(0.525)
    assert not result["wps-sam-box >= fully-supervised"]["pass"]
    assert result["wps-sam-box >= fully-supervised-sam-head"]["pass"]
    assert all("note" not in t for t in result.values())
    scaled = {t["target"]: t for t in targets(methods, steps_scale=5)}
    assert not scaled["wps-sam-box >= 0.9 x sam-gt-box-oracle"]["pass"]  # 0.6 < 0.63
    assert len(scaled) == len(result) + 1


def test_a_method_at_the_all_background_floor_meets_no_target():
    methods = {name: {"miou": 0.035} for name in ("wps-sam-box", "wps-sam-point", "fully-supervised")}
    methods.update({"sam-gt-box-oracle": {"miou": 0.0}, "fully-supervised-sam-head": {"miou": 0.0}})
    result = targets(methods, floor=0.035)
    assert [t["pass"] for t in result] == [False] * 4  # thresholds 0.0, 0.0, 0.035, 0.0 are all met
    assert "predicts no part" in result[2]["note"]
    assert [t["pass"] for t in targets(methods)] == [True] * 4  # without the floor, they would pass


def test_beating_an_untrained_baseline_is_no_result():
    methods = {
        "wps-sam-box": {"miou": 0.5},
        "wps-sam-point": {"miou": 0.4},
        "sam-gt-box-oracle": {"miou": 0.55},
        "fully-supervised": {"miou": 0.06},  # 2.5 points above the floor
        "fully-supervised-sam-head": {"miou": 0.3},
    }
    result = {t["target"]: t for t in targets(methods, floor=0.035)}
    assert not result["wps-sam-box >= fully-supervised"]["pass"]
    assert "within 0.05 of the all-background floor" in result["wps-sam-box >= fully-supervised"]["note"]
    assert result["wps-sam-box >= fully-supervised-sam-head"]["pass"]


SMOKE_SETTINGS = DemoSettings(
    train_images=4,
    val_images=2,
    image_size=64,
    overrides=(
        "train.max_steps=2",
        "train.batch_size=2",
        "train.warmup_steps=1",
        "prompter.num_queries=16",
        "prompter.hidden_dim=32",
        "prompter.dim_feedforward=64",
        "prompter.nheads=4",
    ),
    fs_steps=1,
    fs_batch_size=2,
    head_steps=2,
    head_batch_size=2,
    grid_images=2,
)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:SAM tiny has random weights")
def test_demo_smoke(tmp_path):
    sam_file = tmp_path / "sam_tiny_random.pth"
    torch.save(build_sam("tiny", "random").state_dict(), sam_file)
    out = tmp_path / "demo"
    results = run_demo(
        out, SMOKE_SETTINGS, steps_scale=2, sam_checkpoint=str(sam_file), seed=3, progress=False
    )

    for name in ("results.json", "results.md", "results.png", "overlays.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    assert saved["methods"].keys() == set(METHODS) and list(saved["methods"]) == list(METHODS)
    assert saved == json.loads(json.dumps(results))
    classes = saved["data"]["classes"]
    for name, result in saved["methods"].items():
        for key in ("miou", "macc"):
            assert result[key] is None or 0.0 <= result[key] <= 1.0, (name, key)
        assert [c["name"] for c in result["per_class"]] == ["background", *classes], name
    assert len(classes) == 23 and saved["data"]["train_images"] == 4 and saved["data"]["val_images"] == 2
    assert [t["target"] for t in saved["targets"]][0] == "wps-sam-box >= 0.85 x sam-gt-box-oracle"
    assert saved["configs"]["wps-sam-box"]["train"]["recipe"] == DEFAULT_RECIPE
    assert all(isinstance(t["pass"], bool) for t in saved["targets"])
    assert saved["sam"]["sha256"] == saved["configs"]["wps-sam-box"]["sam"]["sha256"]
    assert saved["configs"]["wps-sam-point"]["data"]["supervision"] == "point"
    assert saved["configs"]["wps-sam-box"]["train"]["seed"] == 3
    assert saved["environment"]["threads"] >= 1 and saved["timings_s"]["total"] > 0
    # bf16 autocast on the CPU where it computes bf16 natively, recorded with the settings
    assert saved["settings"]["cpu_bf16"] is cpu_has_native_bf16()
    assert saved["configs"]["wps-sam-box"]["train"]["cpu_amp"] is cpu_has_native_bf16()
    # steps_scale=2 doubles every trained method's steps: 2 -> 4 prompter steps, 1 -> 2 LR-ASPP steps.
    assert saved["budgets"]["wps-sam-box"]["image_passes"] == 8
    assert (
        saved["settings"]["steps_scale"] == 2 and saved["configs"]["wps-sam-box"]["train"]["max_steps"] == 4
    )
    # The 4 training images and, for the default recipe's hflip augmentation, their mirror images.
    assert saved["budgets"]["wps-sam-box"]["encoder_pass"]["encoded"] == 8
    assert saved["budgets"]["fully-supervised"]["steps"] == 2
    assert saved["budgets"]["fully-supervised-sam-head"]["steps"] == 4
    # The demo mirrors at test time, every method alike (the held-out mirror images are encoded too).
    assert saved["flip_test"] is True and saved["configs"]["wps-sam-point"]["inference"]["flip_test"] is True
    floor = saved["references"]["all-background"]
    assert 0.0 < floor["miou"] < 1.0 and "all-background" in (out / "results.md").read_text()


@pytest.mark.parametrize(("argv", "expected"), [([], None), (["--no-bf16"], False)])
def test_no_bf16_makes_the_demo_train_in_float32(monkeypatch, tmp_path, argv, expected, capsys):
    import wps_sam.demo.runner as runner
    from wps_sam.cli import main

    seen = {}
    results = {
        "methods": {"wps-sam-box": {"miou": 0.4321, "macc": 0.5}},
        "targets": [{"target": "wps-sam-box >= 0.85 x sam-gt-box-oracle", "miou": 0.4321, "threshold": 0.5,
                     "pass": False}],
        "timings_s": {"total": 61.0},
    }  # fmt: skip
    monkeypatch.setattr(
        runner, "run_demo", lambda out, settings, **_: seen.update(settings=settings) or results
    )
    assert main(["demo", "--out", str(tmp_path), *argv]) == 0
    assert seen["settings"].cpu_bf16 is expected  # None: bf16 where the CPU computes it natively
    printed = capsys.readouterr().out  # the table of results.md, and where the files are
    assert "| wps-sam-box | boxes | 43.2 | 50.0 |" in printed and "| 43.2 | 50.0 | FAIL |" in printed
    assert (
        f"results.json, results.md, results.png, overlays.png and the runs to {tmp_path} in 61 s" in printed
    )


def test_the_demo_evaluates_on_its_cached_held_out_embeddings_only_where_they_are_the_evaluators(tmp_path):
    # The cache mirrors an image before it is fitted into SAM's frame, the evaluator the frame:
    # the same for square images (ToyParts'), not for others, whose evaluation encodes afresh.
    cached = {"val": torch.randn(2, 4, 2, 2), MIRRORED_VAL: torch.randn(2, 4, 2, 2)}
    for name, sizes, expected in [("square", (48, 48), (cached["val"], cached[MIRRORED_VAL])),
                                  ("oblong", (40, 72), (None, None))]:  # fmt: skip
        write_part_dataset(tmp_path / name, "val", 2, size_range=sizes, seed=4)
        index = load_split(tmp_path / name, "val")
        assert any(e.height != e.width for e in index.images) == (name == "oblong")
        assert held_out_embeddings(HeldOutSplit(index, [], []), cached) == expected
