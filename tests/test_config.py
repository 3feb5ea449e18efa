import re

import pytest

from wps_sam.config import Config, config_to_dict, load_config, parse_overrides, save_config
from wps_sam.errors import ConfigError
from wps_sam.recipes import DEFAULT_RECIPE, RECIPES


def test_defaults_are_the_official_recipe():
    cfg = load_config()
    assert (cfg.prompter.num_queries, cfg.prompter.enc_layers, cfg.prompter.dec_layers) == (25, 6, 6)
    assert (cfg.prompter.hidden_dim, cfg.prompter.nheads, cfg.prompter.dim_feedforward) == (256, 8, 1024)
    loss = cfg.loss
    assert (loss.cost_class, loss.cost_token, loss.weight_ce, loss.weight_token) == (10, 1, 5, 20)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.001\n  batch_size: 4\nsam:\n  type: tiny\n")
    cfg = load_config(path, ["train.lr=5e-4", "prompter.num_downsample=1", "train.max_steps=none"])
    assert cfg.train.lr == 5e-4 and cfg.train.batch_size == 4 and cfg.sam.type == "tiny"
    assert cfg.prompter.num_downsample == 1 and cfg.train.max_steps is None


def test_round_trip(tmp_path):
    cfg = load_config(overrides=["data.supervision=point", "train.grad_clip=0.1"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    # The dataclass defaults are the paper's recipe; load_config starts from the default recipe.
    assert config_to_dict(Config()) == config_to_dict(load_config(overrides=["train.recipe=paper"]))
    assert load_config().train.recipe == DEFAULT_RECIPE


def test_recipes_go_under_the_file_and_the_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  recipe: detr-fast\nloss:\n  eos_coef: 0.5\n")
    cfg = load_config(path)
    assert cfg.train.recipe == "detr-fast" and cfg.prompter.two_stage and cfg.loss.eos_coef == 0.5
    assert cfg.loss.cost_token == RECIPES["detr-fast"]["loss"]["cost_token"]
    cfg = load_config(path, ["train.recipe=paper"])  # the overrides name the recipe first
    assert cfg.train.recipe == "paper" and not cfg.prompter.two_stage and cfg.loss.eos_coef == 0.5
    assert load_config(overrides=["train.recipe=dense"]).prompter.kind == "dense"
    with pytest.raises(ConfigError, match="unknown recipe 'fastest'"):
        load_config(overrides=["train.recipe=fastest"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=abc", "train.lr must be a number"),
        ("train.nope=1", "unknown key"),
        ("data.supervision=mask", "data.supervision must be one of"),
        ("train.batch_size=0", "train.batch_size must be positive"),
        ("loss.box_spread=0", "loss.box_spread must be positive"),
        ("prompter.nheads=7", "divisible"),
        ("train.epochs=2.5", "train.epochs must be an integer"),
        ("train.lr=nan", "train.lr must be a number"),
        ("inference.score_threshold=1.5", "inference.score_threshold must be in"),
        ("inference.peak_threshold=1", "inference.peak_threshold must be in"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("trian:\n  lr: 1\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(unknown)
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["lr=1"])


def test_errors_name_where_the_bad_value_came_from(tmp_path):
    """A value out of range names its file, like a mistyped one; overrides are named beside it."""
    path = tmp_path / "run.yaml"
    path.write_text("prompter:\n  dropout: 2\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: prompter.dropout must be in"):
        load_config(path)
    path.write_text("train:\n  lr: 1.0e-4\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))} \+ overrides: train.batch_size must be"):
        load_config(path, ["train.batch_size=0"])
    with pytest.raises(ConfigError, match=r"^defaults \+ overrides: unknown key"):
        load_config(overrides=["train.nope=1"])


def test_values_follow_the_declared_type():
    digits = "0" * 64
    cfg = load_config(overrides=[f"sam.sha256={digits}", "sam.checkpoint=123", "train.grad_clip=1"])
    assert cfg.sam.sha256 == digits and cfg.sam.checkpoint == "123"
    assert cfg.train.grad_clip == 1.0 and isinstance(cfg.train.grad_clip, float)
    with pytest.raises(ConfigError, match="train.amp must be true or false"):
        load_config(overrides=["train.amp=maybe"])
    with pytest.raises(ConfigError, match="train.lr must be a number"):
        load_config(overrides=["train.lr=none"])
