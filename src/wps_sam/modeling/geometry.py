"""Part geometry as the prompter predicts it: boxes or points, normalised to SAM's input frame.

A box is ``(cx, cy, w, h)`` and a point ``(x, y)``, each in [0, 1] of the S x S input frame (DETR's
box convention); SAM's prompt encoder takes boxes XYXY and points (X, Y) in pixels of that frame.
The helpers here convert between the two and embed geometry as positions for decoder queries
(DAB-DETR's sine embedding, Liu et al. 2022).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import box_convert

GEOMETRY_DIMS = {"box": 4, "point": 2}


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """logit(x), with x clamped to [eps, 1 - eps] (Deformable DETR)."""
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


def normalise(prompts: Tensor, kind: str, image_size: int) -> Tensor:
    """Pixels of the input frame (boxes [N, 4] XYXY or points [N, 2] (X, Y)) -> [0, 1] geometry."""
    if kind == "box":
        return box_convert(prompts, "xyxy", "cxcywh") / image_size
    return prompts / image_size


def to_pixels(geometry: Tensor, kind: str, image_size: int) -> Tensor:
    """The inverse of :func:`normalise`: [..., 4] boxes -> XYXY pixels, [..., 2] points -> (X, Y)."""
    if kind == "box":
        return box_convert(geometry * image_size, "cxcywh", "xyxy")
    return geometry * image_size


def sine_embedding(geometry: Tensor, dim_per_coordinate: int, temperature: float = 10000.0) -> Tensor:
    """[..., G] geometry in [0, 1] -> [..., G * dim_per_coordinate]: per coordinate, sines and
    cosines of 2 pi x at ``dim_per_coordinate / 2`` geometric frequencies (DAB-DETR)."""
    half = dim_per_coordinate // 2
    freqs = temperature ** (torch.arange(half, device=geometry.device, dtype=torch.float32) / half)
    angles = geometry.float()[..., None] * (2 * math.pi) / freqs  # [..., G, half]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)
