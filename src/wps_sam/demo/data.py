"""The demo's data: ToyParts drawn once per generation, and the frozen tiny SAM's embeddings of its
splits through the embedding cache."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..atomic import atomic_write_json
from ..config import TrainConfig
from ..data.coco import PartDataIndex
from ..synthetic.toyparts import ToyPartsConfig, write_toyparts
from .settings import DemoSettings

logger = logging.getLogger(__name__)

MANIFEST = "demo_manifest.json"
MANIFEST_FORMAT = 1
MIRRORED_TRAIN = "train-mirrored"  # the training images flipped left-right (augmentation)
MIRRORED_VAL = "val-mirrored"  # the held-out images flipped left-right (test-time mirroring)


def _manifest(settings: DemoSettings) -> dict[str, Any]:
    config = ToyPartsConfig(
        size=settings.image_size, seed=settings.data_seed, supercategories=tuple(settings.supercategories)
    )
    return {
        "format": MANIFEST_FORMAT,
        "wps_sam": __version__,  # the generator's version: another release draws the data afresh
        "train": settings.train_images,
        "val": settings.val_images,
        "toyparts": json.loads(json.dumps(dataclasses.asdict(config))),
    }


def prepare_toyparts(root: str | Path, settings: DemoSettings, progress: bool = True) -> tuple[dict, bool]:
    """ToyParts for ``settings`` under ``root``; returns (manifest, reused).

    A folder whose ``demo_manifest.json`` records the same generation is reused as it is; anything
    else under ``root`` is replaced. The annotation files name the part classes of
    ``settings.supercategories`` only (:func:`write_toyparts`), so the models' classes are the ones
    that occur.
    """
    root = Path(root)
    wanted = _manifest(settings)
    manifest_path = root / MANIFEST
    if manifest_path.is_file():
        try:
            if json.loads(manifest_path.read_text()) == wanted:
                return wanted, True
        except (OSError, json.JSONDecodeError):
            pass
        logger.info("%s holds another ToyParts generation: generating it again", root)
    if root.exists():
        shutil.rmtree(root)
    config = ToyPartsConfig(
        **{
            **wanted["toyparts"],
            "clutter": tuple(wanted["toyparts"]["clutter"]),
            "supercategories": tuple(wanted["toyparts"]["supercategories"]),
        }
    )
    write_toyparts(root, settings.train_images, settings.val_images, config, progress=progress)
    atomic_write_json(manifest_path, wanted)  # last: a folder with a manifest is complete
    return wanted, False


def encode_splits(
    sam: Any,
    indices: dict[str, tuple[PartDataIndex, bool]],
    cache_dir: Path,
    train_cfg: TrainConfig,
    progress: bool,
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, float]]]:
    """float16 [N, 256, h, w] SAM embeddings of every image of each split, through the embedding cache.

    ``indices``: name -> (split, mirrored): a mirrored split's images are flipped left-right (the
    trainer's ``hflip`` augmentation, same cache entries). The encoder runs in the precision the
    trainer picks from ``train_cfg`` on the SAM's device (on the CPU: bf16 under ``train.cpu_amp`` where
    the CPU computes it natively), so that WPS-SAM's trainings find every embedding cached. Also
    returns, per name, how many images were encoded now (the others were cached) and how long it took.
    """
    from ..cache import EmbeddingCache, sam_fingerprint
    from ..data.cached import cache_dataset, cache_encoder
    from ..data.datasets import PartSegmentationDataset
    from ..data.transforms import SamTransform
    from ..engine.device import encoder_dtype

    dtype = encoder_dtype(sam.device, train_cfg.amp, train_cfg.cpu_amp)
    runner, context = cache_encoder(sam.image_encoder, sam_fingerprint(sam), dtype)
    cache = EmbeddingCache(cache_dir)
    out, stats = {}, {}
    for name, (index, mirrored) in indices.items():
        started, before = time.time(), len(cache)
        dataset = PartSegmentationDataset(index, SamTransform(context.image_size), mirrored=mirrored)
        keys = cache_dataset(dataset, cache, runner, context, batch_size=8, progress=progress)
        out[name] = cache.get(keys)
        stats[name] = {"encoded": len(cache) - before, "seconds": round(time.time() - started, 2)}
    return out, stats
