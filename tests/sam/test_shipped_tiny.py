"""The tiny SAM that ships in the package: strict load, recorded digest, Meta's SamPredictor on it."""

from __future__ import annotations

import numpy as np
import pytest
from segment_anything import SamPredictor
from segment_anything.modeling import Sam

from wps_sam.hashing import sha256_of
from wps_sam.sam.backbones import SHIPPED_TINY_SHA256, build_sam, shipped_tiny_weights
from wps_sam.sam.conv_encoder import ConvImageEncoder


@pytest.fixture(scope="module")
def shipped() -> Sam:
    return build_sam("tiny")


def test_shipped_weights_load_strictly_with_the_recorded_digest(shipped):
    path = shipped_tiny_weights()
    assert sha256_of(path) == SHIPPED_TINY_SHA256 == shipped.checkpoint_sha256
    assert path.stat().st_size <= 25 * 1024 * 1024
    assert isinstance(shipped, Sam) and isinstance(shipped.image_encoder, ConvImageEncoder)
    assert shipped.image_encoder.img_size == 256 and shipped.prompt_encoder.image_embedding_size == (32, 32)
    assert not any(p.requires_grad for p in shipped.parameters())


def _disk_scene() -> tuple[np.ndarray, np.ndarray]:
    """A striped disk on a textured background, 200 x 300 (not square: the predictor pads)."""
    yy, xx = np.mgrid[0:200, 0:300]
    disk = (xx - 180) ** 2 + (yy - 90) ** 2 <= 50**2
    image = np.zeros((200, 300, 3), np.uint8)
    image[...] = (40, 90, 160) + ((xx // 9 + yy // 9) % 2)[..., None] * 25
    image[disk] = (220, 180, 40)
    image[disk & ((xx // 6) % 2 == 0)] = (200, 60, 40)
    return image, disk


def test_segment_anythings_predictor_runs_the_shipped_model(shipped):
    image, disk = _disk_scene()
    predictor = SamPredictor(shipped)
    predictor.set_image(image)
    assert predictor.features.shape == (1, 256, 32, 32)
    masks, scores, low = predictor.predict(box=np.array([130, 40, 230, 140]), multimask_output=False)
    assert masks.shape == (1, 200, 300) and low.shape == (1, 128, 128)
    iou = (masks[0] & disk).sum() / (masks[0] | disk).sum()
    assert iou > 0.8, iou
    masks, scores, _ = predictor.predict(point_coords=np.array([[180, 90]]), point_labels=np.array([1]))
    best = masks[scores.argmax()]
    assert (best & disk).sum() / (best | disk).sum() > 0.6
