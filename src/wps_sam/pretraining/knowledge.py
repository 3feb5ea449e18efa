"""What the tiny SAM's encoder knows about the world it will see: image-level object labels.

Real SAM's ViT starts from MAE pre-training on ImageNet, the images PartImageNet is cut from. The
tiny SAM's counterpart: scenes of the ToyParts world drawn from a split of their own (``"pretrain"``,
so never an image of any demo split, whatever the seed), each labelled only with *which
super-categories of object* it shows (multi-label, like an ImageNet class per object). No part
label, part box or part mask is ever read: the scene's label map is used only to tell which objects
are visible at all.

The encoder learns it through a small head that is not part of SAM (like MAE's decoder, it is left
behind): a 1x1 convolution scores every embedding cell for every super-category and an image's
score is the mean of its cells' mean and max, so that each cell of an object's embedding learns to
say what the object is.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ..synthetic.toyparts import SUPERCATEGORIES, ToyPartsConfig, render_scene

PRETRAIN_SPLIT = "pretrain"
# An object counts as shown when this share of the image is visibly its own.
MIN_VISIBLE_SHARE = 0.004


class ObjectLabelledScenes:
    """``scenes[i]`` -> (uint8 [S, S, 3] image, float32 [K] multi-hot super-category labels).

    Drawn with ToyParts' generator from split :data:`PRETRAIN_SPLIT` (disjoint from ``train``/``val``
    for every seed) and JPEG-compressed as ``write_toyparts`` writes them; deterministic in
    ``(seed, i)``. ``K`` = every ToyParts super-category.
    """

    def __init__(self, seed: int = 0, size: int = 256) -> None:
        self.config = ToyPartsConfig(size=size, seed=seed)
        self.names = list(SUPERCATEGORIES)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        scene = render_scene(self.config, PRETRAIN_SPLIT, index)
        visible = np.bincount(scene.labels.ravel(), minlength=len(scene.parts) + 1)[1:]
        pixels_of: dict[int, int] = {}
        category_of: dict[int, str] = {}
        for (obj, part_class), pixels in zip(scene.parts, visible):
            pixels_of[obj] = pixels_of.get(obj, 0) + int(pixels)
            category_of[obj] = part_class.split(" ")[0]  # "Car Side Mirror" -> "Car"
        shown = np.zeros(len(self.names), np.float32)
        for obj, pixels in pixels_of.items():
            if pixels >= MIN_VISIBLE_SHARE * scene.labels.size:
                shown[self.names.index(category_of[obj])] = 1.0
        buf = io.BytesIO()
        Image.fromarray(scene.image).save(buf, format="JPEG", quality=self.config.jpeg_quality)
        return np.asarray(Image.open(buf).convert("RGB")), shown


class ObjectClassifierHead(nn.Module):
    """Scores an image embedding [B, C, h, w] for K object classes: logits [B, K]."""

    def __init__(self, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, embed_dim)
        self.score = nn.Conv2d(embed_dim, num_classes, kernel_size=1)

    def forward(self, embeddings: Tensor) -> Tensor:
        cells = self.score(self.norm(embeddings.float())).flatten(2)  # [B, K, h*w]
        return 0.5 * (cells.mean(-1) + cells.amax(-1))


def knowledge_terms(head: ObjectClassifierHead, embeddings: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Multi-label BCE of ``head`` on ``embeddings`` against ``labels`` [B, K]; with the exact-match
    accuracy of the thresholded predictions."""
    logits = head(embeddings)
    loss = F.binary_cross_entropy_with_logits(logits, labels)
    with torch.no_grad():
        exact = ((logits > 0) == (labels > 0.5)).all(1).float().mean()
    return {"loss_objects": loss, "objects_exact": exact}
