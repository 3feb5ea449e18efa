"""SAM's preprocessing, with boxes, points and masks moved between the two frames consistently.

Original frame: the image as read, H x W. Input frame: SAM's S x S input, the image resized so that
its longest side is S (segment-anything's ``ResizeLongestSide``), normalised with SAM's pixel
mean/std, and zero-padded at the bottom and right (``Sam.preprocess``). ``input_size`` = (h, w) is
the resized size before padding. Coordinates scale with pixel *edges*: x_in = x * w / W.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class SamTransform:
    """Resize-longest-side, normalise and pad to ``image_size``; and the inverse maps."""

    def __init__(self, image_size: int) -> None:
        self.image_size = int(image_size)
        self.pixel_mean = torch.tensor(PIXEL_MEAN, dtype=torch.float32).view(3, 1, 1)
        self.pixel_std = torch.tensor(PIXEL_STD, dtype=torch.float32).view(3, 1, 1)

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the resized image, as ``ResizeLongestSide.get_preprocess_shape``.

        Sides are kept at least 1 pixel, where segment-anything would produce an empty image.
        """
        old_h, old_w = original_size
        scale = self.image_size * 1.0 / max(old_h, old_w)
        return max(1, int(old_h * scale + 0.5)), max(1, int(old_w * scale + 0.5))

    def _scale(self, original_size: tuple[int, int]) -> tuple[float, float]:
        """(sx, sy): input-frame pixels per original pixel along X and Y."""
        h, w = self.input_size(original_size)
        return w / original_size[1], h / original_size[0]

    def apply_image(self, image: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] RGB -> float32 [3, S, S], equal to ``Sam.preprocess`` of SAM's resized image.

        Resizing is PIL's bilinear filter, as ``ResizeLongestSide.apply_image`` (via torchvision) does.
        """
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
        h, w = self.input_size(image.shape[:2])
        resized = np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        # Normalise in place inside a zero canvas: the same float32 ops as Sam.preprocess, one buffer.
        out = torch.zeros(3, self.image_size, self.image_size)
        view = out[:, :h, :w]
        view.copy_(torch.from_numpy(resized).permute(2, 0, 1))
        view.sub_(self.pixel_mean).div_(self.pixel_std)
        return out

    def apply_points(self, points: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """[N, 2] (X, Y) original frame -> [N, 2] float32 input frame."""
        sx, sy = self._scale(original_size)
        return (np.asarray(points, dtype=np.float64).reshape(-1, 2) * [sx, sy]).astype(np.float32)

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """[N, 4] XYXY original frame -> [N, 4] float32 XYXY input frame."""
        return self.apply_points(np.asarray(boxes).reshape(-1, 2), original_size).reshape(-1, 4)

    def points_to_original(self, points: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """[N, 2] (X, Y) input frame -> [N, 2] float32 original frame."""
        sx, sy = self._scale(original_size)
        return (np.asarray(points, dtype=np.float64).reshape(-1, 2) / [sx, sy]).astype(np.float32)

    def boxes_to_original(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """[N, 4] XYXY input frame -> [N, 4] float32 XYXY original frame."""
        return self.points_to_original(np.asarray(boxes).reshape(-1, 2), original_size).reshape(-1, 4)

    def apply_masks(self, masks: np.ndarray, original_size: tuple[int, int]) -> torch.Tensor:
        """bool [N, H, W] original frame -> bool [N, S, S] input frame (nearest, padded with False).

        "nearest-exact" samples at pixel centres, the same geometry as the box and point maps.
        """
        masks_t = torch.as_tensor(np.asarray(masks, dtype=bool))
        if masks_t.ndim != 3 or tuple(masks_t.shape[1:]) != tuple(original_size):
            raise ValueError(
                f"expected masks [N, {original_size[0]}, {original_size[1]}], got {tuple(masks_t.shape)}"
            )
        h, w = self.input_size(original_size)
        out = torch.zeros(masks_t.shape[0], self.image_size, self.image_size, dtype=torch.bool)
        if masks_t.shape[0]:
            resized = F.interpolate(masks_t[:, None].to(torch.uint8), (h, w), mode="nearest-exact")
            out[:, :h, :w] = resized[:, 0].bool()
        return out

    def masks_to_original(self, masks: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """[N, S, S] input frame -> [N, H, W] original frame: crop the padding, resize back.

        Float masks (probabilities or logits) are resized bilinearly in float32, as
        ``Sam.postprocess_masks`` does, and come back float32; bool masks resize nearest and stay bool.
        """
        h, w = self.input_size(original_size)
        cropped = masks[..., :h, :w].reshape(-1, 1, h, w)
        if masks.dtype == torch.bool:
            out = F.interpolate(cropped.to(torch.uint8), original_size, mode="nearest-exact").bool()
        else:
            out = F.interpolate(cropped.float(), original_size, mode="bilinear", align_corners=False)
        return out[:, 0]
