"""The frozen-encoder embedding cache: SAM's image encoder runs once per image, not once per epoch.

SAM is frozen in WPS-SAM, so an image's embedding never changes during training. The cache stores
each embedding once, keyed by everything it depends on, and training reads it back instead of
decoding and encoding the image again.

**Key.** ``sha256(image file bytes)`` combined with a :class:`CacheContext`: the SAM weights'
fingerprint (:func:`sam_fingerprint`), the input side S, SAM's pixel mean/std, the encoder's
numerics (``sdpa-bf16`` ...), the augmentation variant and :data:`PREPROCESS_VERSION`. Changing any
of them changes the key, so stale entries are simply never read (``clear_cache`` reclaims the disk).
File bytes rather than decoded pixels: hashing a JPEG is far cheaper than decoding it, and keys are
computed at every training start; a re-encoded file with identical pixels only costs a re-encode.

**Storage.** float16 ``.npy`` shards of up to ``shard_rows`` rows [256, h, w], read through
``np.load(mmap_mode="r")``. numpy has no bfloat16, and float16 is the better 16-bit format here:
SAM's neck ends in a ``LayerNorm2d``, so a value is at most ``sqrt(255) * max|w| + max|b|`` (16 for
unit weights; random tiny SAM embeddings peak at about 4.5), far inside float16's range (65504,
checked on every write), and float16 keeps 3 more mantissa bits than bf16 (relative rounding error
at most 2**-11 above 6e-5, absolute at most 3e-8 below; bf16 values above 6e-5 convert exactly).
Each shard has a ``.keys.json`` beside it, the shard's slice of the index, written atomically
*after* the shard: a shard without its keys file was never committed and is ignored. The index is the
union of the keys files, so ranks building in parallel never write the same file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .atomic import atomic_write, atomic_write_json
from .errors import DataError

if TYPE_CHECKING:
    from segment_anything.modeling import Sam


logger = logging.getLogger(__name__)

# Bump when read_image or SamTransform change what the encoder sees: every key changes with it.
PREPROCESS_VERSION = 1
FORMAT_VERSION = 1
STORE_DTYPE = np.dtype("<f2")
FLOAT16_MAX = 65504.0


def default_cache_dir() -> Path:
    """``$WPS_SAM_CACHE``, else ``$XDG_CACHE_HOME/wps-sam/embeddings`` (``~/.cache`` by default)."""
    if os.environ.get("WPS_SAM_CACHE"):
        return Path(os.environ["WPS_SAM_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "wps-sam" / "embeddings"


def sam_fingerprint(sam: Sam) -> str:
    """What the embeddings of ``sam`` depend on: its checkpoint's sha256 when it was loaded from a
    file, else (random or modified weights) a sha256 of the image encoder's parameters and buffers."""
    digest = getattr(sam, "checkpoint_sha256", None)
    if digest and digest != "random":
        return str(digest)
    h = hashlib.sha256()
    for name, tensor in sorted(sam.image_encoder.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "params-" + h.hexdigest()


@dataclass(frozen=True)
class CacheContext:
    """Everything besides the image that an embedding depends on.

    ``sam``: :func:`sam_fingerprint`; ``image_size``: S of the input frame; ``precision``: the
    encoder's numerics (``EncoderRunner.precision``, e.g. ``sdpa-bf16``); ``variant``: the image
    augmentation applied before encoding (``"none"``).
    """

    sam: str
    image_size: int
    precision: str
    variant: str = "none"
    preprocess: int = PREPROCESS_VERSION

    def digest(self) -> str:
        from .data.transforms import PIXEL_MEAN, PIXEL_STD

        payload = {**asdict(self), "pixel_mean": list(PIXEL_MEAN), "pixel_std": list(PIXEL_STD)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def key(self, image_digest: str) -> str:
        """The cache key of the image whose file has sha256 ``image_digest``."""
        return hashlib.sha256(f"{image_digest}:{self.digest()}".encode()).hexdigest()


def _row_runs(pairs: Sequence[tuple[int, int]]) -> Iterator[tuple[int, int, int]]:
    """(first row of ``buf``, first shard row, length) of each run of ``pairs`` (row of ``buf``, row
    of the shard) that advances both by one."""
    start = None
    for dst, row in pairs:
        if start is not None and dst == start[0] + start[2] and row == start[1] + start[2]:
            start = (start[0], start[1], start[2] + 1)
            continue
        if start is not None:
            yield start
        start = (dst, row, 1)
    if start is not None:
        yield start


def _read_rows(array: np.memmap, pairs: Sequence[tuple[int, int]], buf: np.ndarray) -> None:
    """Copy rows of the shard ``array`` into the C-contiguous ``buf``: ``pairs`` of (row of ``buf``,
    row of the shard).

    Where the OS has ``preadv`` (Linux, the BSDs) each run of consecutive rows is one read from the
    file straight into ``buf`` instead of a copy out of the memory map: on the build machine, page
    cache warm, 1600 of the demo's rows read back in 0.33 s against 1.22 s, a single row in 0.06 ms
    against 0.11 ms. Elsewhere through the map.
    """
    if not hasattr(os, "preadv"):
        dst, rows = zip(*pairs)
        buf[list(dst)] = array[list(rows)]
        return
    row_bytes = buf[0].nbytes
    fd = os.open(array.filename, os.O_RDONLY)
    try:
        for dst, row, count in _row_runs(pairs):
            view = memoryview(buf[dst : dst + count]).cast("B")
            offset = array.offset + row * row_bytes
            while view:
                read = os.preadv(fd, [view], offset)
                if read == 0:
                    raise DataError(f"embedding cache shard {array.filename} is truncated")
                view, offset = view[read:], offset + read
    finally:
        os.close(fd)


class EmbeddingCache:
    """SAM embeddings on disk under ``root``, by key; optionally resident in (GPU) memory.

    Args:
        root: the cache folder (created on the first write).
        shard_rows: rows per shard file (vit_b: 2 MiB per row). A build commits a shard at a time, so
            an interrupted build keeps what it finished.
    """

    def __init__(self, root: str | Path, shard_rows: int = 512) -> None:
        if shard_rows < 1:
            raise ValueError(f"shard_rows must be positive, got {shard_rows}")
        self.root = Path(root)
        self.shard_rows = shard_rows
        self._index: dict[str, tuple[str, int]] = {}  # key -> (shard name, row)
        self._arrays: dict[str, np.ndarray] = {}  # open memmaps, per process
        self._resident: tuple[Tensor, dict[str, int]] | None = None
        self.refresh()

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers reopen the memmaps lazily and never receive a GPU-resident copy.
        return {**self.__dict__, "_arrays": {}, "_resident": None}

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    @property
    def resident_device(self) -> torch.device | None:
        return None if self._resident is None else self._resident[0].device

    def refresh(self) -> None:
        """Re-read the index from the keys files (after another process or rank wrote shards)."""
        index: dict[str, tuple[str, int]] = {}
        for keys_file in sorted(self.root.glob("*.keys.json")):
            name = keys_file.name[: -len(".keys.json")]
            try:
                meta = json.loads(keys_file.read_text())
            except (OSError, json.JSONDecodeError) as e:
                logger.warning("embedding cache: ignoring unreadable %s (%s)", keys_file, e)
                continue
            if meta.get("format") != FORMAT_VERSION or not (self.root / f"{name}.npy").is_file():
                logger.warning("embedding cache: ignoring %s (other format or missing shard)", keys_file)
                continue
            for row, key in enumerate(meta["keys"]):
                index.setdefault(key, (name, row))  # a key written twice: the first shard wins
        self._index = index
        self._arrays = {}

    def location(self, key: str) -> tuple[str, int]:
        """Where the embedding of ``key`` lies: (shard name, row) of ``ROOT/<shard>.npy``. Raises
        ``KeyError`` for a missing key."""
        if key not in self._index:
            raise KeyError(f"{key} is not in the embedding cache {self.root}")
        return self._index[key]

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The distinct keys of ``keys`` that are not cached, in first-seen order."""
        return [k for k in dict.fromkeys(keys) if k not in self._index]

    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = np.load(self.root / f"{name}.npy", mmap_mode="r")
        return self._arrays[name]

    def get(self, keys: Sequence[str], device: torch.device | str | None = None) -> Tensor:
        """float16 [B, 256, h, w] embeddings of ``keys``, on ``device`` (the resident device if the
        cache is resident and holds them all, else the CPU). Raises ``KeyError`` for a missing key."""
        if self._resident is not None and all(k in self._resident[1] for k in keys):
            table, rows = self._resident
            idx = torch.tensor([rows[k] for k in keys], device=table.device)
            out = table.index_select(0, idx)
        else:
            absent = [k for k in keys if k not in self._index]
            if absent:
                raise KeyError(
                    f"{len(absent)} key(s) not in the embedding cache {self.root}, e.g. {absent[0]}"
                )
            first = self._array(self._index[keys[0]][0]) if keys else None
            shape = first.shape[1:] if first is not None else (0,)
            buf = np.empty((len(keys), *shape), dtype=STORE_DTYPE)
            by_shard: dict[str, list[tuple[int, int]]] = {}
            for i, k in enumerate(keys):
                name, row = self._index[k]
                by_shard.setdefault(name, []).append((i, row))
            for name, pairs in by_shard.items():
                array = self._array(name)
                if array.shape[1:] != shape:
                    raise DataError(
                        f"embedding cache {self.root}: keys of different embedding shapes in one batch"
                    )
                _read_rows(array, pairs, buf)
            out = torch.from_numpy(buf)
        return out if device is None else out.to(device, non_blocking=True)

    def make_resident(
        self, keys: Sequence[str], device: torch.device | str, max_bytes: int | None = None
    ) -> bool:
        """Copy the embeddings of ``keys`` into one tensor on ``device`` when it fits; returns whether.

        ``max_bytes`` defaults to half the free memory of a CUDA device (no limit elsewhere).
        """
        keys = list(dict.fromkeys(keys))
        device = torch.device(device)
        if not keys:
            return False
        row_bytes = int(np.prod(self._array(self._index[keys[0]][0]).shape[1:])) * STORE_DTYPE.itemsize
        need = row_bytes * len(keys)
        if max_bytes is None and device.type == "cuda":
            max_bytes = torch.cuda.mem_get_info(device)[0] // 2
        if max_bytes is not None and need > max_bytes:
            logger.info(
                "embedding cache: %.1f GB do not fit in %.1f GB on %s; reading from disk",
                need / 1e9,
                max_bytes / 1e9,
                device,
            )
            return False
        table = torch.empty((len(keys), *self.get(keys[:1]).shape[1:]), dtype=torch.float16, device=device)
        for start in range(0, len(keys), 256):
            table[start : start + 256] = self.get(keys[start : start + 256]).to(device)
        self._resident = (table, {k: i for i, k in enumerate(keys)})
        logger.info("embedding cache: %d embeddings (%.2f GB) resident on %s", len(keys), need / 1e9, device)
        return True

    def release(self) -> None:
        """Drop the resident copy."""
        self._resident = None

    def put(self, keys: Sequence[str], embeddings: Tensor, rank: int = 0) -> None:
        """Store ``embeddings`` [n, 256, h, w] under ``keys`` (as new shards)."""
        batches = [embeddings[i : i + self.shard_rows] for i in range(0, len(keys), self.shard_rows)]
        for start, batch in zip(range(0, len(keys), self.shard_rows), batches):
            self._write_shard(keys[start : start + len(batch)], iter([batch]), tuple(batch.shape[1:]), rank)

    def _write_shard(
        self,
        keys: Sequence[str],
        batches: Iterable[Tensor],
        shape: tuple[int, ...],
        rank: int,
        on_batch: Callable[[int], Any] | None = None,
    ) -> None:
        """Stream ``batches`` (rows of ``keys``, in order) into one shard, then commit its keys file."""
        name = f"r{rank:03d}-{uuid.uuid4().hex[:16]}"
        header = {
            "descr": np.lib.format.dtype_to_descr(STORE_DTYPE),
            "fortran_order": False,
            "shape": (len(keys), *shape),
        }

        def write(f: IO[bytes]) -> None:
            np.lib.format.write_array_header_1_0(f, header)
            rows = 0
            for batch in batches:
                if tuple(batch.shape[1:]) != shape:
                    raise ValueError(f"embeddings of shape {tuple(batch.shape[1:])}, expected {shape}")
                peak = float(batch.abs().max()) if batch.numel() else 0.0
                if not peak < FLOAT16_MAX:  # also catches NaN
                    raise DataError(f"embedding values reach {peak}: not storable in float16")
                # Rounded on the device: half the bytes to copy back.
                f.write(batch.detach().to(torch.float16).cpu().contiguous().numpy().tobytes())
                rows += len(batch)
                if on_batch is not None:
                    on_batch(len(batch))
            if rows != len(keys):
                raise ValueError(f"got {rows} embeddings for {len(keys)} keys")

        atomic_write(self.root / f"{name}.npy", write)
        atomic_write_json(
            self.root / f"{name}.keys.json",
            {"format": FORMAT_VERSION, "dtype": "float16", "shape": list(shape), "keys": list(keys)},
        )
        for row, key in enumerate(keys):
            self._index.setdefault(key, (name, row))

    def build(
        self,
        keys: Sequence[str],
        load: Callable[[int], Tensor],
        encode: Callable[[Tensor], Tensor],
        batch_size: int = 8,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        progress: bool = True,
    ) -> int:
        """Encode the images whose keys are missing; returns how many this rank encoded.

        Args:
            keys: the key of every image (duplicates allowed).
            load: ``load(i)`` -> the preprocessed image [3, S, S] of ``keys[i]`` (picklable when
                ``num_workers`` > 0, e.g. :class:`ImageLoader`).
            encode: [B, 3, S, S] -> [B, 256, h, w] embeddings (e.g. an ``EncoderRunner``).
            rank, world_size: rank r encodes the missing keys among ``shard(distinct keys, r, world)``.
                Ownership depends on ``keys`` alone, so ranks need no coordination while they build;
                call ``barrier()`` and then :meth:`refresh` before reading what the others wrote.
        """
        from torch.utils.data import DataLoader
        from tqdm import tqdm

        from .engine.distributed import shard

        first: dict[str, int] = {}  # distinct key -> its first position in ``keys``
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        todo = [first[k] for k in shard(list(first), rank, world_size) if k not in self._index]
        if not todo:
            return 0
        desc = f"embedding cache (rank {rank})" if world_size > 1 else "embedding cache"
        bar = tqdm(total=len(todo), desc=desc, disable=not progress, dynamic_ncols=True, unit="img")
        for start in range(0, len(todo), self.shard_rows):
            chunk = todo[start : start + self.shard_rows]
            loader = DataLoader(_Indexed(load, chunk), batch_size=batch_size, num_workers=num_workers)
            embeddings = (encode(images) for images in loader)
            head = next(embeddings)  # the shard's header needs the embedding shape
            self._write_shard(
                [keys[i] for i in chunk],
                _chain(head, embeddings),
                tuple(head.shape[1:]),
                rank,
                on_batch=bar.update,
            )
        bar.close()
        return len(todo)


def _chain(head: Tensor, rest: Iterable[Tensor]) -> Iterable[Tensor]:
    yield head
    yield from rest


class _Indexed(Dataset):
    def __init__(self, load: Callable[[int], Tensor], indices: list[int]) -> None:
        self.load, self.indices = load, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Tensor:
        return self.load(self.indices[i])


def clear_cache(root: str | Path) -> None:
    """Delete the cache folder ``root`` (refuses a folder that holds anything but cache files)."""
    root = Path(root)
    if not root.exists():
        return
    foreign = [
        p for p in root.iterdir() if not (p.name.endswith((".npy", ".keys.json", ".tmp")) and p.is_file())
    ]
    if foreign:
        raise DataError(
            f"{root} holds {foreign[0].name}, which is not an embedding cache file: not deleting it"
        )
    shutil.rmtree(root)
