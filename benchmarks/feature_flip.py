"""Mirror-image augmentation in embedding space: the flipped embedding of an image in place of the
embedding of its mirror image, which would spare the demo's encoder pass over the mirror images.

Copies the embedding cache of a finished ``wps-sam demo --out DEMO_DIR`` to ``OUT/embeddings`` and
overwrites there every training image's mirror-image row (the trainer's ``hflip`` variant) with the
image's own row flipped along the grid's width; WPS-SAM trained on that copy reads the flipped
embeddings as its mirror images (the targets are the mirror image's: the same for ToyParts' square
images). Then train and score as the demo does::

    python benchmarks/feature_flip.py DEMO_DIR OUT
    wps-sam train --config OUT/box.yaml --out OUT/run-box && wps-sam eval OUT/run-box --data DEMO_DIR/toyparts

(and ``point``). Prints the mean absolute difference of the flipped embeddings from the mirror
images' own, on the first 50 images.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml

from wps_sam.cache import EmbeddingCache, sam_fingerprint
from wps_sam.data.cached import cache_encoder, dataset_keys
from wps_sam.data.coco import load_split
from wps_sam.data.datasets import PartSegmentationDataset
from wps_sam.data.transforms import SamTransform
from wps_sam.engine.device import encoder_dtype
from wps_sam.sam.backbones import build_sam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("demo", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    cache_dir = args.out / "embeddings"
    shutil.copytree(args.demo / "embeddings", cache_dir)
    for supervision in ("box", "point"):
        cfg = yaml.safe_load((args.demo / "runs" / f"wps-sam-{supervision}" / "config.yaml").read_text())
        cfg["data"]["root"] = str((args.demo / "toyparts").resolve())
        cfg["train"]["cache_dir"] = str(cache_dir.resolve())
        (args.out / f"{supervision}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    train = load_split(args.demo / "toyparts", "train")
    sam = build_sam("tiny")
    dtype = encoder_dtype(torch.device("cpu"), cfg["train"]["amp"], cfg["train"]["cpu_amp"])
    side = sam.image_encoder.img_size
    _, context = cache_encoder(sam.image_encoder, sam_fingerprint(sam), dtype)
    cache = EmbeddingCache(cache_dir)
    images = dataset_keys(PartSegmentationDataset(train, SamTransform(side)), context)
    mirrors = dataset_keys(PartSegmentationDataset(train, SamTransform(side), mirrored=True), context)
    shards: dict[str, np.ndarray] = {}
    differences = []
    for image_key, mirror_key in zip(images, mirrors):
        (image_shard, image_row), (mirror_shard, mirror_row) = (
            cache.location(image_key),
            cache.location(mirror_key),
        )
        for name in (image_shard, mirror_shard):
            shards.setdefault(name, np.load(cache_dir / f"{name}.npy", mmap_mode="r+"))
        flipped = shards[image_shard][image_row][..., ::-1].copy()
        if len(differences) < 50:
            own = shards[mirror_shard][mirror_row].astype(np.float32)
            differences.append(float(np.abs(flipped.astype(np.float32) - own).mean()))
        shards[mirror_shard][mirror_row] = flipped
    for shard in shards.values():
        shard.flush()
    print(f"{len(mirrors)} mirror rows replaced; mean |flipped - mirror image's| {np.mean(differences):.4f}")


if __name__ == "__main__":
    main()
