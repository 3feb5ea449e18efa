"""User errors through the CLI: one line on stderr naming what is wrong, a non-zero exit, no traceback;
``--debug`` shows the traceback instead. And a non-finite loss stops training with the last good state kept."""

import json

import pytest
import torch
from safetensors.torch import load_file
from tests.data.fixtures import write_part_dataset

from wps_sam.cli import main
from wps_sam.errors import WpsSamError
from wps_sam.modeling.criterion import SetCriterion
from wps_sam.modeling.dense_criterion import DenseCriterion

SMALL_PROMPTER = [
    "prompter.enc_layers=1", "prompter.dec_layers=1", "prompter.hidden_dim=32", "prompter.nheads=2",
    "prompter.dim_feedforward=64", "prompter.num_queries=4", "train.warmup_steps=1", "train.log_every=1",
    "train.validate=false",
]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _isolated(tmp_path_factory):
    """A private embedding cache, and one intra-op thread: on a small shared CPU, torch's default
    threads mostly wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WPS_SAM_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def env(tmp_path_factory, mini_sam):
    """A data set, SAM files (good and broken) and a trained 1-step run."""
    root = tmp_path_factory.mktemp("cli")
    write_part_dataset(root / "data", "train", 2, size_range=(24, 32), seed=1)
    (root / "broken" / "annotations").mkdir(parents=True)
    (root / "broken" / "images" / "train").mkdir(parents=True)
    (root / "broken" / "annotations" / "train.json").write_text('{"images": [1, 2,, ]}')
    state = mini_sam.state_dict()
    torch.save(state, root / "sam.pth")
    data = (root / "sam.pth").read_bytes()
    (root / "truncated.pth").write_bytes(data[: len(data) // 2])
    foreign = dict(state)  # a vit_b-like file: its encoder is 768 wide
    foreign["image_encoder.pos_embed"] = torch.zeros(1, 16, 16, 768)
    torch.save(foreign, root / "foreign.pth")
    (root / "a_file").write_text("not a folder")
    run = root / "run"
    assert main(_train(root, run, "--max-steps", "1")) == 0
    return root, run


def _train(root, out, *extra, data=None, sam=None, sets=()):
    return ["train", "--data", str(data or root / "data"), "--out", str(out), "--sam-type", "vit_mini",
            "--sam-checkpoint", str(sam or root / "sam.pth"), "--batch-size", "1", "--no-progress",
            *extra, "--set", *SMALL_PROMPTER, *sets]  # fmt: skip


def _cases(root, run):
    """(name, argv, words the one line must contain)."""
    out = root / "new-run"
    image = next((root / "data" / "images" / "train").iterdir())
    return {
        "missing data root": (_train(root, out, data=root / "nowhere"), ["does not exist"]),
        "missing split json": (_train(root, out, sets=["data.train_split=test"]), ["no annotation file", "test"]),
        "invalid json": (_train(root, out, data=root / "broken"), ["invalid JSON", "train.json"]),
        "bad checkpoint path": (_train(root, out, sam=root / "nowhere.pth"), ["not found", "nowhere.pth"]),
        "truncated checkpoint": (_train(root, out, sam=root / "truncated.pth"), ["truncated", "truncated.pth"]),
        "checkpoint of another architecture": (_train(root, out, sam=root / "foreign.pth"), ["--sam-type vit_b"]),
        "bad sha256": (_train(root, out, "--sam-sha256", "ab" * 32), ["sha256 is", "expected " + "ab" * 32]),
        "bad config value": (_train(root, out, sets=["train.lr=fast"]), ["train.lr", "number"]),
        "unknown config key": (_train(root, out, sets=["train.speed=2"]), ["unknown key", "train.speed"]),
        "missing config file": (_train(root, out, "--config", str(root / "nowhere.yaml")), ["nowhere.yaml"]),
        "run already trained": (_train(root, run), ["already holds a trained run", "--resume"]),
        "unwritable out": (_train(root, root / "a_file" / "run"), ["a_file"]),
        "eval of a missing run": (["eval", str(root / "no-run"), "--data", str(root / "data"), "--split", "train"],
                                  ["run not found", "no-run", "'demo'"]),
        "eval of the demo prompter without --out": (["eval", "demo", "--data", str(root / "data")],
                                                    ["demo prompter", "--out"]),
        "eval into an --out that is a file": (["eval", str(run), "--data", str(root / "data"), "--split", "train",
                                               "--out", str(root / "a_file")], ["a_file", "not a folder"]),
        "predict with a file that is not weights": (["predict", str(image), str(image), "--out", str(root / "p")],
                                                    ["not a readable safetensors", image.name]),
        "eval of a missing split": (["eval", str(run), "--data", str(root / "data"), "--split", "val"],
                                    ["no annotation file", "val"]),
        "predict of a missing input": (["predict", str(run), str(root / "missing.png"), "--out", str(root / "p")],
                                       ["input not found", "missing.png"]),
        "predict into an unwritable out": (["predict", str(run), str(image), "--out", str(root / "a_file" / "p")],
                                           ["a_file"]),
        "check-data of a missing root": (["check-data", "--data", str(root / "nowhere")], ["does not exist"]),
        "eval on an unknown device": (["eval", str(run), "--data", str(root / "data"), "--split", "train",
                                       "--device", "gpu0"], ["--device gpu0", "not a device"]),
        "serve with a training setting": (["serve", str(run), "--set", "train.lr=1"],
                                          ["model.safetensors", "only inference settings", "train.lr"]),
        "serve a missing run": (["serve", str(root / "no-run")], ["run not found"]),
    }  # fmt: skip


CASES = [
    "missing data root", "missing split json", "invalid json", "bad checkpoint path", "truncated checkpoint",
    "checkpoint of another architecture", "bad sha256", "bad config value", "unknown config key",
    "missing config file", "run already trained", "unwritable out", "eval of a missing run",
    "eval of the demo prompter without --out", "eval into an --out that is a file",
    "predict with a file that is not weights",
    "eval of a missing split", "predict of a missing input", "predict into an unwritable out",
    "check-data of a missing root", "eval on an unknown device", "serve with a training setting",
    "serve a missing run",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_user_error_is_one_line(env, case, capsys):
    root, run = env
    argv, words = _cases(root, run)[case]
    capsys.readouterr()
    assert main([*argv, "--no-progress"] if "--no-progress" not in argv else argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"wps-sam {argv[0]}: error: ") and "Traceback" not in captured.err
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize("case", ["truncated checkpoint", "unknown config key", "unwritable out"])
def test_debug_shows_the_traceback(env, case):
    root, run = env
    argv, _ = _cases(root, run)[case]
    with pytest.raises((WpsSamError, OSError)):
        main([*argv, "--debug"])


@pytest.mark.parametrize(
    "argv,words",
    [(["train", "--out", "x", "--epochs", "many"], ["--epochs", "invalid int"]),
     (["train", "--out", "x", "--no-such-flag"], ["unrecognized", "--no-such-flag"]),
     (["eval"], ["required", "run"]),
     (["train", "--out", "x", "--sam-sha256", "1234"], ["--sam-sha256", "64 hexadecimal"]),
     (["frobnicate"], ["invalid choice"])],
)  # fmt: skip
def test_bad_option_is_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--help" in lines[0], lines
    for word in words:
        assert word in lines[0]


def test_broken_run_files_are_one_line(env, tmp_path, capsys):
    root, run = env
    broken = tmp_path / "run"
    broken.mkdir()
    for name in ("config.yaml", "model.safetensors", "resume.pt"):
        (broken / name).write_bytes((run / name).read_bytes()[:100])
    capsys.readouterr()
    assert main(["eval", str(broken), "--data", str(root / "data"), "--split", "train", "--no-progress"]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err
    (broken / "model.safetensors").unlink()
    (broken / "config.yaml").write_text((run / "config.yaml").read_text())
    assert main([*_train(root, broken), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unreadable resume state" in err


def _assert_state_intact(run, step):
    state = torch.load(run / "resume.pt", weights_only=True)
    assert state["global_step"] == step
    weights = load_file(run / "model.safetensors")
    assert weights.keys() == state["prompter"].keys()
    for key, value in weights.items():
        assert torch.isfinite(value).all() and torch.equal(value, state["prompter"][key]), key
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == step


def test_non_finite_loss_stops_with_the_last_good_state(env, tmp_path, monkeypatch, capsys):
    root, _ = env
    calls = []

    def nan_on_third_step(original):
        def weighted_total(self, losses):
            calls.append(1)
            total = original(self, losses)
            return total * float("nan") if len(calls) == 3 else total

        return weighted_total

    for criterion in (SetCriterion, DenseCriterion):  # whichever the recipe trains with
        monkeypatch.setattr(criterion, "weighted_total", nan_on_third_step(criterion.weighted_total))
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(_train(root, run, "--max-steps", "5", "--save-every", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not finite" in err and "--resume" in err
    _assert_state_intact(run, 2)


def test_diverging_lr_stops_with_a_loadable_state(env, tmp_path, capsys):
    root, _ = env
    run = tmp_path / "run"
    capsys.readouterr()
    code = main(_train(root, run, "--max-steps", "6", "--save-every", "1", "--lr", "1e30"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "not finite" in err, err
    step = torch.load(run / "resume.pt", weights_only=True)["global_step"]
    assert 1 <= step < 6
    _assert_state_intact(run, step)


def test_non_finite_weights_are_never_saved(env, tmp_path, monkeypatch, capsys):
    root, _ = env
    original, calls = torch.optim.AdamW.step, []

    def inf_on_second_step(self, *args, **kwargs):
        calls.append(1)
        result = original(self, *args, **kwargs)
        if len(calls) == 2:  # the loss of this step was finite; the update overflowed
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", inf_on_second_step)
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(_train(root, run, "--max-steps", "5", "--save-every", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not finite at step 2" in err
    state = torch.load(run / "resume.pt", weights_only=True)
    assert state["global_step"] == 1
    weights = load_file(run / "model.safetensors")
    assert all(torch.isfinite(v).all() and torch.equal(v, state["prompter"][k]) for k, v in weights.items())
