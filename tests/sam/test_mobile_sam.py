"""MobileSAM (vit_t): its released checkpoint layout loads unchanged, strictly, and it runs as SAM does."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from wps_sam.errors import CheckpointError
from wps_sam.sam.backbones import build_sam
from wps_sam.sam.checkpoint import guess_sam_type

mobile_sam = pytest.importorskip("mobile_sam", reason="the mobile extra is part of [dev]")


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A checkpoint in mobile_sam.pt's layout, written by the MobileSAM package itself."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = mobile_sam.sam_model_registry["vit_t"]().eval()
    path = tmp_path_factory.mktemp("mobile") / "mobile_sam.pt"
    torch.save(model.state_dict(), path)
    return model, path


def test_every_tensor_loads_unchanged(official):
    reference, path = official
    sam = build_sam("vit_t", path)
    ours, theirs = sam.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert sam.image_encoder.img_size == 1024 and tuple(sam.prompt_encoder.image_embedding_size) == (64, 64)
    assert guess_sam_type(theirs) == "vit_t"


def test_the_embedding_is_mobile_sams(official):
    reference, path = official
    sam = build_sam("vit_t", path)
    torch.set_num_threads(1)
    x = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        assert torch.equal(sam.image_encoder(x), reference.image_encoder(x))


def test_wrong_files_name_the_key_and_the_file(official, tmp_path):
    reference, _ = official
    state = reference.state_dict()
    state.pop("image_encoder.patch_embed.seq.0.c.weight")
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    with pytest.raises(CheckpointError, match=r"broken.pt.*image_encoder.patch_embed.seq.0.c.weight"):
        build_sam("vit_t", broken)
    with pytest.raises(CheckpointError, match=r"use --sam-type vit_t"):
        build_sam("vit_b", official[1])
    with pytest.raises(CheckpointError, match=r"mobile_sam.pt"):
        build_sam("vit_t", None)


@pytest.mark.slow
def test_train_eval_predict_and_the_cache_with_mobile_sam(official, tmp_path, capsys):
    from tests.data.fixtures import write_part_dataset

    from wps_sam.cli import main

    _, path = official
    write_part_dataset(tmp_path / "data", "train", 2, size_range=(40, 60), seed=1)
    write_part_dataset(tmp_path / "data", "val", 1, size_range=(40, 60), seed=2)
    sam = ["--sam-type", "vit_t", "--sam-checkpoint", str(path)]
    run = tmp_path / "run"
    assert main(["cache", "--data", str(tmp_path / "data"), *sam, "--no-progress"]) == 0
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(run), *sam, "--max-steps", "2",
                 "--batch-size", "2", "--no-progress", "--set", "prompter.dense_width=16"]) == 0  # fmt: skip
    assert main(["eval", str(run), "--data", str(tmp_path / "data"), "--no-progress"]) == 0
    assert json.loads((run / "eval-val.json").read_text())["images"] == 1
    image = next((tmp_path / "data" / "images" / "val").iterdir())
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "pred"), "--no-progress"]) == 0
    assert (tmp_path / "pred" / "predictions.json").is_file()
