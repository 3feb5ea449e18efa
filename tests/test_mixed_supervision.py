"""Mixed supervision: parts labelled by a box or by a point only, in one data set.

Reading (``point`` and COCO ``keypoints``), the data set's targets, ToyParts' ``--point-fraction``,
the teacher targets of each kind, matching and losses against the head of each part's kind (set and
dense prompters), decoding with either head, and the whole pipeline through the CLI.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.data.fixtures import write_part_dataset
from tests.test_end_to_end import train_command

from wps_sam.cli import main
from wps_sam.config import ConfigError, load_config
from wps_sam.data.coco import load_split, mirror_entry, rescale_entry
from wps_sam.data.datasets import PartSegmentationDataset, check_supervision
from wps_sam.data.targets import weak_points
from wps_sam.data.transforms import SamTransform
from wps_sam.errors import DataError
from wps_sam.modeling.criterion import SetCriterion
from wps_sam.modeling.dense_criterion import DenseCriterion
from wps_sam.modeling.dense_prompter import DensePrompter
from wps_sam.modeling.matcher import HungarianMatcher
from wps_sam.modeling.prompter import Prompter
from wps_sam.modeling.wps_sam import WPSSAM
from wps_sam.sam.decoder import PromptMaskDecoder
from wps_sam.sam.teacher import TeacherTokens
from wps_sam.synthetic.point_labels import keep_points_only
from wps_sam.synthetic.toyparts import generate_toyparts


def _to_points(json_path, every: int = 2, keypoints_every: int = 4) -> list[int]:
    """Reduce every ``every``-th annotation to a click at its box centre (``keypoints`` for every
    ``keypoints_every``-th, ``point`` otherwise); returns their ids."""
    data = json.loads(json_path.read_text())
    ids = []
    for k, ann in enumerate(data["annotations"]):
        if k % every:
            continue
        x, y, w, h = ann.pop("bbox")
        ann.pop("segmentation", None)
        ann.pop("area", None)
        if k % keypoints_every == 0:
            ann["keypoints"] = [0, 0, 0, x + w / 2, y + h / 2, 2]  # the first labelled one counts
        else:
            ann["point"] = [x + w / 2, y + h / 2]
        ids.append(ann["id"])
    json_path.write_text(json.dumps(data))
    return ids


@pytest.fixture(scope="module")
def mixed_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    _to_points(write_part_dataset(root, "train", 8, size_range=(40, 72), seed=1))
    write_part_dataset(root, "val", 3, size_range=(40, 72), seed=2)
    return root


# --- reading --------------------------------------------------------------------------------------


def test_point_only_parts_are_read_with_their_click(tmp_path):
    path = write_part_dataset(tmp_path, "train", 4, seed=3)
    ids = _to_points(path)
    index = load_split(tmp_path, "train")
    parts = {p.ann_id: p for e in index.images for p in e.parts}
    assert not index.skipped_annotations and len(parts) == len(json.loads(path.read_text())["annotations"])
    anns = {a["id"]: a for a in json.loads(path.read_text())["annotations"]}
    for ann_id, part in parts.items():
        if ann_id in ids:
            click = anns[ann_id].get("point") or anns[ann_id]["keypoints"][3:5]
            assert part.box is None and part.segmentation is None and not part.has_box
            np.testing.assert_allclose(part.point, click)
        else:
            assert part.has_box and part.point is None


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"point": [1.0]}, "malformed point"),
        ({"point": [float("nan"), 2.0]}, "malformed point"),
        ({"point": [500.0, 2.0]}, "outside"),
        ({"keypoints": [1, 2, 0]}, "no labelled keypoint"),
        ({"keypoints": [1, 2]}, "malformed keypoints"),
    ],
)
def test_unusable_points_are_skipped_with_a_reason(tmp_path, fields, reason):
    path = write_part_dataset(tmp_path, "train", 1, max_parts=1, seed=4)
    data = json.loads(path.read_text())
    ann = data["annotations"][0]
    for key in ("bbox", "segmentation", "area"):
        ann.pop(key, None)
    ann.update(fields)
    path.write_text(json.dumps(data))
    index = load_split(tmp_path, "train")
    assert index.num_parts == 0
    assert reason in index.skipped_annotations[0]["reason"]


def test_a_boxed_part_keeps_its_click_and_it_is_the_point(tmp_path):
    path = write_part_dataset(tmp_path, "train", 1, max_parts=1, seed=5)
    data = json.loads(path.read_text())
    x, y, w, h = data["annotations"][0]["bbox"]
    data["annotations"][0]["point"] = [x + 1.5, y + 1.5]
    path.write_text(json.dumps(data))
    entry = load_split(tmp_path, "train").images[0]
    part = entry.parts[0]
    assert part.has_box and part.segmentation is not None
    for mode in ("interior", "box_center"):
        np.testing.assert_allclose(
            weak_points(entry.parts, entry.height, entry.width, mode)[0], [x + 1.5, y + 1.5]
        )


def test_points_follow_rescaling_and_mirroring(mixed_root):
    entry = next(e for e in load_split(mixed_root, "train").images if any(not p.has_box for p in e.parts))
    k = next(i for i, p in enumerate(entry.parts) if not p.has_box)
    x, y = entry.parts[k].point
    assert rescale_entry(entry, entry.height * 2, entry.width * 3).parts[k].point.tolist() == [3 * x, 2 * y]
    mirrored = mirror_entry(entry).parts[k]
    assert mirrored.box is None and mirrored.point.tolist() == pytest.approx([entry.width - x, y])


def test_check_data_counts_point_only_parts(mixed_root, capsys):
    assert main(["check-data", "--data", str(mixed_root), "--split", "train", "--no-progress"]) == 0
    index = load_split(mixed_root, "train")
    clicked = sum(not p.has_box for e in index.images for p in e.parts)
    assert (
        clicked
        and f"parts: {index.num_parts} usable ({clicked} labelled by a point only)" in capsys.readouterr().out
    )


def test_the_dataset_marks_point_only_parts(mixed_root):
    index = load_split(mixed_root, "train")
    dataset = PartSegmentationDataset(index, SamTransform(256), "mixed")
    for i in range(len(dataset)):
        item = dataset.targets(i, (index.images[i].height, index.images[i].width))
        has_box = torch.tensor([p.has_box for p in index.images[i].parts])
        assert torch.equal(item["has_box"], has_box)
        assert torch.isnan(item["boxes"][~has_box]).all() and torch.isfinite(item["boxes"][has_box]).all()
        assert torch.isfinite(item["points"]).all()
    check_supervision(index, "mixed")
    check_supervision(index, "point")
    with pytest.raises(DataError, match="labelled by a point only; train with --supervision mixed"):
        check_supervision(index, "box")


def test_toyparts_point_fraction(tmp_path):
    plain = generate_toyparts(tmp_path / "plain", train=6, val=2, size=128, seed=3)
    mixed = generate_toyparts(tmp_path / "mixed", train=6, val=2, size=128, seed=3, point_fraction=0.5)
    n = plain["splits"]["train"]["annotations"]
    assert mixed["splits"]["train"]["point_only"] == round(0.5 * n)
    assert mixed["splits"]["val"]["point_only"] == 0
    for split in ("train", "val"):  # the images do not depend on the labels
        for path in (tmp_path / "plain" / "images" / split).iterdir():
            assert path.read_bytes() == (tmp_path / "mixed" / "images" / split / path.name).read_bytes()
    index = load_split(tmp_path / "mixed", "train")
    reference = {p.ann_id: p for e in load_split(tmp_path / "plain", "train").images for p in e.parts}
    points = [p for e in index.images for p in e.parts if not p.has_box]
    assert len(points) == round(0.5 * n) and not index.skipped_annotations
    for p in points:  # the click lies inside the part it stands for
        x0, y0, x1, y1 = reference[p.ann_id].box
        assert x0 <= p.point[0] <= x1 and y0 <= p.point[1] <= y1
    assert load_split(tmp_path / "mixed", "val").has_masks
    again = generate_toyparts(tmp_path / "again", train=6, val=2, size=128, seed=3, point_fraction=0.5)
    assert again["splits"] == mixed["splits"]
    assert (tmp_path / "again/annotations/train/train.json").read_text() == (
        tmp_path / "mixed/annotations/train/train.json"
    ).read_text()


def test_keep_points_only_takes_the_given_clicks_of_the_same_parts(tmp_path):
    generate_toyparts(tmp_path, train=4, val=1, size=96, seed=5)
    anns = json.loads((tmp_path / "annotations/train/train.json").read_text())["annotations"]
    interior = keep_points_only(anns, 0.5, 7, 96, 96)
    clicks = {a["id"]: [a["id"] + 0.25, 2 * a["id"] + 0.5] for a in anns}
    given = keep_points_only(anns, 0.5, 7, 96, 96, clicks)
    assert [("point" in a, a["id"]) for a in given] == [("point" in a, a["id"]) for a in interior]
    for ann in given:
        if "point" in ann:
            assert ann["point"] == clicks[ann["id"]] and "bbox" not in ann and "segmentation" not in ann
        else:
            assert ann in anns
    with pytest.raises(ValueError, match="no click given for annotation"):
        keep_points_only(anns, 1.0, 7, 96, 96, {})


# --- the model ----------------------------------------------------------------------------------


def _model(mini_sam, prompter, supervision="mixed", prompt="box") -> WPSSAM:
    return WPSSAM(
        mini_sam.image_encoder,
        prompter,
        TeacherTokens(mini_sam.prompt_encoder),
        PromptMaskDecoder(mini_sam.prompt_encoder, mini_sam.mask_decoder),
        supervision,
        prompt,
    )


def _mixed_targets(seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    targets = []
    for n in (3, 2):
        xy = torch.rand(n, 2, generator=g) * 180
        boxes = torch.cat([xy, xy + 20 + torch.rand(n, 2, generator=g) * 40], dim=1)
        has_box = torch.tensor([True, False, True][:n])
        boxes[~has_box] = float("nan")
        points = xy + 10
        labels = torch.randint(0, 3, (n,), generator=g)
        targets.append({"labels": labels, "boxes": boxes, "points": points, "has_box": has_box})
    return targets


def test_teacher_targets_of_each_kind(mini_sam):
    model = _model(mini_sam, DensePrompter(3, "mixed", embed_size=(16, 16)))
    targets = _mixed_targets()
    model.attach_targets(targets)
    teacher = model.teacher
    for t in targets:
        box, point = t["has_box"], ~t["has_box"]
        torch.testing.assert_close(t["tokens"][box], teacher(boxes=t["boxes"][box]))
        torch.testing.assert_close(t["tokens"][point], teacher(points=t["points"][point]))
        assert t["geometry"].shape == (len(t["labels"]), 4)
        torch.testing.assert_close(
            t["geometry"][point], torch.cat([t["points"][point] / 256, torch.zeros(1, 2)], 1)
        )
        torch.testing.assert_close(t["geometry"][box, 2:], (t["boxes"][box, 2:] - t["boxes"][box, :2]) / 256)


def test_matching_compares_each_part_with_the_head_of_its_kind():
    """Each query's point head holds one point part's tokens exactly and its box head another box
    part's: the matcher must pair each part with the query whose head of its kind fits."""
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(4, 2, 256, generator=g)
    has_box = torch.tensor([True, False, True, False])
    targets = [{"labels": torch.zeros(4, dtype=torch.long), "tokens": tokens, "has_box": has_box}]
    order = torch.tensor([2, 0, 3, 1])  # part j is held by query order[j]
    box_tokens, point_tokens = torch.randn(2, 4, 2, 256, generator=g)
    box_tokens[order[has_box]] = tokens[has_box]
    point_tokens[order[~has_box]] = tokens[~has_box]
    outputs = {
        "pred_logits": torch.zeros(1, 4, 2),
        "pred_tokens": box_tokens[None],
        "pred_point_tokens": point_tokens[None],
    }
    queries, parts = HungarianMatcher(cost_class=1.0, cost_token=1.0)(outputs, targets)[0]
    assert torch.equal(order[parts], queries)
    criterion = SetCriterion(1, HungarianMatcher(1.0, 1.0), {"loss_ce": 1.0, "loss_token": 1.0})
    assert criterion(outputs, targets)["loss_token"].item() == 0.0
    swapped = criterion(outputs | {"pred_point_tokens": box_tokens[None]}, targets)["loss_token"]
    assert swapped.item() > 0.1


def test_the_set_prompter_has_a_point_head_under_mixed_supervision(mini_sam):
    kwargs = {"embed_size": (16, 16), "num_queries": 4, "hidden_dim": 32, "nheads": 4, "enc_layers": 1}
    prompter = Prompter(3, **kwargs, dec_layers=1, dim_feedforward=64, point_head=True)
    out = prompter(torch.randn(2, 256, 16, 16))
    assert out["pred_tokens"].shape == out["pred_point_tokens"].shape == (2, 4, 2, 256)
    model = _model(mini_sam, prompter.eval(), prompt="point")
    embedding = torch.randn(1, 256, 16, 16)
    torch.testing.assert_close(model(embedding)["pred_tokens"], prompter(embedding)["pred_point_tokens"])
    assert model.decodes_points and not _model(mini_sam, prompter).decodes_points


def test_dense_mixed_trains_each_head_from_its_parts(mini_sam):
    prompter = DensePrompter(3, "mixed", embed_size=(16, 16), width=32, dilations=(1,))
    model = _model(mini_sam, prompter)
    targets = _mixed_targets()
    model.attach_targets(targets)
    criterion = DenseCriterion(3, {"loss_heatmap": 1.0, "loss_geom": 1.0, "loss_giou": 1.0})
    outputs = prompter.train()(torch.randn(2, 256, 16, 16))
    assert outputs["geometry"].shape[-1] == 4 and outputs["point_geometry"].shape[-1] == 2
    criterion.weighted_total(criterion(outputs, targets)).backward()
    assert prompter.point_geometry[-1].weight.grad.abs().sum() > 0
    assert prompter.geometry[-1].weight.grad.abs().sum() > 0
    # Every part boxed: exactly the box criterion.
    boxed = _mixed_targets()
    for t in boxed:
        t["boxes"] = torch.cat([t["points"], t["points"] + 9], dim=1)
        t["has_box"] = torch.ones_like(t["has_box"])
    model.attach_targets(boxed)
    embedding = torch.randn(2, 256, 16, 16)
    mixed = criterion(prompter(embedding), boxed)
    plain = criterion({k: v for k, v in prompter(embedding).items() if k != "point_geometry"}, boxed)
    for key in ("loss_heatmap", "loss_geom", "loss_giou"):
        torch.testing.assert_close(mixed[key], plain[key])
    # Inference: both heads at the peaks; the model decodes the one it is told to.
    prompter.eval()
    peaks = prompter(embedding)
    assert peaks["pred_geometry"].shape[-1] == 4 and peaks["pred_point_geometry"].shape[-1] == 2
    point_model = _model(mini_sam, prompter, prompt="point")
    torch.testing.assert_close(
        point_model(embedding)["pred_tokens"],
        point_model.teacher(points=peaks["pred_point_geometry"].flatten(0, 1) * 256).view(2, -1, 2, 256),
    )


def test_mixed_refuses_single_kind_switches():
    with pytest.raises(ConfigError, match="supervision=mixed"):
        load_config(overrides=["data.supervision=mixed", "train.recipe=detr-fast"])
    assert load_config(overrides=["data.supervision=mixed", "train.recipe=paper"]).data.supervision == "mixed"


# --- the whole pipeline -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["paper", "dense"])
def test_train_eval_predict_mixed(tmp_path, sam_file, mixed_root, recipe):
    run = tmp_path / "run"
    options = ("--supervision", "mixed", "--batch-size", "4")
    assert main(train_command(mixed_root, run, sam_file, recipe, 8, *options)) == 0
    scores = {}
    for prompt in ("box", "point"):
        assert main(["eval", str(run), "--data", str(mixed_root), "--prompt", prompt, "--no-progress"]) == 0
        scores[prompt] = json.loads((run / "eval-val.json").read_text())["miou"]
        out = tmp_path / f"pred-{prompt}"
        images = str(mixed_root / "images" / "val")
        assert (
            main(["predict", str(run), images, "--out", str(out), "--prompt", prompt, "--no-progress"]) == 0
        )
        assert len(json.loads((out / "predictions.json").read_text())["images"]) == 3
    assert all(0.0 <= s <= 1.0 for s in scores.values())


def test_a_single_kind_run_has_one_head(tmp_path, sam_file, capsys):
    data_root = tmp_path / "parts"
    write_part_dataset(data_root, "train", 4, size_range=(40, 72), seed=1)
    write_part_dataset(data_root, "val", 2, size_range=(40, 72), seed=2)
    run = tmp_path / "run"
    assert main(train_command(data_root, run, sam_file, "paper", 1)) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--data", str(data_root), "--prompt", "point", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "has only a box head" in err and len(err.strip().splitlines()) == 1
