"""bf16 autocast on the CPU (train.cpu_amp): on only when asked for, the weights stay float32."""

from __future__ import annotations

import logging

import pytest
import torch
from tests.data.fixtures import write_part_dataset

from wps_sam.cache import CacheContext, EmbeddingCache, sam_fingerprint
from wps_sam.config import load_config
from wps_sam.data.cached import dataset_keys
from wps_sam.data.coco import load_split
from wps_sam.data.datasets import PartSegmentationDataset
from wps_sam.data.transforms import SamTransform
from wps_sam.engine import device as device_module
from wps_sam.engine import trainer
from wps_sam.engine.loop import autocast, encoder_autocast
from wps_sam.predictor import PartPredictor
from wps_sam.sam.backbones import build_sam
from wps_sam.sam.encoder import accelerate_encoder, relative_error

CPU = torch.device("cpu")


def _conv_dtype(context) -> torch.dtype:
    conv = torch.nn.Conv2d(4, 4, 3)
    with context:
        return conv(torch.randn(1, 4, 8, 8)).dtype


def test_cpu_autocast_only_when_both_switches_are_on():
    assert _conv_dtype(autocast(CPU, True)) == torch.float32  # train.amp alone: CUDA only
    assert _conv_dtype(autocast(CPU, False, cpu=True)) == torch.float32
    assert _conv_dtype(autocast(CPU, True, cpu=True)) == torch.bfloat16


@pytest.mark.parametrize(
    ("cpu_amp", "native", "device", "warned"),
    [(True, False, "cpu", True), (True, True, "cpu", False), (False, False, "cpu", False),
     (True, False, "cuda", False)],
)  # fmt: skip
def test_emulated_bf16_is_a_warning(monkeypatch, caplog, cpu_amp, native, device, warned):
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: native)
    cfg = load_config(overrides=[f"train.cpu_amp={cpu_amp}"])
    with caplog.at_level(logging.WARNING):
        assert trainer.warn_if_bf16_is_emulated(cfg, torch.device(device)) is warned
    assert any("no native bf16" in r.getMessage() for r in caplog.records) is warned


@pytest.mark.parametrize(
    ("amp", "cpu_amp", "native", "device", "expected"),
    [(True, True, True, "cpu", torch.bfloat16), (True, True, False, "cpu", None),
     (True, False, True, "cpu", None), (False, True, True, "cpu", None),
     (True, False, False, "cuda", torch.bfloat16), (False, False, False, "cuda", None)],
)  # fmt: skip
def test_the_encoder_runs_bf16_on_the_cpu_only_where_native(
    monkeypatch, amp, cpu_amp, native, device, expected
):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: native)
    assert device_module.encoder_dtype(torch.device(device), amp, cpu_amp) == expected
    if device == "cpu":
        assert _conv_dtype(encoder_autocast(CPU, amp, cpu_amp)) == (expected or torch.float32)


def test_training_caches_the_embeddings_evaluation_computes(monkeypatch, tmp_path, sam_file):
    """train.cpu_amp on a (patched) native-bf16 CPU: the trainer's cache holds bf16-encoded embeddings
    under the bf16 key, and they are what evaluation's and prediction's encoder_autocast computes."""
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: True)
    write_part_dataset(tmp_path / "data", "train", 2, size_range=(24, 40), seed=5)
    cfg = load_config(
        overrides=[
            f"data.root={tmp_path / 'data'}", "sam.type=vit_mini", f"sam.checkpoint={sam_file}",
            "train.cpu_amp=true", "train.max_steps=1", "train.batch_size=2", "train.validate=false",
            f"train.cache_dir={tmp_path / 'cache'}", "prompter.dense_width=16",
        ]
    )  # fmt: skip
    trainer.train(cfg, tmp_path / "run", progress=False)

    predictor = PartPredictor.from_run(tmp_path / "run", "cpu", str(sam_file))
    sam = predictor.model
    dataset = PartSegmentationDataset(load_split(tmp_path / "data", "train"), SamTransform(sam.image_size))
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    cache = EmbeddingCache(tmp_path / "cache")
    bf16_keys, fp32_keys = (
        dataset_keys(
            dataset,
            CacheContext(sam_fingerprint(build_sam("vit_mini", str(sam_file))), sam.image_size, precision),
        )
        for precision in ("sdpa-bf16", "sdpa-fp32")
    )
    assert not cache.missing(bf16_keys) and cache.missing(fp32_keys) == fp32_keys
    accelerate_encoder(sam.image_encoder)  # as the trainer's encoder runner does
    float32 = sam.image_encoder(images)
    computed = predictor.embed(images)
    assert relative_error(cache.get(bf16_keys).float(), computed) < 2e-3  # float16 storage
    assert relative_error(computed, float32) > 1e-4  # bf16, not float32
