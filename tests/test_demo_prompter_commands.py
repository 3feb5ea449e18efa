"""The demo prompter shipped in the package answers to ``demo`` wherever a run is expected, and a
run's weights file stands for its run: ``wps-sam eval demo``, ``wps-sam predict demo``."""

import json
import shutil

import pytest

from wps_sam.cli import main
from wps_sam.demo.settings import DemoSettings
from wps_sam.predictor import PartPredictor, prompter_weights, shipped_demo_prompter
from wps_sam.serve import bundled_examples
from wps_sam.synthetic.toyparts import generate_toyparts


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """The first 6 images of the demo's held-out split (the demo's classes, size and seed)."""
    root = tmp_path_factory.mktemp("toyparts")
    demo = DemoSettings()
    generate_toyparts(root, 0, 6, demo.image_size, demo.data_seed, supercategories=demo.supercategories)
    return root


def test_demo_names_the_shipped_prompter(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert prompter_weights("demo") == shipped_demo_prompter()
    (tmp_path / "demo").mkdir()  # a run folder of that name wins
    assert prompter_weights("demo").resolve() == tmp_path / "demo" / "model.safetensors"


def test_eval_and_predict_run_the_shipped_prompter(held_out, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "demo", "--data", str(held_out), "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "eval-val.json").read_text())
    assert result["images"] == 6 and result["miou"] > 0.3  # the all-background floor is ~0.04
    assert (out / "eval-val-per-class.png").is_file()

    predicted = tmp_path / "predicted"
    assert (
        main(["predict", "demo", str(bundled_examples()[0]), "--out", str(predicted), "--no-progress"]) == 0
    )
    record = json.loads((predicted / "predictions.json").read_text())
    assert record["class_names"] == PartPredictor.from_run("demo", "cpu").class_names
    assert len(record["images"]) == 1 and record["images"][0]["instances"]


def test_a_weights_file_stands_for_its_run(held_out, tmp_path, capsys):
    """Copied out of the install, the weights evaluate into their own folder, as a run would."""
    weights = tmp_path / "copied" / "demo.safetensors"
    weights.parent.mkdir()
    shutil.copy(shipped_demo_prompter(), weights)
    assert main(["eval", str(weights), "--data", str(held_out), "--no-progress"]) == 0
    assert (weights.parent / "eval-val.json").is_file()
    assert '"miou"' in capsys.readouterr().out
