"""What one ``wps-sam demo`` run trains on and for how long: its data sizes, the baselines' budgets,
and the WPS-SAM config of its runs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import Config, load_config, merge, parse_overrides
from ..errors import ConfigError

DEMO_SUPERCATEGORIES = ("Quadruped", "Bird", "Fish", "Car", "Bottle", "Aeroplane")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and budgets of one demo run (the WPS-SAM numbers live in ``configs/demo.yaml``).

    ``config``: WPS-SAM config file (``None``: the packaged ``configs/demo.yaml``); ``overrides``:
    dotted overrides on top of it (``"train.max_steps=10"``). ``fs_*``: the LR-ASPP baseline;
    ``head_*``: the SAM-head baseline. ``data_seed`` draws the data set, independent of the
    training seed, so that runs with other seeds reuse the same images. ``steps_scale`` multiplies
    the training steps of every trained method alike (WPS-SAM's ``train.max_steps``, ``fs_steps``,
    ``head_steps``): the demo's 15-minute budget is 1.
    """

    # 1600 training images (docs/demo/NOTES.md, item 4: the point prompter gains 1.2 and 2.3 mIoU over
    # 800 on two seeds, the box prompter +0.3 and -0.1) for ~1 more minute of data and encoder passes.
    train_images: int = 1600
    # 150 held-out images (~970 parts): the evaluator decodes every query of every image with SAM.
    val_images: int = 150
    image_size: int = 256
    supercategories: tuple[str, ...] = DEMO_SUPERCATEGORIES
    data_seed: int = 0
    config: str | None = None
    overrides: tuple[str, ...] = ()
    # LR-ASPP: about as long to train as wps-sam-box's prompter plus its encoder pass over the training
    # images. Tuned on the demo's 800 images of earlier releases (docs/demo/NOTES.md, timing): at 128 px
    # it fits ~7 epochs of them in that time and reaches ~21% mIoU; at the full 256 px 2 epochs, at the
    # all-background floor.
    # 1000 steps since the prompter trains under bf16 (LR-ASPP does not speed up there). The two demos of
    # 2026-12-03 gave it 0.221 and 0.273 s per step against wps-sam-box's 162 + 75 s and 175 + 80 s:
    # 1074 and 932 steps of equal time (1300 and 1100 steps took 1.21x and 1.18x).
    fs_steps: int = 1000
    fs_batch_size: int = 8
    fs_lr: float = 5e-3
    fs_image_size: int | None = 128  # its input side (None: the data's); its maps are upsampled
    # The SAM head reads the same cached embeddings as wps-sam-box: its budget is about the prompter's
    # training. Under bf16 ~0.27 s per step of 16 embeddings: 550 steps took 150 s against wps-sam-box's
    # 175 s in the demo of 2026-12-03 (afternoon). mIoU when it was tuned: 30.5% at 300 steps, 35.1% at
    # 550, 35.4% at 600.
    head_steps: int = 550
    head_batch_size: int = 16
    head_lr: float = 2e-3
    # bf16 autocast of the training steps on the CPU, for WPS-SAM's prompter (train.cpu_amp) and the
    # SAM head: 1.9x / 2.0x faster per step on the build machine, the same scores within the seeds'
    # spread (docs/demo/NOTES.md, item 4). None: where the CPU computes bf16 natively. LR-ASPP trains in
    # float32: bf16 does not speed it up (benchmarks/cpu_bf16.py).
    cpu_bf16: bool | None = None
    grid_images: int = 4
    steps_scale: int = 1

    def __post_init__(self) -> None:
        if self.steps_scale < 1:
            raise ConfigError(f"--steps-scale must be a positive integer, got {self.steps_scale}")


# A smoke run of a minute or two (`--quick`): a quarter of the data, a quarter of the steps; not results.
QUICK_SETTINGS = DemoSettings(
    train_images=200, val_images=40, overrides=("train.max_steps=150",), fs_steps=20, head_steps=75
)


def default_config_path() -> Path:
    """The packaged WPS-SAM configuration of the demo."""
    return Path(str(resources.files("wps_sam") / "configs" / "demo.yaml"))


def wps_sam_config(
    settings: DemoSettings,
    root: Path,
    cache_dir: Path,
    supervision: str,
    seed: int,
    sam_checkpoint: str | None,
) -> Config:
    """The WPS-SAM config of one of the demo's runs: ``settings.config`` (default: the packaged
    ``configs/demo.yaml``) under ``settings.overrides``, on the ToyParts at ``root`` and the demo's
    embedding cache, with ``supervision`` (box or point), ``seed`` and the tiny SAM at
    ``sam_checkpoint`` (``None``: the shipped weights); ``settings.steps_scale`` multiplies its steps."""
    path = Path(settings.config) if settings.config else default_config_path()
    fixed: dict[str, dict[str, Any]] = {
        "data": {"root": str(root), "supervision": supervision, "train_split": "train", "val_split": "val"},
        # The trainer's embedding cache is the demo's: the encoder runs once per image for every stage.
        "train": {"seed": seed, "cache": True, "cache_dir": str(cache_dir)},
        "sam": {"type": "tiny", "checkpoint": sam_checkpoint},
    }
    # The demo's bf16 choice first, so that an override of train.cpu_amp wins over it.
    overrides = merge(
        {"train": {"cpu_amp": bool(settings.cpu_bf16)}}, parse_overrides(list(settings.overrides))
    )
    cfg = load_config(path, merge(overrides, fixed))
    if settings.steps_scale == 1:
        return cfg
    if cfg.train.max_steps is None:
        raise ConfigError(f"{path}: --steps-scale needs train.max_steps in the demo's WPS-SAM config")
    train_cfg = dataclasses.replace(cfg.train, max_steps=cfg.train.max_steps * settings.steps_scale)
    return dataclasses.replace(cfg, train=train_cfg)
