"""The evaluator on embeddings it is given: the same scores as when it encodes the images itself."""

from __future__ import annotations

import pytest
import torch
from tests.data.fixtures import write_part_dataset

from wps_sam.build import build_wps_sam
from wps_sam.config import load_config
from wps_sam.data.coco import load_split
from wps_sam.data.datasets import PartSegmentationDataset
from wps_sam.data.transforms import SamTransform
from wps_sam.evaluation.evaluator import evaluate


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    write_part_dataset(root, "val", 3, size_range=(40, 72), seed=2)
    return load_split(root, "val")


def _model(mini_sam, index):
    cfg = load_config(overrides=["train.recipe=dense", "prompter.dense_width=16", "inference.flip_test=true"])
    model = build_wps_sam(cfg, index.num_classes, mini_sam).eval()
    with torch.no_grad():
        model.prompter.heatmap[-1].bias.fill_(2.0)  # confident peaks: parts to decode
    return model, cfg


def _embed(model, index) -> tuple[torch.Tensor, torch.Tensor]:
    """What the evaluator computes: each image's embedding and its mirrored frame's, in order."""
    dataset = PartSegmentationDataset(index, SamTransform(model.image_encoder.img_size))
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    with torch.no_grad():
        return model.embed(images), model.embed(images, mirrored=True)


def test_given_embeddings_score_as_the_evaluators_own(mini_sam, split):
    model, cfg = _model(mini_sam, split)
    device = torch.device("cpu")
    own = evaluate(model, split, cfg, device, batch_size=2, progress=False)
    embeddings, mirrored = _embed(model, split)
    given = evaluate(
        model,
        split,
        cfg,
        device,
        batch_size=2,
        progress=False,
        embeddings=embeddings,
        mirrored_embeddings=mirrored,
    )
    confusion = torch.tensor(own["confusion"])
    assert confusion[:, 1:].sum() > 0  # parts were predicted: the comparison is not of empty maps
    assert given["confusion"] == own["confusion"]
    # The given rows are what the prompter reads: other embeddings give other maps.
    other = evaluate(
        model, split, cfg, device, batch_size=2, progress=False,
        embeddings=embeddings.flip(-1), mirrored_embeddings=mirrored.flip(-1),
    )  # fmt: skip
    assert other["confusion"] != own["confusion"]


def test_given_embeddings_must_be_one_per_image_and_mirrored_with_flip_test(mini_sam, split):
    model, cfg = _model(mini_sam, split)
    embeddings, mirrored = _embed(model, split)
    device = torch.device("cpu")
    with pytest.raises(ValueError, match="one per image"):
        evaluate(
            model, split, cfg, device, progress=False, embeddings=embeddings[:2], mirrored_embeddings=mirrored
        )
    with pytest.raises(ValueError, match="mirrored frames"):
        evaluate(model, split, cfg, device, progress=False, embeddings=embeddings)
    with pytest.raises(ValueError, match="must match"):
        evaluate(
            model,
            split,
            cfg,
            device,
            progress=False,
            embeddings=embeddings,
            mirrored_embeddings=mirrored[..., :4],
        )
