"""Box supervision never reads a part's point: the trainer's cheap box centres change nothing."""

import pytest
import torch
from safetensors.torch import load_file
from tests.data.fixtures import write_part_dataset

from wps_sam.cli import main

SMALL = ["prompter.enc_layers=1", "prompter.dec_layers=1", "prompter.hidden_dim=32", "prompter.nheads=2",
         "prompter.dim_feedforward=64", "prompter.num_queries=4", "prompter.dense_width=16"]  # fmt: skip


# detr-fast: its denoising queries are made from the weak labels too.
@pytest.mark.parametrize("kind", ["dense", "detr-fast"])
def test_box_training_does_not_depend_on_the_point_mode(tmp_path, sam_file, kind):
    write_part_dataset(tmp_path / "data", "train", 3, size_range=(24, 40), seed=5)
    weights = {}
    for mode in ("interior", "box_center"):
        out = tmp_path / f"{kind}-{mode}"
        args = ["train", "--data", str(tmp_path / "data"), "--out", str(out), "--sam-type", "vit_mini",
                "--sam-checkpoint", str(sam_file), "--recipe", kind, "--max-steps", "3", "--batch-size", "1",
                "--seed", "1", "--supervision", "box", "--no-progress",
                "--set", f"data.point_mode={mode}", "train.validate=false", "train.cache=false", *SMALL]  # fmt: skip
        assert main(args) == 0
        weights[mode] = load_file(out / "model.safetensors")
    assert weights["interior"].keys() == weights["box_center"].keys()
    for name, value in weights["interior"].items():
        torch.testing.assert_close(weights["box_center"][name], value, rtol=0, atol=0)
