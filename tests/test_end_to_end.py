"""The whole pipeline through the CLI, on CPU, with a tiny SAM written in the official layout."""

import json

import numpy as np
import pytest
from PIL import Image
from tests.data.fixtures import write_part_dataset

from wps_sam.cli import main
from wps_sam.export import decode_rle
from wps_sam.recipes import DEFAULT_RECIPE

# Steps of the end-to-end run: the dense prompter's heat-map loss is a sum over cells and falls
# more slowly from its start.
STEPS = {"paper": 24, DEFAULT_RECIPE: 48}
SMALL_PROMPTER = [
    "prompter.enc_layers=1",
    "prompter.dec_layers=2",
    "prompter.hidden_dim=64",
    "prompter.nheads=4",
    "prompter.dim_feedforward=128",
    "prompter.num_queries=8",
    "train.warmup_steps=2",
    "train.log_every=1",
]


def train_command(data_root, run, sam_file, recipe: str, steps: int, *options: str) -> list[str]:
    """``wps-sam train`` of the small prompter on ``vit_mini`` (``sam_file``), without progress bars;
    more ``--set`` overrides may follow the returned list."""
    return [
        "train", "--data", str(data_root), "--out", str(run), "--sam-type", "vit_mini",
        "--sam-checkpoint", str(sam_file), "--recipe", recipe, "--max-steps", str(steps), *options,
        "--no-progress", "--set", *SMALL_PROMPTER,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    write_part_dataset(root, "train", 8, size_range=(40, 72), seed=1)
    write_part_dataset(root, "val", 3, size_range=(40, 72), seed=2, segmentation="mixed")
    return root


def _event_tags(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return set(events.Tags()["scalars"])


def _losses(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["paper", DEFAULT_RECIPE])
@pytest.mark.parametrize("supervision", ["box", "point"])
def test_train_eval_predict(tmp_path, sam_file, data_root, supervision, recipe):
    run = tmp_path / f"run-{supervision}"
    steps = STEPS[recipe]
    options = ("--supervision", supervision, "--batch-size", "4", "--lr", "1e-3")
    assert main(train_command(data_root, run, sam_file, recipe, steps, *options)) == 0
    for name in ("config.yaml", "model.safetensors", "metrics.jsonl", "resume.pt"):
        assert (run / name).is_file(), name
    losses = _losses(run)
    assert len(losses) == steps
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4])
    assert {"train/loss", "train/lr", "train/match_recall", "val/miou", "val/macc"} <= _event_tags(run / "tb")
    assert main(["plot", str(run)]) == 0 and (run / "curves.png").stat().st_size > 0

    assert main(["eval", str(run), "--data", str(data_root), "--split", "val", "--no-progress"]) == 0
    result = json.loads((run / "eval-val.json").read_text())
    assert np.asarray(result["confusion"]).shape == (4, 4)
    for chart in ("eval-val-per-class.png", "eval-val-confusion.png"):
        assert Image.open(run / chart).size[0] > 100, chart
    for key in ("miou", "macc"):
        assert 0.0 <= result[key] <= 1.0
        assert 0.0 <= result["paper_protocol"][key] <= 1.0
    assert [c["name"] for c in result["per_class"]] == ["background", "part1", "part2", "part3"]
    flip_eval = ["eval", str(run), "--data", str(data_root), "--no-progress"]
    if recipe == DEFAULT_RECIPE:  # mirrored at test time by default: the same report from one view
        assert main([*flip_eval, "--no-flip-test"]) == 0
        single_view = json.loads((run / "eval-val.json").read_text())
        assert single_view["images"] == result["images"] and 0.0 <= single_view["miou"] <= 1.0
        # An inference setting changed at evaluation: no peak reaches 0.9999999, so no part is painted.
        assert main([*flip_eval, "--set", "inference.peak_threshold=0.9999999"]) == 0
        strict = json.loads((run / "eval-val.json").read_text())
        assert strict["inference"]["peak_threshold"] == 0.9999999
        assert np.asarray(strict["confusion"])[:, 1:].sum() == 0
        assert main([*flip_eval, "--set", "train.lr=1.0"]) == 2  # how the weights were made: refused
    else:  # the set prompter has no maps to average: a one-line error
        assert main([*flip_eval, "--flip-test"]) == 2

    out = tmp_path / "pred"
    images = data_root / "images" / "val"
    (images / "broken.jpg").write_bytes(b"not an image")
    assert main(["predict", str(run), str(images), "--out", str(out), "--no-progress"]) == 0
    (images / "broken.jpg").unlink()
    predictions = json.loads((out / "predictions.json").read_text())
    assert len(predictions["images"]) == 3
    assert [u["file"].endswith("broken.jpg") for u in predictions["unreadable"]] == [True]
    assert predictions["inference"] == result["inference"]
    for record in predictions["images"]:
        stem = record["file"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        label_map = np.array(Image.open(out / f"{stem}.png"))
        assert label_map.shape == (record["height"], record["width"])
        assert label_map.max() <= 3
        assert (out / f"{stem}_overlay.png").is_file()
        for inst in record["instances"]:
            assert decode_rle(inst["segmentation"]).shape == label_map.shape
    if recipe == DEFAULT_RECIPE:
        strict_out = tmp_path / "pred-strict"
        argv = ["predict", str(run), str(images), "--out", str(strict_out), "--no-progress"]
        assert main([*argv, "--set", "inference.peak_threshold=0.9999999"]) == 0
        strict = json.loads((strict_out / "predictions.json").read_text())
        assert strict["inference"]["peak_threshold"] == 0.9999999
        assert [r["instances"] for r in strict["images"]] == [[]] * 3


@pytest.mark.parametrize(
    "switches",
    [
        ["prompter.two_stage=true"],
        ["prompter.dn_groups=2"],
        ["prompter.geometry_head=true"],
        ["prompter.two_stage=true", "prompter.dn_groups=2", "prompter.groups=2", "prompter.aux_loss=true"],
    ],
)
def test_every_switch_trains_from_points(tmp_path, sam_file, data_root, switches):
    """Proposals, denoising anchors and the geometry head all take the supervision's geometry."""
    run = tmp_path / "run"
    options = ("--supervision", "point", "--batch-size", "4")
    assert main([*train_command(data_root, run, sam_file, "paper", 3, *options), *switches]) == 0
    assert len(_losses(run)) == 3 and all(np.isfinite(_losses(run)))


def test_eval_without_masks_is_one_line(tmp_path, sam_file, capsys):
    root = tmp_path / "boxes"
    write_part_dataset(root, "train", 4, segmentation="none", seed=3)
    write_part_dataset(root, "val", 2, segmentation="none", seed=4)
    run = tmp_path / "run"
    assert main(train_command(root, run, sam_file, DEFAULT_RECIPE, 2, "--batch-size", "2")) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--data", str(root), "--split", "val", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no segmentation masks" in err
