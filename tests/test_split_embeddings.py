"""Held-out embeddings through the embedding cache: `wps-sam eval` and the trainer's validation encode
a split once, then read it back, with the scores of encoding it at every call."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from tests.data.fixtures import write_part_dataset
from tests.test_end_to_end import train_command

from wps_sam.build import build_wps_sam
from wps_sam.cache import EmbeddingCache, sam_fingerprint
from wps_sam.cli import main
from wps_sam.config import load_config
from wps_sam.data.cached import split_embeddings
from wps_sam.data.coco import load_split
from wps_sam.data.datasets import PartSegmentationDataset
from wps_sam.data.transforms import SamTransform
from wps_sam.evaluation.evaluator import evaluate
from wps_sam.modeling.wps_sam import WPSSAM
from wps_sam.recipes import DEFAULT_RECIPE

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    write_part_dataset(root, "train", 6, size_range=(40, 72), seed=1)
    write_part_dataset(root, "val", 3, size_range=(40, 72), seed=2)  # not square: padded frames
    return root


def _model(mini_sam, num_classes, cache_dir):
    cfg = load_config(
        overrides=[
            "train.recipe=dense",
            "prompter.dense_width=16",
            "inference.flip_test=true",
            f"train.cache_dir={cache_dir}",
        ]
    )
    model = build_wps_sam(cfg, num_classes, mini_sam).eval()
    with torch.no_grad():
        model.prompter.heatmap[-1].bias.fill_(2.0)  # confident peaks: parts to decode
    return model, cfg


def test_cached_split_scores_as_encoding_it(mini_sam, data_root, tmp_path):
    split = load_split(data_root, "val")
    model, cfg = _model(mini_sam, split.num_classes, tmp_path / "cache")
    rows, mirrored = split_embeddings(
        split, model.image_encoder, sam_fingerprint(mini_sam), cfg.train, CPU, True, progress=False
    )
    dataset = PartSegmentationDataset(split, SamTransform(model.image_encoder.img_size))
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    with torch.no_grad():
        own, own_mirrored = model.embed(images), model.embed(images, mirrored=True)
    everything = list(range(len(split.images)))
    # The cache stores float16: the rows are the encoder's own embeddings of each image and of its
    # mirrored input frame (padding included, as test-time mirroring reads it), rounded.
    assert torch.equal(rows[everything], own.half())
    assert torch.equal(mirrored[everything], own_mirrored.half())
    assert not torch.equal(mirrored[everything], own.half())
    encoded = evaluate(
        model, split, cfg, CPU, progress=False, embeddings=own.half(), mirrored_embeddings=own_mirrored.half()
    )
    cached = evaluate(model, split, cfg, CPU, progress=False, embeddings=rows, mirrored_embeddings=mirrored)
    assert torch.tensor(cached["confusion"])[:, 1:].sum() > 0  # parts were predicted
    assert cached["confusion"] == encoded["confusion"]


def test_split_embeddings_encode_each_image_once(mini_sam, data_root, tmp_path, monkeypatch):
    split = load_split(data_root, "val")
    model, cfg = _model(mini_sam, split.num_classes, tmp_path / "cache")
    fingerprint = sam_fingerprint(mini_sam)
    split_embeddings(split, model.image_encoder, fingerprint, cfg.train, CPU, True, progress=False)
    assert len(EmbeddingCache(tmp_path / "cache")) == 2 * len(split.images)  # images and mirrored frames
    shards = sorted((tmp_path / "cache").glob("*.npy"))
    rows, mirrored = split_embeddings(split, model.image_encoder, fingerprint, cfg.train, CPU, True, False)
    assert sorted((tmp_path / "cache").glob("*.npy")) == shards  # nothing encoded the second time
    assert len(rows) == len(mirrored) == len(split.images)
    rows, none = split_embeddings(split, model.image_encoder, fingerprint, cfg.train, CPU, False, False)
    assert none is None and len(rows) == len(split.images)


def test_validation_and_eval_read_the_cache(sam_file, data_root, tmp_path, monkeypatch):
    """Training, validation and `wps-sam eval` never run the encoder outside the cache's build; with
    ``--no-cache`` eval encodes the split itself."""
    calls = []
    embed = WPSSAM.embed

    def counted(self, images, mirrored=False):
        calls.append(len(images))
        return embed(self, images, mirrored)

    monkeypatch.setattr(WPSSAM, "embed", counted)
    run = tmp_path / "run"
    train = train_command(data_root, run, sam_file, DEFAULT_RECIPE, 4, "--batch-size", "2")
    assert main([*train, "prompter.dense_width=16", f"train.cache_dir={tmp_path / 'cache'}"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("val_miou" in r for r in records)  # validated
    assert calls == []
    evaluation = ["eval", str(run), "--data", str(data_root), "--no-progress"]
    assert main(evaluation) == 0
    cached = json.loads((run / "eval-val.json").read_text())
    assert calls == []
    assert main([*evaluation, "--no-cache"]) == 0
    assert sum(calls) == 2 * len(load_split(data_root, "val").images)  # each image and its mirrored frame
    encoded = json.loads((run / "eval-val.json").read_text())
    assert cached["images"] == encoded["images"] == 3
    assert abs(cached["miou"] - encoded["miou"]) < 0.05  # float16 rows against float32 embeddings


def test_eval_of_a_moved_run_or_with_an_unwritable_cache(sam_file, data_root, tmp_path, monkeypatch, caplog):
    """A run whose cache folder is gone (trained elsewhere) evaluates through the default folder, and
    not by making the old one again; a cache folder that cannot be written leaves eval to encode."""
    run = tmp_path / "run"
    gone = tmp_path / "elsewhere" / "cache"
    train = train_command(data_root, run, sam_file, DEFAULT_RECIPE, 2, "--batch-size", "2")
    assert main([*train, "prompter.dense_width=16", f"train.cache_dir={gone}", "train.validate=false"]) == 0
    shutil.rmtree(gone)
    default = tmp_path / "default-cache"
    monkeypatch.setenv("WPS_SAM_CACHE", str(default))
    evaluation = ["eval", str(run), "--data", str(data_root), "--no-progress"]
    assert main(evaluation) == 0
    assert not gone.exists() and len(EmbeddingCache(default)) == 2 * 3  # held-out images, mirrored frames
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("WPS_SAM_CACHE", str(blocked / "cache"))
    with caplog.at_level("WARNING", logger="wps_sam"):
        assert main(evaluation) == 0
    assert "not writable" in caplog.text
    assert json.loads((run / "eval-val.json").read_text())["images"] == 3
