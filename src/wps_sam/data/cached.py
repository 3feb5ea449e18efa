"""Data sets read through the embedding cache (:mod:`wps_sam.cache`): build it, then train from it.

Training needs each image's targets and its frozen SAM embedding, never its pixels; the items here
carry the embedding (or its cache key) instead of the image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..cache import CacheContext, EmbeddingCache, sam_fingerprint
from ..engine.distributed import barrier, get_rank, get_world_size, init_distributed
from ..errors import DataError
from ..hashing import sha256_of
from .coco import load_split
from .datasets import TARGET_KEYS, PartSegmentationDataset
from .images import image_size
from .transforms import SamTransform

logger = logging.getLogger(__name__)

# The cache variant of the embeddings of mirrored images (CacheContext.variant).
MIRRORED = "hflip"


class ImageLoader:
    """``load(i)``: image ``i`` of a :class:`PartSegmentationDataset`, preprocessed as its items are."""

    def __init__(self, dataset: PartSegmentationDataset) -> None:
        self.dataset = dataset

    def __call__(self, i: int) -> Tensor:
        return self.dataset.transform.apply_image(self.dataset.read_image(i))


def dataset_keys(dataset: PartSegmentationDataset, context: CacheContext) -> list[str]:
    """The cache key of every image of ``dataset`` (hashes every file once); a mirrored data set's
    images are keyed under the :data:`MIRRORED` variant of ``context``."""
    from concurrent.futures import ThreadPoolExecutor

    if dataset.mirrored:
        context = replace(context, variant=MIRRORED)

    paths = [entry.path for entry in dataset.index.images]
    with ThreadPoolExecutor(max_workers=8) as pool:  # hashlib releases the GIL on large buffers
        digests = list(pool.map(sha256_of, paths))
    return [context.key(d) for d in digests]


class CachedEmbeddingDataset(Dataset):
    """A :class:`PartSegmentationDataset` whose items carry a cached embedding instead of the image.

    Item ``i`` holds the dataset's targets (``labels``, ``boxes``, ``points``, ``masks`` if the
    dataset has them, ``image_id``, ``index``, ``original_size``, ``input_size``), its ``key`` and,
    with ``read_embeddings``, its ``embedding`` (float16 [256, h, w], read from the memory-mapped
    shards in the worker). No pixel is decoded: the original size comes from the file header, as
    ``PartSegmentationDataset`` would find it by decoding. Pass ``read_embeddings=False`` when the
    cache is resident on the GPU and gather with ``cache.get(batch["keys"])`` in the loop.
    """

    def __init__(
        self,
        dataset: PartSegmentationDataset,
        cache: EmbeddingCache,
        keys: Sequence[str],
        read_embeddings: bool = True,
    ) -> None:
        if len(keys) != len(dataset):
            raise ValueError(f"{len(keys)} keys for {len(dataset)} images")
        missing = cache.missing(keys)
        if missing:
            raise DataError(
                f"{len(missing)} of the data set's images are not in the embedding cache "
                f"{cache.root}: build it first (`wps-sam cache`)"
            )
        self.dataset, self.cache, self.keys = dataset, cache, list(keys)
        self.read_embeddings = read_embeddings

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        # The original size from the file header: no pixel is decoded.
        item = self.dataset.targets(i, image_size(self.dataset.index.images[i].path))
        item["key"] = self.keys[i]
        if self.read_embeddings:
            item["embedding"] = self.cache.get([self.keys[i]])[0]
        return item


def collate_cached(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Items of :class:`CachedEmbeddingDataset` -> ``{"embeddings": float16 [B, 256, h, w] (when read),
    "keys": [B], "targets": [B dicts]}``, targets as ``collate_parts`` makes them."""
    out: dict[str, Any] = {
        "keys": [item["key"] for item in batch],
        "targets": [{k: item[k] for k in TARGET_KEYS if k in item} for item in batch],
    }
    if all("embedding" in item for item in batch):
        out["embeddings"] = torch.stack([item["embedding"] for item in batch])
    return out


def cache_dataset(
    dataset: PartSegmentationDataset,
    cache: EmbeddingCache,
    encode: Callable[[Tensor], Tensor],
    context: CacheContext,
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = True,
) -> list[str]:
    """Make sure every image of ``dataset`` is cached; returns the keys, one per image.

    Under torchrun every rank calls this: each encodes its share (:meth:`EmbeddingCache.build`),
    then all wait for each other and re-read the index.
    """
    if context.image_size != dataset.transform.image_size:
        raise ValueError(
            f"context is for {context.image_size} px inputs, the data set makes "
            f"{dataset.transform.image_size} px"
        )
    keys = dataset_keys(dataset, context)
    rank, world_size = get_rank(), get_world_size()
    done = cache.build(
        keys, ImageLoader(dataset), encode, batch_size, rank, world_size, num_workers, progress and rank == 0
    )
    barrier()
    cache.refresh()
    logger.info("embedding cache %s: %d images, %d encoded by rank %d", cache.root, len(keys), done, rank)
    return keys


def precompute_cache(
    data_root: str | Path,
    split: str,
    cache_dir: str | Path,
    sam_type: str = "vit_b",
    sam_checkpoint: str | None = None,
    sam_sha256: str | None = None,
    device: str = "auto",
    batch_size: int = 8,
    num_workers: int = 0,
    dtype: str = "auto",
    compile: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """``wps-sam cache``: encode every image of ``split`` into the cache at ``cache_dir``.

    ``dtype``: ``auto`` (bf16 on CUDA, float32 on the CPU), ``bf16``, ``fp16`` or ``fp32``; it is
    part of the key, so training must use the same. Returns a summary (images, encoded, cache size).
    """
    from ..engine.device import resolve_device
    from ..sam.backbones import build_sam
    from ..sam.encoder import EncoderRunner

    rank, _, local_rank = init_distributed()
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    dtypes = {"auto": "auto", "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    sam = build_sam(sam_type, sam_checkpoint, sha256=sam_sha256)
    runner = EncoderRunner(sam.image_encoder.to(dev), dtype=dtypes[dtype], compile=compile)
    context = CacheContext(sam_fingerprint(sam), sam.image_encoder.img_size, runner.precision)
    dataset = PartSegmentationDataset(load_split(data_root, split), SamTransform(context.image_size))
    cache = EmbeddingCache(cache_dir)
    before = len(cache)
    keys = cache_dataset(dataset, cache, runner, context, batch_size, num_workers, progress)
    return {
        "images": len(keys),
        "encoded": len(cache) - before,
        "cached_total": len(cache),
        "cache_dir": str(cache.root),
        "context": asdict(context),
        "rank": rank,
    }
