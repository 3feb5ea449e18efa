"""Run configuration: frozen dataclasses, loaded from YAML with dotted overrides.

Only builders and the CLI read a :class:`Config`; the model receives plain numbers.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


@dataclass(frozen=True)
class SamConfig:
    """Which frozen SAM to ride on.

    ``type``: ``vit_b`` | ``vit_l`` | ``vit_h`` (official checkpoints), ``tiny`` (shipped with the
    package), ``vit_mini`` (a small ViT of the official structure, random weights: tests).
    ``checkpoint``: path of an official-layout checkpoint; ``None`` for the weights shipped with the
    package (``tiny`` only); ``"random"`` for random weights (tests only).
    ``sha256``: if set, the checkpoint file must have this digest.
    """

    type: str = "vit_b"
    checkpoint: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class PrompterConfig:
    """The prompter of WPS-SAM (DEVELOPERS.md): downsampling convs and a DETR transformer.

    ``kind``: ``detr`` (the paper's set prompter, with the convergence switches below) or ``dense``
    (per-cell heat maps and geometry, CenterNet-style: :mod:`wps_sam.modeling.dense_prompter`).
    """

    kind: str = "detr"
    num_queries: int = 25
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 1024
    dropout: float = 0.0
    pre_norm: bool = False
    num_tokens: int = 2
    # Stride-2 convs on the SAM embedding; None: as many as bring the grid to at most 16x16
    # (two for the 64x64 embedding of vit_b/l/h, one for tiny's 32x32).
    num_downsample: int | None = None
    # Convergence remedies of the DETR prompter, all off in the paper's recipe (modeling/queries.py).
    aux_loss: bool = False  # a separately matched loss after every decoder layer (DETR)
    geometry_head: bool = (
        False  # a box (or point) per query, refined per layer; tokens = SAM(geometry) + residual
    )
    two_stage: bool = False  # the encoder memory proposes parts; the top ones anchor the queries
    groups: int = 1  # query groups in training, each matched one-to-one (Group DETR's one-to-many)
    dn_groups: int = 0  # denoising groups of noised ground truth (DN-DETR; 0: off)
    dn_box_noise: float = 0.4  # box centre shift and size change, as a share of the box (DN-DETR's 0.4)
    dn_point_noise: float = 0.05  # point shift, as a share of the frame
    dn_label_noise: float = 0.2  # share of denoising queries given a random class
    standardize_input: bool = False  # fixed per-channel standardisation of SAM's embedding
    # The dense prompter: a residual stack of 3x3 convolutions of this width and these dilations.
    dense_width: int = 128
    dense_dilations: str = "1,2,4,8,1"
    dense_max_parts: int = 30  # peaks kept per image at inference (highest first)
    # Cells around each part's centre cell that also learn its geometry (TTFNet): 0 = the centre cell
    # only (CenterNet); r = every cell within r cells, weighted by the part's heat-map bump.
    dense_geometry_radius: int = 0
    # A second stage on the peaks (box supervision): RoIAlign of the prompter's features in each box,
    # a class (a training signal) and a correction of the box (modeling/box_refiner.py).
    dense_refine: bool = False


@dataclass(frozen=True)
class LossConfig:
    """Matching costs and loss weights (WPS-SAM's official values; the geometry terms are DETR's and
    count only when queries predict geometry)."""

    cost_class: float = 10.0
    cost_token: float = 1.0
    cost_geom: float = 5.0
    cost_giou: float = 2.0
    weight_ce: float = 5.0
    weight_token: float = 20.0
    weight_geom: float = 5.0
    weight_giou: float = 2.0
    eos_coef: float = 1.0  # weight of "no part" in the cross-entropy (DETR uses 0.1; official: 1.0)
    weight_heatmap: float = 1.0  # the dense prompter's heat-map focal loss (CenterNet)
    # The dense prompter's heat-map bumps of boxes: their spread, times CenterNet's (a sixth of the
    # box's mean side; a point's bump keeps its one cell); the geometry samples around each box's
    # centre are weighted by it too.
    box_spread: float = 1.0
    weight_refine: float = 1.0  # the box refiner's cross-entropy (its box L1 takes weight_geom)


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and which weak labels to train from."""

    root: str = ""
    train_split: str = "train"
    val_split: str = "val"
    supervision: str = "box"  # box | point | mixed (each part its own label: its box, or its point)
    point_mode: str = "interior"  # interior (farthest from the part boundary) | box_center (official)
    num_workers: int = 0
    strict: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation: AdamW with linear warmup and cosine decay; ``recipe`` names the bundle of
    settings (:mod:`wps_sam.recipes`) the configuration starts from."""

    recipe: str = "paper"
    epochs: int = 150
    max_steps: int | None = None
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 250
    min_lr_ratio: float = 0.01
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast where the device is CUDA; on the CPU only with cpu_amp too
    # bf16 autocast on the CPU too: of the prompter's training steps (~1.7x faster on CPUs with
    # AVX512-BF16 or AMX, docs/demo/NOTES.md item 4; slower on those without) and, where the CPU computes
    # bf16 natively, of the frozen encoder's pass (cache, evaluation, prediction; ~1.9x faster);
    # embeddings are stored and read in float16/float32 either way
    cpu_amp: bool = False
    save_every: int = 500  # optimiser steps between resumable checkpoints (and at every epoch end)
    log_every: int = 50  # optimiser steps between metrics.jsonl records
    validate: bool = True  # evaluate on data.val_split after every epoch when it exists with masks
    cache: bool = True  # run the frozen encoder once per image and train from the embedding cache
    cache_dir: str | None = None  # None: $WPS_SAM_CACHE or ~/.cache/wps-sam/embeddings
    compile_encoder: bool = False  # torch.compile the SAM encoder while building the cache
    augment: str = "none"  # none | hflip (each training image also mirrored, its embedding cached)


@dataclass(frozen=True)
class InferenceConfig:
    """Turning prompter outputs into masks and a semantic part map."""

    mask_threshold: float = 0.0  # on SAM's mask logits (0.0 == probability 0.5)
    score_threshold: float = 0.0  # extra floor on the class probability of a kept query
    # Point-supervised runs: decode SAM's three ambiguity-aware masks and keep the best-rated (SAM's
    # advice for a single click) instead of its single-mask output (the official inference).
    point_multimask: bool = False
    # Mixed supervision: which head's prompts SAM decodes, "box" or "point" (the others decode their own).
    mixed_prompt: str = "box"
    peak_threshold: float = 0.3  # the dense prompter keeps a cell's part from this heat-map score
    # The dense prompter: also read the mirror image (one more encoder pass per image) and average
    # its heat maps and geometry, mirrored back, with the image's own before picking the peaks.
    flip_test: bool = False


@dataclass(frozen=True)
class Config:
    sam: SamConfig = field(default_factory=SamConfig)
    prompter: PrompterConfig = field(default_factory=PrompterConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)


# The SAM variants of sam/backbones.py (kept here so that parsing a config imports no torch).
SAM_TYPES = ("vit_b", "vit_l", "vit_h", "vit_t", "vit_mini", "tiny")

_CHOICES = {
    ("sam", "type"): SAM_TYPES,
    ("data", "supervision"): ("box", "point", "mixed"),
    ("inference", "mixed_prompt"): ("box", "point"),
    ("data", "point_mode"): ("interior", "box_center"),
    ("prompter", "kind"): ("detr", "dense"),
    ("train", "augment"): ("none", "hflip"),
}
_POSITIVE = {
    ("prompter", "num_queries"),
    ("prompter", "hidden_dim"),
    ("prompter", "nheads"),
    ("prompter", "dim_feedforward"),
    ("prompter", "num_tokens"),
    ("prompter", "groups"),
    ("prompter", "dense_width"),
    ("prompter", "dense_max_parts"),
    ("train", "epochs"),
    ("train", "batch_size"),
    ("train", "lr"),
    ("train", "save_every"),
    ("train", "log_every"),
    ("loss", "box_spread"),
}
_NON_NEGATIVE = {("prompter", "dn_groups"), ("prompter", "dense_geometry_radius")}


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    """Build a validated :class:`Config` from nested dicts; unknown keys are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    sections = {}
    for f in fields(Config):
        section = data.get(f.name, {}) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: section '{f.name}' must be a mapping")
        sections[f.name] = _build_section(f.default_factory, section, f.name, source)
    unknown = set(data) - {f.name for f in fields(Config)}
    if unknown:
        raise ConfigError(
            f"{source}: unknown section(s) {sorted(unknown)}; known: {[f.name for f in fields(Config)]}"
        )
    cfg = Config(**sections)
    try:
        validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


def _build_section(cls: type, values: dict[str, Any], name: str, source: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {sorted(f'{name}.{k}' for k in unknown)}; "
            f"known: {sorted(f'{name}.{k}' for k in known)}"
        )
    hints = typing.get_type_hints(cls)
    coerced = {k: _coerce(v, hints[k], f"{name}.{k}", source) for k, v in values.items()}
    return dataclasses.replace(cls(), **coerced)


def _coerce(value: Any, declared: Any, key: str, source: str) -> Any:
    """Coerce a YAML or command-line value to the field's declared type (``X`` or ``X | None``)."""
    args = typing.get_args(declared)
    optional = type(None) in args
    kind = next((a for a in args if a is not type(None)), declared) if args else declared
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{source}: {key} must be {_KIND_NAMES[kind.__name__]}, got {value!r}")
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
                return value.lower() in ("true", "yes", "1")
            raise ValueError(value)
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            out = float(value)
            if not math.isfinite(out):
                raise ValueError(value)
            return out
        if isinstance(value, (dict, list)):
            raise ValueError(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key} must be {_KIND_NAMES[kind.__name__]}, got {value!r}") from None


_KIND_NAMES = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}


def validate(cfg: Config) -> None:
    """Raise :class:`ConfigError` on values that cannot work."""
    for (section, key), choices in _CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in choices:
            raise ConfigError(f"{section}.{key} must be one of {list(choices)}, got {value!r}")
    for section, key in _POSITIVE:
        value = getattr(getattr(cfg, section), key)
        if value is None or value <= 0:
            raise ConfigError(f"{section}.{key} must be positive, got {value!r}")
    for section, key in _NON_NEGATIVE:
        value = getattr(getattr(cfg, section), key)
        if value < 0:
            raise ConfigError(f"{section}.{key} must be >= 0, got {value!r}")
    if cfg.prompter.hidden_dim % cfg.prompter.nheads:
        raise ConfigError(
            f"prompter.hidden_dim ({cfg.prompter.hidden_dim}) must be divisible by "
            f"prompter.nheads ({cfg.prompter.nheads})"
        )
    if cfg.prompter.enc_layers < 0 or cfg.prompter.dec_layers < 1:
        raise ConfigError("prompter.enc_layers must be >= 0 and prompter.dec_layers >= 1")
    if cfg.train.max_steps is not None and cfg.train.max_steps <= 0:
        raise ConfigError(f"train.max_steps must be positive, got {cfg.train.max_steps}")
    if not 0.0 <= cfg.prompter.dropout < 1.0:
        raise ConfigError(f"prompter.dropout must be in [0, 1), got {cfg.prompter.dropout}")
    if cfg.train.warmup_steps < 0 or cfg.train.weight_decay < 0:
        raise ConfigError("train.warmup_steps and train.weight_decay must be >= 0")
    for f in fields(LossConfig):
        if getattr(cfg.loss, f.name) < 0:
            raise ConfigError(f"loss.{f.name} must be >= 0")
    try:
        dilations = [int(d) for d in cfg.prompter.dense_dilations.split(",")]
    except ValueError:
        dilations = []
    if not dilations or min(dilations) < 1:
        raise ConfigError(
            f"prompter.dense_dilations must be positive integers separated by commas, got "
            f"{cfg.prompter.dense_dilations!r}"
        )
    p = cfg.prompter
    if (
        cfg.data.supervision == "mixed"
        and p.kind == "detr"
        and (p.geometry_head or p.two_stage or p.dn_groups)
    ):
        raise ConfigError(
            "data.supervision=mixed trains the paper's token heads (with aux_loss, groups and "
            "standardize_input) or the dense prompter; prompter.geometry_head, two_stage and dn_groups "
            "predict one kind of geometry: turn them off, or use --recipe dense or paper"
        )
    if cfg.inference.flip_test and p.kind != "dense":
        raise ConfigError(
            "inference.flip_test averages the dense prompter's maps over the image and its mirror; "
            f"prompter.kind={p.kind!r} has no maps to average: use --recipe dense or turn flip_test off"
        )
    if p.dense_refine and (p.kind != "dense" or cfg.data.supervision != "box"):
        raise ConfigError(
            "prompter.dense_refine corrects the dense prompter's boxes: it needs prompter.kind=dense and "
            f"data.supervision=box (got {p.kind!r} and {cfg.data.supervision!r}); set "
            "prompter.dense_refine=false for other prompters and supervisions"
        )
    if not 0.0 < cfg.inference.peak_threshold < 1.0:
        raise ConfigError(f"inference.peak_threshold must be in (0, 1), got {cfg.inference.peak_threshold}")
    if not 0.0 <= cfg.inference.score_threshold <= 1.0:  # a class probability
        raise ConfigError(f"inference.score_threshold must be in [0, 1], got {cfg.inference.score_threshold}")


def parse_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    """``["train.lr=1e-3", "sam.type=tiny"]`` -> ``{"train": {"lr": "1e-3"}, "sam": {"type": "tiny"}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.lr=1e-4)")
        # Kept as text: _coerce parses it by the field's declared type ("007" stays a string for str).
        out.setdefault(section, {})[name] = value.strip()
    return out


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in update.items():
        if isinstance(values, dict) and isinstance(out.get(section), dict):
            out[section].update(values)
        else:
            out[section] = values
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Defaults, then the recipe, then the YAML file at ``path``, then dotted ``overrides``; validated.

    The recipe is ``train.recipe`` of the overrides, else of the file, else
    :data:`~wps_sam.recipes.DEFAULT_RECIPE`; its settings (:data:`~wps_sam.recipes.RECIPES`) go under
    the file and the overrides, so both can change any of them.
    """
    from .recipes import DEFAULT_RECIPE, recipe_settings

    loaded: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        source = str(path)
    if overrides and not isinstance(overrides, dict):
        overrides = parse_overrides(overrides)
    overrides = overrides or {}
    if overrides:  # a bad value may come from either: name both
        source += " + overrides"
    name = next(
        (
            str(d["train"]["recipe"])
            for d in (overrides, loaded)
            if isinstance(d.get("train"), dict) and "recipe" in d["train"]
        ),
        DEFAULT_RECIPE,
    )
    try:
        settings = recipe_settings(name)
    except KeyError as exc:
        raise ConfigError(f"{source}: {exc.args[0]}") from None
    data = merge(config_to_dict(Config()), merge(settings, {"train": {"recipe": name}}))
    return config_from_dict(merge(merge(data, loaded), overrides), source)


def save_config(cfg: Config, path: str | Path) -> None:
    from .atomic import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
