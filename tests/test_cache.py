"""The embedding cache: storage round trip, keys and invalidation, atomic commits, and training with
the cache equal to training without it."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from segment_anything.modeling import Sam
from tests.data.fixtures import write_part_dataset
from torch import Tensor, nn
from torch.utils.data import DataLoader

from wps_sam.build import build_training_criterion, build_wps_sam
from wps_sam.cache import CacheContext, EmbeddingCache, clear_cache, sam_fingerprint
from wps_sam.config import Config, DataConfig, PrompterConfig, SamConfig
from wps_sam.data.cached import (
    CachedEmbeddingDataset,
    ImageLoader,
    cache_dataset,
    collate_cached,
    dataset_keys,
    precompute_cache,
)
from wps_sam.data.coco import load_split
from wps_sam.data.datasets import PartSegmentationDataset, collate_parts
from wps_sam.data.transforms import SamTransform
from wps_sam.engine.loop import train_step
from wps_sam.engine.schedule import warmup_cosine
from wps_sam.errors import DataError
from wps_sam.sam.backbones import build_sam
from wps_sam.sam.encoder import accelerate_encoder

SHAPE = (256, 4, 4)


@pytest.fixture
def one_thread():
    """One intra-op thread: encoder runs on a shared 2-core CPU stall when threads oversubscribe it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fake_keys(n: int) -> list[str]:
    return [f"k{i:03d}" for i in range(n)]


class CountingEncoder:
    """A deterministic stand-in for SAM's encoder: the embedding of an image is a function of it alone."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, images: Tensor) -> Tensor:
        self.seen += len(images)
        return images.mean(dim=(1, 2, 3))[:, None, None, None] + torch.linspace(-3, 3, 256 * 16).view(
            1, *SHAPE
        )


def load_fake(i: int) -> Tensor:
    return torch.full((3, 8, 8), float(i))


def new_sam(seed: int = 0) -> Sam:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return build_sam("vit_mini", "random")


def test_round_trip_is_float16_rounding(tmp_path):
    cache = EmbeddingCache(tmp_path / "c", shard_rows=2)
    x = torch.randn(5, *SHAPE) * 3
    cache.put(fake_keys(5), x)
    assert len(list((tmp_path / "c").glob("*.npy"))) == 3  # 2 + 2 + 1 rows
    reopened = EmbeddingCache(tmp_path / "c")
    order = ["k004", "k000", "k003", "k001"]  # across shards, any order
    got = reopened.get(order)
    assert got.dtype == torch.float16 and got.shape == (4, *SHAPE)
    assert torch.equal(got, x[[4, 0, 3, 1]].half())
    rel = ((got.float() - x[[4, 0, 3, 1]]).abs() / x[[4, 0, 3, 1]].abs().clamp_min(6.1e-5)).max()
    assert rel <= 2**-11
    bf16 = torch.randn(2, *SHAPE).bfloat16()  # what a bf16 encoder makes is stored exactly
    cache.put(["b0", "b1"], bf16)
    assert torch.equal(cache.get(["b0", "b1"]).float(), bf16.float())
    with pytest.raises(KeyError):
        cache.get(["nope"])


def test_location_names_the_shard_and_row(tmp_path):
    cache = EmbeddingCache(tmp_path / "c", shard_rows=2)
    x = torch.randn(3, *SHAPE)
    cache.put(fake_keys(3), x)
    shard, row = cache.location("k002")
    stored = np.load(tmp_path / "c" / f"{shard}.npy")[row]
    assert row == 0 and torch.equal(torch.from_numpy(stored), x[2].half())  # the third row: shard two
    with pytest.raises(KeyError, match="not in the embedding cache"):
        cache.location("nope")


@pytest.mark.parametrize("preadv", [True, False])
def test_reads_runs_of_rows_and_single_rows_alike(tmp_path, monkeypatch, preadv):
    if not preadv:
        monkeypatch.delattr("wps_sam.cache.os.preadv", raising=False)
    elif not hasattr(os, "preadv"):
        pytest.skip("this OS has no preadv")
    x = torch.randn(7, *SHAPE)
    EmbeddingCache(tmp_path, shard_rows=4).put(fake_keys(7), x)
    # runs (k001-k003, k005-k006 across no shard boundary), a repeat, a step back, another shard
    order = [1, 2, 3, 0, 5, 6, 6, 2, 4]
    got = EmbeddingCache(tmp_path).get([f"k{i:03d}" for i in order])
    assert torch.equal(got, x[order].half())


def test_a_truncated_shard_is_an_error(tmp_path):
    if not hasattr(os, "preadv"):
        pytest.skip("this OS has no preadv")
    EmbeddingCache(tmp_path, shard_rows=4).put(fake_keys(3), torch.randn(3, *SHAPE))
    cache = EmbeddingCache(tmp_path)
    cache.get(["k000"])  # the shard is mapped: its size is checked once, when it is opened
    shard = next(tmp_path.glob("*.npy"))
    shard.write_bytes(shard.read_bytes()[: -int(np.prod(SHAPE))])  # the last row loses half its bytes
    with pytest.raises(DataError, match="truncated"):
        cache.get(["k002"])


def test_build_encodes_only_missing_keys(tmp_path):
    cache, encode = EmbeddingCache(tmp_path, shard_rows=3), CountingEncoder()
    keys = fake_keys(5) + ["k001"]  # a duplicate image is encoded once
    assert cache.build(keys, load_fake, encode, batch_size=2, progress=False) == 5
    assert encode.seen == 5 and len(cache) == 5
    assert cache.build(keys, load_fake, encode, progress=False) == 0 and encode.seen == 5  # all hits
    assert cache.build(fake_keys(7), load_fake, encode, progress=False) == 2 and encode.seen == 7
    expected = encode(torch.stack([load_fake(i) for i in range(7)]))
    assert torch.equal(EmbeddingCache(tmp_path).get(fake_keys(7)), expected.half())
    assert cache.missing(fake_keys(9)) == ["k007", "k008"]


def test_ranks_build_disjoint_shares(tmp_path):
    keys, encode = fake_keys(7), CountingEncoder()
    done = [
        EmbeddingCache(tmp_path / "split").build(
            keys, load_fake, encode, 2, rank=r, world_size=3, progress=False
        )
        for r in range(3)
    ]
    assert done == [3, 2, 2]
    EmbeddingCache(tmp_path / "one").build(keys, load_fake, encode, progress=False)
    split, one = EmbeddingCache(tmp_path / "split"), EmbeddingCache(tmp_path / "one")
    assert torch.equal(split.get(keys), one.get(keys))


def test_failed_build_commits_nothing(tmp_path):
    cache = EmbeddingCache(tmp_path, shard_rows=4)

    def broken(images: Tensor) -> Tensor:
        if images[0, 0, 0, 0] >= 2:
            raise RuntimeError("encoder crashed")
        return CountingEncoder()(images)

    with pytest.raises(RuntimeError):
        cache.build(fake_keys(6), load_fake, broken, batch_size=2, progress=False)
    # The first shard's second batch failed: no shard, no keys file, no temporary file is left.
    assert list(tmp_path.iterdir()) == [] and len(EmbeddingCache(tmp_path)) == 0
    # An uncommitted shard (crash between the shard and its keys file) is never read.
    cache.put(["a"], torch.zeros(1, *SHAPE))
    keys_file = next(tmp_path.glob("*.keys.json"))
    keys_file.unlink()
    assert "a" not in EmbeddingCache(tmp_path)


def test_float16_overflow_is_refused(tmp_path):
    with pytest.raises(DataError):
        EmbeddingCache(tmp_path).put(["x"], torch.full((1, *SHAPE), 7e4))
    with pytest.raises(DataError):
        EmbeddingCache(tmp_path).put(["x"], torch.full((1, *SHAPE), float("nan")))


def test_resident_copy(tmp_path):
    cache = EmbeddingCache(tmp_path)
    x = torch.randn(4, *SHAPE)
    cache.put(fake_keys(4), x)
    assert not cache.make_resident(fake_keys(4), "cpu", max_bytes=1000)  # does not fit
    assert cache.make_resident(fake_keys(3), "cpu") and cache.resident_device == torch.device("cpu")
    assert torch.equal(cache.get(["k002", "k000"]), x[[2, 0]].half())
    assert torch.equal(cache.get(["k003", "k000"]), x[[3, 0]].half())  # k003 is read from disk
    state = cache.__getstate__()
    assert state["_resident"] is None and state["_arrays"] == {}  # workers get no resident copy


def test_keys_change_with_everything_an_embedding_depends_on(tmp_path):
    sam = new_sam()
    fingerprint = sam_fingerprint(sam)
    assert fingerprint == sam_fingerprint(new_sam()) and fingerprint.startswith("params-")
    with torch.no_grad():
        sam.image_encoder.neck[0].weight[0, 0] += 1e-3  # other weights: other embeddings
    assert sam_fingerprint(sam) != fingerprint
    sam.checkpoint_sha256 = "ab" * 32
    assert sam_fingerprint(sam) == "ab" * 32  # a loaded checkpoint is identified by its file

    base = CacheContext(fingerprint, 256, "sdpa-fp32")
    key = base.key("d" * 64)
    assert key == CacheContext(fingerprint, 256, "sdpa-fp32").key("d" * 64)
    for other in (
        CacheContext("params-other", 256, "sdpa-fp32"),
        CacheContext(fingerprint, 1024, "sdpa-fp32"),
        CacheContext(fingerprint, 256, "sdpa-bf16"),
        CacheContext(fingerprint, 256, "sdpa-fp32", "hflip"),
        CacheContext(fingerprint, 256, "sdpa-fp32", preprocess=99),
    ):
        assert other.key("d" * 64) != key
    assert base.key("e" * 64) != key

    write_part_dataset(tmp_path, "train", 2)
    ds = PartSegmentationDataset(load_split(tmp_path, "train"), SamTransform(256))
    keys = dataset_keys(ds, base)
    path = ds.index.images[0].path
    path.write_bytes(path.read_bytes() + b"\0")  # other file bytes: another key
    new_keys = dataset_keys(ds, base)
    assert new_keys[0] != keys[0] and new_keys[1] == keys[1]


def test_cached_items_equal_dataset_items(tmp_path):
    write_part_dataset(tmp_path, "train", 3, empty_images=1)
    ds = PartSegmentationDataset(load_split(tmp_path, "train"), SamTransform(64), with_masks=True)
    cache = EmbeddingCache(tmp_path / "cache")
    keys = [f"key{i}" for i in range(3)]
    with pytest.raises(DataError):
        CachedEmbeddingDataset(ds, cache, keys)  # not built yet
    cache.build(keys, ImageLoader(ds), CountingEncoder(), progress=False)
    cached = CachedEmbeddingDataset(ds, cache, keys)
    for i in range(3):
        item, plain = cached[i], ds[i]
        assert torch.equal(ImageLoader(ds)(i), plain["image"])
        assert set(item) == set(plain) - {"image"} | {"key", "embedding"}
        for k in plain:
            if k != "image":
                assert (
                    torch.equal(item[k], plain[k]) if isinstance(plain[k], Tensor) else item[k] == plain[k]
                ), k
    batch = collate_cached([cached[0], cached[1]])
    assert batch["embeddings"].shape == (2, *SHAPE) and batch["keys"] == keys[:2]
    reference = collate_parts([ds[0], ds[1]])
    assert batch["targets"][1]["image_id"] == reference["targets"][1]["image_id"]
    lean = CachedEmbeddingDataset(ds, cache, keys, read_embeddings=False)
    assert "embeddings" not in collate_cached([lean[0]])


class Fp16RoundTrip(nn.Module):
    """SAM's encoder, one image at a time, its output rounded through float16 as the cache stores it.

    One image at a time, as the cache is built here (``batch_size=1``): every image then goes through
    the same kernels in both runs, whatever the batch it trains in, so the bits agree on any CPU.
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, images: Tensor) -> Tensor:
        return torch.cat([self.encoder(image[None]) for image in images]).half().float()


def _train(model, batches, dataset, collate, cfg, num_classes, optimizer_cls=torch.optim.AdamW, lr=1e-3):
    """Train ``model`` on ``batches`` as the trainer does; returns the prompter's weights and the losses."""
    torch.manual_seed(0)
    criterion = build_training_criterion(cfg, num_classes)
    optimizer = optimizer_cls(model.prompter.parameters(), lr=lr)
    scheduler = warmup_cosine(optimizer, 1, len(batches))
    model.train()
    losses = []
    for batch in DataLoader(dataset, batch_sampler=batches, collate_fn=collate):
        losses.append(
            train_step(model, criterion, batch, optimizer, scheduler, torch.device("cpu"), amp=False)["loss"]
        )
    return model.prompter.state_dict(), losses


@pytest.mark.slow
def test_training_with_and_without_cache(tmp_path, one_thread):
    """Same batches, same initial prompter: the cache changes nothing but the float16 rounding.

    Exactly equal weights when the uncached run also rounds its embeddings through float16 (so only
    the plumbing is compared: keys, order, gathering); close results against the plain float32 run.
    """
    write_part_dataset(tmp_path, "train", 4, max_parts=2)
    index = load_split(tmp_path, "train")
    cfg = Config(
        sam=SamConfig("vit_mini", "random"),
        data=DataConfig(supervision="box"),
        prompter=PrompterConfig(
            num_queries=4, hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1, dim_feedforward=64
        ),
    )
    sam = new_sam()
    dataset = PartSegmentationDataset(index, SamTransform(256), "box")
    batches = [[0, 1], [2, 3], [3, 0], [1, 2]]

    def model(encoder_wrapper=None):
        torch.manual_seed(1)  # the same initial prompter every time
        m = build_wps_sam(cfg, index.num_classes, sam)
        if encoder_wrapper is not None:
            m.image_encoder = encoder_wrapper(m.image_encoder)
        return m

    cache = EmbeddingCache(tmp_path / "cache")
    # build_wps_sam runs the encoder with SDPA attention; the cache must be built by the same encoder.
    accelerate_encoder(sam.image_encoder)
    context = CacheContext(sam_fingerprint(sam), 256, "sdpa-fp32")
    keys = cache_dataset(dataset, cache, sam.image_encoder, context, batch_size=1, progress=False)
    cached = CachedEmbeddingDataset(dataset, cache, keys)

    with_cache, loss_cached = _train(model(), batches, cached, collate_cached, cfg, index.num_classes)
    rounded, loss_rounded = _train(
        model(Fp16RoundTrip), batches, dataset, collate_parts, cfg, index.num_classes
    )
    assert loss_cached == loss_rounded
    for k in with_cache:
        assert torch.equal(with_cache[k], rounded[k]), k

    # Against the plain float32 run the losses agree to the rounding. The weights are compared after
    # SGD: AdamW normalises each parameter's step, so rounding noise on a near-zero gradient becomes
    # a step of up to lr, while SGD's steps are linear in the gradient.
    _, loss_plain = _train(model(), batches, dataset, collate_parts, cfg, index.num_classes)
    np.testing.assert_allclose(loss_cached, loss_plain, rtol=1e-3)
    sgd = dict(optimizer_cls=torch.optim.SGD, lr=0.1)
    sgd_cached, _ = _train(model(), batches, cached, collate_cached, cfg, index.num_classes, **sgd)
    sgd_plain, _ = _train(model(), batches, dataset, collate_parts, cfg, index.num_classes, **sgd)
    start = model().prompter.state_dict()
    moved = torch.cat([(sgd_plain[k] - start[k]).flatten() for k in start]).norm()
    differ = torch.cat([(sgd_cached[k] - sgd_plain[k]).flatten() for k in start]).norm()
    assert differ <= 1e-3 * moved
    # A second run finds everything cached: no encoder call.
    assert (
        cache_dataset(dataset, cache, lambda x: pytest.fail("encoded again"), context, progress=False) == keys
    )


def test_clear_cache(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    cache.put(["a"], torch.zeros(1, *SHAPE))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError):
        clear_cache(tmp_path / "other")
    clear_cache(tmp_path / "cache")
    assert not (tmp_path / "cache").exists() and (tmp_path / "other" / "notes.txt").exists()
    clear_cache(tmp_path / "cache")  # nothing to clear


def test_precompute_cache_for_the_cli(tmp_path, one_thread):
    write_part_dataset(tmp_path / "data", "train", 2)
    args = dict(
        data_root=tmp_path / "data",
        split="train",
        cache_dir=tmp_path / "cache",
        sam_type="vit_mini",
        sam_checkpoint="random",
        device="cpu",
        progress=False,
    )
    for encoded in (2, 0):  # the same (seeded) random SAM: the second run finds everything cached
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            summary = precompute_cache(**args)
        assert summary["images"] == 2 and summary["encoded"] == encoded and summary["cached_total"] == 2
    assert summary["context"]["precision"] == "sdpa-fp32" and summary["context"]["image_size"] == 256
