"""The batches of the tiny SAM's pre-training: one per step, a pure function of (config, step).

Step ``s`` draws scenes ``s * B ... s * B + B - 1`` of the generic-shape world
(:class:`~wps_sam.synthetic.scenes.SyntheticShapes`) with their prompts and targets, and images of the
ToyParts world with their object labels (:class:`.knowledge.ObjectLabelledScenes`). Scenes are drawn
at 256 px; steps before ``low_res_steps`` see them downsampled to ``low_res`` px (the curriculum
from low to high resolution). Because a batch depends on nothing but the step, a resumed run sees
exactly the batches an uninterrupted one would, and a loader worker can draw them ahead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from ..synthetic.scenes import ShapesConfig, SyntheticShapes
from .knowledge import ObjectLabelledScenes
from .prompts import PromptConfig, sample_prompts

# Scenes are drawn at this size; the model's full-resolution input.
SCENE_SIZE = 256


@dataclass(frozen=True)
class BatchConfig:
    """What one step's batch holds."""

    steps: int = 12000
    batch_size: int = 8  # generic-shape scenes with masks
    prompts_per_image: int = 4  # targets prompted per scene at full resolution
    low_res: int = 128
    low_res_steps: int = 0  # the first steps see scenes at low_res px
    low_res_prompts_per_image: int = 8  # (the decoder is ~8x cheaper there)
    object_batch_size: int = 8  # ToyParts-world images with object labels (0: none)
    seed: int = 0
    object_seed: int = 0
    prompts: PromptConfig = field(default_factory=PromptConfig)
    shapes: ShapesConfig = field(default_factory=lambda: ShapesConfig(size=SCENE_SIZE))


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR, reducing_gap=None))


class PretrainBatches(Dataset):
    """``batches[step]`` -> the batch of ``step`` (see the module docstring):

    * ``images`` uint8 [B, S, S, 3] (S: the step's resolution);
    * ``is_box`` bool [N], ``box`` float [N, 4], ``coords`` float [N, P, 2], ``labels`` int [N, P]:
      the N = B x prompts-per-image prompts in the S px frame, image-major;
    * ``targets`` float16 [N, S/2, S/2]: each prompt's target mask, area-averaged to the decoder's
      low resolution (its masks have 4 cells per embedding cell, the embedding 1 per 8 px);
    * ``object_images`` uint8 [Bo, S, S, 3] and ``object_labels`` float [Bo, K].
    """

    def __init__(self, cfg: BatchConfig) -> None:
        if cfg.shapes.size != SCENE_SIZE:
            raise ValueError(f"scenes are drawn at {SCENE_SIZE} px, got shapes.size {cfg.shapes.size}")
        self.cfg = cfg
        self.shapes = SyntheticShapes(seed=cfg.seed, cfg=cfg.shapes)
        self.objects = ObjectLabelledScenes(seed=cfg.object_seed, size=SCENE_SIZE)

    def __len__(self) -> int:
        return self.cfg.steps

    def resolution(self, step: int) -> int:
        return self.cfg.low_res if step < self.cfg.low_res_steps else SCENE_SIZE

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        size = self.resolution(step)
        per_image = cfg.low_res_prompts_per_image if size < SCENE_SIZE else cfg.prompts_per_image
        rng = np.random.default_rng((cfg.seed, step, 1))
        n_points = 1 if rng.random() >= cfg.prompts.p_multi_point else int(rng.integers(2, 4))
        images, drawn, targets = [], [], []
        for b in range(cfg.batch_size):
            image, masks = self.shapes[step * cfg.batch_size + b]
            full = torch.from_numpy(masks).float()[:, None]  # [M, 1, 256, 256]
            soft = F.adaptive_avg_pool2d(full, size)[:, 0] if size < SCENE_SIZE else full[:, 0]
            binary = (soft >= 0.5).numpy()
            keep = binary.reshape(len(binary), -1).any(1)  # a thin mask may vanish at low resolution
            prompts = sample_prompts(rng, binary[keep], per_image, cfg.prompts, n_points)
            chosen = np.flatnonzero(keep)[prompts["target"]]
            targets.append(F.adaptive_avg_pool2d(full[chosen], size // 2)[:, 0].half())
            images.append(_resize(image, size))
            drawn.append(prompts)
        batch = {
            "images": torch.from_numpy(np.stack(images)),
            "targets": torch.cat(targets),
            **{
                k: torch.from_numpy(np.concatenate([p[k] for p in drawn]))
                for k in ("is_box", "box", "coords", "labels")
            },
        }
        objects = [self.objects[step * cfg.object_batch_size + b] for b in range(cfg.object_batch_size)]
        batch["object_images"] = torch.from_numpy(
            np.stack([_resize(im, size) for im, _ in objects])
            if objects
            else np.zeros((0, size, size, 3), np.uint8)
        )
        batch["object_labels"] = torch.from_numpy(
            np.stack([lab for _, lab in objects])
            if objects
            else np.zeros((0, len(self.objects.names)), np.float32)
        )
        return batch
