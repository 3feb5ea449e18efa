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
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..cache import CacheContext, EmbeddingCache, default_cache_dir, sam_fingerprint
from ..config import TrainConfig
from ..engine.distributed import barrier, get_rank, get_world_size, init_distributed
from ..errors import DataError
from ..hashing import sha256_of
from ..sam.encoder import EncoderRunner
from .coco import PartDataIndex, load_split
from .datasets import TARGET_KEYS, PartSegmentationDataset
from .images import image_size
from .transforms import SamTransform

logger = logging.getLogger(__name__)

# The cache variants (CacheContext.variant) of the embeddings of mirrored images (the training
# augmentation: an image flipped before it is fitted into SAM's frame) and of mirrored input frames
# (test-time mirroring: the whole S x S frame flipped, padding included, as ``WPSSAM.embed(...,
# mirrored=True)`` encodes it; the two agree when an image fills the frame).
MIRRORED = "hflip"
MIRRORED_FRAME = "frame-hflip"


class ImageLoader:
    """``load(i)``: image ``i`` of a :class:`PartSegmentationDataset`, preprocessed as its items are."""

    def __init__(self, dataset: PartSegmentationDataset) -> None:
        self.dataset = dataset

    def __call__(self, i: int) -> Tensor:
        return self.dataset.transform.apply_image(self.dataset.read_image(i))


class MirroredFrameLoader(ImageLoader):
    """``load(i)``: the input frame [3, S, S] of image ``i`` flipped left-right (test-time mirroring)."""

    def __call__(self, i: int) -> Tensor:
        return super().__call__(i).flip(-1)


def cache_encoder(
    image_encoder: nn.Module, fingerprint: str, dtype: torch.dtype | None, compile: bool = False
) -> tuple[EncoderRunner, CacheContext]:
    """The encoder pass that fills the cache and the context that keys what it writes.

    ``fingerprint``: :func:`~wps_sam.cache.sam_fingerprint` of the SAM; ``dtype``: the pass's autocast
    (:func:`~wps_sam.engine.device.encoder_dtype`), part of the key through the runner's precision.
    """
    runner = EncoderRunner(image_encoder, dtype=dtype, compile=compile)
    return runner, CacheContext(fingerprint, image_encoder.img_size, runner.precision)


def dataset_keys(
    dataset: PartSegmentationDataset, context: CacheContext, mirrored_frames: bool = False
) -> list[str]:
    """The cache key of every image of ``dataset`` (hashes every file once); a mirrored data set's
    images are keyed under the :data:`MIRRORED` variant of ``context``, their mirrored input frames
    (``mirrored_frames``) under :data:`MIRRORED_FRAME`."""
    from concurrent.futures import ThreadPoolExecutor

    if dataset.mirrored and mirrored_frames:
        raise ValueError("dataset_keys: mirrored_frames keys an unmirrored data set's mirrored frames")
    if dataset.mirrored or mirrored_frames:
        context = replace(context, variant=MIRRORED if dataset.mirrored else MIRRORED_FRAME)

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


class CachedRows:
    """A split's embeddings in the cache, by position: ``rows[idx]`` (positions, a list or a LongTensor)
    -> float16 [len(idx), 256, h, w], read from disk at each call, so that a split of any size is
    never held in memory; what :func:`~wps_sam.evaluation.evaluator.evaluate` reads in place of
    encoding the images."""

    def __init__(self, cache: EmbeddingCache, keys: Sequence[str]) -> None:
        missing = cache.missing(keys)
        if missing:
            raise DataError(f"{len(missing)} of the split's embeddings are not in the cache {cache.root}")
        self.cache, self.keys = cache, list(keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, rows: Sequence[int] | Tensor) -> Tensor:
        return self.cache.get([self.keys[int(r)] for r in rows])


def split_embeddings(
    index: PartDataIndex,
    image_encoder: nn.Module,
    fingerprint: str,
    train_cfg: TrainConfig,
    device: torch.device,
    mirrored_frames: bool,
    progress: bool = True,
) -> tuple[CachedRows, CachedRows | None]:
    """The embeddings of every image of a split and, with ``mirrored_frames``, of their mirrored input
    frames (test-time mirroring), through the embedding cache: encoded once, in the precision and
    cache folder of ``train_cfg`` (as the training images are), then read back; what ``wps-sam eval``
    and the trainer's validation read instead of encoding the split at every call.

    Under torchrun every rank calls this and encodes its share (:func:`cache_dataset`). It encodes
    eagerly: a split is encoded once, so ``train.compile_encoder``'s compilation would not pay for
    itself.
    """
    from ..engine.device import encoder_dtype

    dtype = encoder_dtype(device, train_cfg.amp, train_cfg.cpu_amp)
    runner, context = cache_encoder(image_encoder, fingerprint, dtype)
    cache = EmbeddingCache(train_cfg.cache_dir or default_cache_dir())
    dataset = PartSegmentationDataset(index, SamTransform(context.image_size), point_mode="box_center")

    def rows(frames: bool) -> CachedRows:
        keys = cache_dataset(
            dataset, cache, runner, context, train_cfg.batch_size, progress=progress, mirrored_frames=frames
        )
        return CachedRows(cache, keys)

    return rows(False), rows(True) if mirrored_frames else None


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
    mirrored_frames: bool = False,
) -> list[str]:
    """Make sure every image of ``dataset`` (with ``mirrored_frames``: every mirrored input frame,
    :data:`MIRRORED_FRAME`) is cached; returns the keys, one per image.

    Under torchrun every rank calls this: each encodes its share (:meth:`EmbeddingCache.build`),
    then all wait for each other and re-read the index.
    """
    if context.image_size != dataset.transform.image_size:
        raise ValueError(
            f"context is for {context.image_size} px inputs, the data set makes "
            f"{dataset.transform.image_size} px"
        )
    keys = dataset_keys(dataset, context, mirrored_frames)
    rank, world_size = get_rank(), get_world_size()
    load = MirroredFrameLoader(dataset) if mirrored_frames else ImageLoader(dataset)
    done = cache.build(keys, load, encode, batch_size, rank, world_size, num_workers, progress and rank == 0)
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

    rank, _, local_rank = init_distributed()
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    dtypes = {"auto": "auto", "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    sam = build_sam(sam_type, sam_checkpoint, sha256=sam_sha256)
    runner, context = cache_encoder(sam.image_encoder.to(dev), sam_fingerprint(sam), dtypes[dtype], compile)
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
