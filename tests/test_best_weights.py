"""The best validation's weights: RUN/best holds the epoch of the highest validation mIoU, survives
resume, and is a run folder that `wps-sam eval` takes."""

import json

import pytest
import torch
from safetensors.torch import load_file
from tests.data.fixtures import write_part_dataset
from tests.test_end_to_end import train_command

from wps_sam.cli import main
from wps_sam.engine import run_dir, trainer
from wps_sam.evaluation import evaluator
from wps_sam.recipes import DEFAULT_RECIPE

# 8 training images and their mirrors in batches of 8: two steps per epoch, three epochs.
STEPS_PER_EPOCH, EPOCHS = 2, 3


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    write_part_dataset(root, "train", 8, size_range=(40, 72), seed=1)
    write_part_dataset(root, "val", 3, size_range=(40, 72), seed=2)
    return root


class ScriptedValidation:
    """Stands in for the evaluator: returns the given mIoUs in turn and keeps the weights it was shown."""

    def __init__(self, mious: list[float]) -> None:
        self.mious = iter(mious)
        self.weights: list[dict[str, torch.Tensor]] = []

    def __call__(self, model, index, cfg, device, **kwargs):
        self.weights.append({k: v.detach().clone() for k, v in model.prompter.state_dict().items()})
        miou = next(self.mious)
        return {"miou": miou, "macc": miou + 0.1}


def _train(data_root, run, sam_file, *options):
    args = train_command(data_root, run, sam_file, DEFAULT_RECIPE, STEPS_PER_EPOCH * EPOCHS, "--batch-size", "8",
                         *options)  # fmt: skip
    return main([*args, "prompter.dense_width=16"])


def _val_records(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "val_miou" in r]


def test_best_validation_weights_are_kept_apart(data_root, sam_file, tmp_path, monkeypatch):
    scripted = ScriptedValidation([0.2, 0.5, 0.3])
    monkeypatch.setattr(evaluator, "evaluate", scripted)
    run = tmp_path / "run"
    assert _train(data_root, run, sam_file) == 0
    assert [r["val_best"] for r in _val_records(run)] == [True, True, False]

    best = load_file(run / "best" / "model.safetensors")
    assert best.keys() == scripted.weights[1].keys()
    assert all(torch.equal(best[k], scripted.weights[1][k]) for k in best)  # the second epoch's weights
    final = load_file(run / "model.safetensors")
    assert any(not torch.equal(final[k], best[k]) for k in best)
    assert run_dir.best_validation(run) == {
        "step": 2 * STEPS_PER_EPOCH, "epoch": 1, "split": "val", "miou": 0.5, "macc": 0.6
    }  # fmt: skip

    monkeypatch.undo()  # `wps-sam eval` scores the best weights for real, in their own folder
    assert main(["eval", str(run / "best"), "--data", str(data_root), "--no-progress"]) == 0
    assert 0.0 <= json.loads((run / "best" / "eval-val.json").read_text())["miou"] <= 1.0
    assert not (run / "eval-val.json").exists()

    # A new run never starts in a folder that holds best weights of an earlier one.
    (run / "model.safetensors").unlink()
    assert _train(data_root, run, sam_file) == 2


def test_resume_compares_with_the_best_before_the_interruption(data_root, sam_file, tmp_path, monkeypatch):
    scripted = ScriptedValidation([0.5, 0.3, 0.4])
    monkeypatch.setattr(evaluator, "evaluate", scripted)
    step = trainer._step

    def interrupted(run, batch):
        if run.global_step == 2 * STEPS_PER_EPOCH + 1:  # within the third epoch, after two validations
            raise KeyboardInterrupt
        return step(run, batch)

    monkeypatch.setattr(trainer, "_step", interrupted)
    run = tmp_path / "run"
    assert _train(data_root, run, sam_file, "--save-every", "1") == 130  # as Ctrl-C ends it
    monkeypatch.setattr(trainer, "_step", step)
    assert _train(data_root, run, sam_file, "--save-every", "1", "--resume") == 0

    # 0.4 after the resume is below the first epoch's 0.5: RUN/best keeps the first epoch.
    assert [r["val_best"] for r in _val_records(run)] == [True, False, False]
    assert run_dir.best_validation(run)["epoch"] == 0
    best = load_file(run / "best" / "model.safetensors")
    assert all(torch.equal(best[k], scripted.weights[0][k]) for k in best)
