"""DDP on two CPU processes (gloo): the prompter's gradients equal a one-process step on the combined
batch, and a cache built in two shards equals one built by a single process."""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from tests.data.fixtures import write_part_dataset

from wps_sam.engine import distributed as ddp_utils

WORLD = 2
PARTS_PER_IMAGE = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model():
    from wps_sam.build import build_training_criterion, build_wps_sam
    from wps_sam.config import Config, PrompterConfig, SamConfig
    from wps_sam.sam.backbones import build_sam

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sam = build_sam("vit_mini", "random")
    cfg = Config(
        sam=SamConfig("vit_mini", "random"),
        prompter=PrompterConfig(
            num_queries=4, hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1, dim_feedforward=64
        ),
    )
    return sam, build_wps_sam(cfg, 3, sam), build_training_criterion(cfg, 3)


def _batch(n: int) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """``n`` random embeddings with PARTS_PER_IMAGE parts each: equal counts make the pooled token loss
    of each rank's half the same normalisation as on the whole batch."""
    g = torch.Generator().manual_seed(123)
    embeddings = torch.randn(n, 256, 16, 16, generator=g)
    targets = []
    for _ in range(n):
        xy = torch.rand(PARTS_PER_IMAGE, 2, generator=g) * 200
        boxes = torch.cat([xy, xy + 20 + torch.rand(PARTS_PER_IMAGE, 2, generator=g) * 30], dim=1)
        targets.append({"labels": torch.randint(0, 3, (PARTS_PER_IMAGE,), generator=g), "boxes": boxes})
    return embeddings, targets


def _loss(prompter, model, criterion, embeddings, targets):
    for target, tokens in zip(targets, model.teacher_tokens(targets)):
        target["tokens"] = tokens
    return criterion.weighted_total(criterion(prompter(embeddings), targets))


def _worker(rank: int, port: int, root: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    assert ddp_utils.init_distributed() == (rank, WORLD, rank)
    sam, model, criterion = _model()
    try:
        _check_gradients(rank, model, criterion)
        _check_helpers(rank)
        _check_cache(rank, sam, Path(root))
    finally:
        ddp_utils.cleanup()


def _check_gradients(rank: int, model, criterion) -> None:
    keys = list(model.state_dict())
    embeddings, targets = _batch(2 * WORLD)
    reference = _loss(model.prompter, model, criterion, embeddings, [dict(t) for t in targets])
    reference.backward()
    expected = {n: p.grad.clone() for n, p in model.prompter.named_parameters() if p.grad is not None}
    model.prompter.zero_grad(set_to_none=True)

    wrapped = ddp_utils.wrap_prompter(model)
    assert wrapped.module is model.prompter and ddp_utils.unwrap(wrapped) is model.prompter
    wrapped_params = {id(p) for p in wrapped.parameters()}
    assert not any(id(p) in wrapped_params for p in model.image_encoder.parameters())  # SAM is not wrapped
    mine = ddp_utils.shard(range(2 * WORLD))
    assert mine == list(range(rank, 2 * WORLD, WORLD))
    _loss(wrapped, model, criterion, embeddings[mine], [dict(targets[i]) for i in mine]).backward()
    for name, p in model.prompter.named_parameters():
        if name in expected:
            torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)
    assert list(model.state_dict()) == keys  # wrapping leaves the model as it was


def _check_helpers(rank: int) -> None:
    assert ddp_utils.is_main() == (rank == 0) and ddp_utils.get_world_size() == WORLD
    assert ddp_utils.all_reduce_mean({"loss": float(rank), "acc": 1.0}) == {"loss": 0.5, "acc": 1.0}
    assert ddp_utils.broadcast_object({"from": rank}) == {"from": 0}


def _check_cache(rank: int, sam, root: Path) -> None:
    from wps_sam.cache import CacheContext, EmbeddingCache, sam_fingerprint
    from wps_sam.data.cached import ImageLoader, cache_dataset
    from wps_sam.data.coco import load_split
    from wps_sam.data.datasets import PartSegmentationDataset
    from wps_sam.data.transforms import SamTransform
    from wps_sam.sam.encoder import EncoderRunner

    dataset = PartSegmentationDataset(load_split(root / "data", "train"), SamTransform(256))
    runner = EncoderRunner(sam.image_encoder)
    context = CacheContext(sam_fingerprint(sam), 256, runner.precision)
    sharded = EmbeddingCache(root / "sharded", shard_rows=2)
    keys = cache_dataset(dataset, sharded, runner, context, batch_size=1, progress=False)
    assert len(sharded) == len(dataset)  # after the barrier every rank sees every shard
    assert {p.name[:4] for p in (root / "sharded").glob("*.npy")} == {"r000", "r001"}
    if rank == 0:
        single = EmbeddingCache(root / "single")
        assert single.build(keys, ImageLoader(dataset), runner, batch_size=1, progress=False) == len(dataset)
        assert torch.equal(sharded.get(keys), single.get(keys))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_process_gloo(tmp_path):
    write_part_dataset(tmp_path / "data", "train", 3, seed=3)
    # torch.multiprocessing.spawn's machinery with the "forkserver" start method: the server imports
    # torch, segment-anything and wps-sam once and forks both ranks from it, where "spawn" imports
    # them in each rank (most of this test's time on a small machine). Like spawn, and unlike a plain
    # fork of this multi-threaded process, the ranks start from a clean single-threaded process.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__, "wps_sam.build", "wps_sam.cache", "wps_sam.data.cached"])
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, start_method="forkserver")


def test_single_process_fallbacks():
    assert not ddp_utils.is_distributed()
    assert ddp_utils.init_distributed() == (0, 1, 0)  # no torchrun environment
    assert ddp_utils.is_main() and ddp_utils.get_rank() == 0 and ddp_utils.get_world_size() == 1
    assert ddp_utils.shard(list("abcde"), 1, 2) == ["b", "d"]
    assert ddp_utils.all_reduce_mean({"x": 2.0}) == {"x": 2.0}
    assert ddp_utils.broadcast_object(3) == 3
    ddp_utils.barrier()
    with pytest.raises(ValueError):
        ddp_utils.shard([1], 2, 2)
    with pytest.raises(RuntimeError):
        ddp_utils.wrap_prompter(torch.nn.Module())
