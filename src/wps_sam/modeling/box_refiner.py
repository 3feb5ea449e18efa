"""A second stage for the dense prompter's boxes: RoIAlign, a class and a box correction per candidate.

The heat maps find parts at one cell each, and a cell sees little of a part's extent, so some boxes
are off. Two-stage detectors correct them with a head that reads the pooled features inside each
candidate box (Fast R-CNN, Girshick 2015; CenterNet2, Zhou et al. 2021, on CenterNet's peaks): here
7 x 7 RoIAlign of the prompter's own feature map, two fully connected layers, a class over C parts +
"no part" and a correction of the box (Fast R-CNN's deltas: centre shifts in units of the box's
size, log scale changes).

Training, jointly with the heat maps and through the same features: the candidates of every image
are its peaks (the top ``max_parts``, detached, whatever their score) and its ground-truth boxes with
jittered copies of them (:class:`BoxJitter`); each is labelled by the ground-truth box it overlaps
most, a part when the IoU reaches :data:`POSITIVE_IOU` and "no part" otherwise
(:func:`label_candidates`), and regresses that box.

Inference: every peak takes its corrected box; its class and score stay the heat maps'. The class
head is a training signal: on the demo, the features it trains make better heat maps, while
rescoring the peaks with it (CenterNet2's geometric mean of both scores) lowered mIoU (docs/demo/NOTES.md, item 4).

RoIAlign is :func:`~.roi_pooling.roi_align_grouped`, torchvision's values from batched matrix
products: torchvision's own CPU backward runs on one thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert, box_iou

from .roi_pooling import roi_align_grouped

POOL = 7  # RoIAlign output side
POSITIVE_IOU = 0.5  # a candidate is its best-overlapping part from this IoU, else "no part"
MAX_LOG_SCALE = 2.0  # bound of the log scale change of a box side


@dataclass(frozen=True)
class JitteredBoxes:
    """Ground-truth boxes of a batch and jittered copies, as extra training candidates, grouped by
    image and padded: ``boxes`` [B, J, 4] normalised (cx, cy, w, h); ``part_index`` [B, J] the part
    of its image each was made from (-1: padding, a whole-image box)."""

    boxes: Tensor
    part_index: Tensor

    @property
    def valid(self) -> Tensor:
        """[B, J] True where a box is not padding."""
        return self.part_index >= 0


@dataclass(frozen=True)
class BoxJitter:
    """Makes :class:`JitteredBoxes`: each ground-truth box and ``copies`` copies of it whose centre
    moves by a normal step of ``centre_noise`` x its size and whose sides scale by exp(N(0,
    ``scale_noise``)) (drawn from torch's global random state, saved in a run's resume state)."""

    copies: int = 3
    centre_noise: float = 0.1
    scale_noise: float = 0.15

    @torch.no_grad()
    def __call__(self, targets: list[dict[str, Tensor]], *_: object) -> JitteredBoxes:
        """``targets``: each with normalised ``geometry`` [N_i, 4] (the teacher arguments are unused)."""
        gt = torch.cat([t["geometry"].float() for t in targets])
        device = gt.device
        counts = torch.tensor([len(t["geometry"]) for t in targets], device=device)
        copies = gt.repeat(self.copies, 1)
        centre = copies[:, :2] + torch.randn_like(copies[:, :2]) * self.centre_noise * copies[:, 2:]
        size = copies[:, 2:] * torch.exp(torch.randn_like(copies[:, 2:]) * self.scale_noise)
        flat = torch.cat([gt, torch.cat([centre.clamp(0, 1), size.clamp(1e-3, 1)], dim=1)])
        # Copy g (0: the ground truth itself) of part j of image i goes to slot g * N_i + j of image i.
        image = torch.repeat_interleave(torch.arange(len(targets), device=device), counts)
        local = torch.arange(len(gt), device=device) - (counts.cumsum(0) - counts)[image]
        copy = torch.arange(self.copies + 1, device=device).repeat_interleave(len(gt))
        image, local = image.repeat(self.copies + 1), local.repeat(self.copies + 1)
        slot = copy * counts[image] + local
        per_image = (self.copies + 1) * int(counts.max())
        boxes = torch.tensor([0.5, 0.5, 1.0, 1.0], device=device).repeat(len(targets), per_image, 1)
        part_index = torch.full((len(targets), per_image), -1, dtype=torch.long, device=device)
        boxes[image, slot] = flat
        part_index[image, slot] = local
        return JitteredBoxes(boxes=boxes, part_index=part_index)


def apply_deltas(boxes: Tensor, deltas: Tensor) -> Tensor:
    """Boxes [..., 4] (cx, cy, w, h) corrected by deltas [..., 4] (dx, dy in box sizes, log dw, dh)."""
    centre = boxes[..., :2] + deltas[..., :2] * boxes[..., 2:]
    size = boxes[..., 2:] * deltas[..., 2:].clamp(-MAX_LOG_SCALE, MAX_LOG_SCALE).exp()
    return torch.cat([centre, size], dim=-1)


@torch.no_grad()
def label_candidates(
    boxes: Tensor, image_idx: Tensor, gt: Tensor, gt_image: Tensor, gt_labels: Tensor, num_classes: int
) -> tuple[Tensor, Tensor]:
    """Each candidate box [P, 4] of image ``image_idx`` [P] against the ground truth of its image
    (``gt`` [N, 4], ``gt_image`` [N], ``gt_labels`` [N]): the class of its best-overlapping part when
    their IoU reaches :data:`POSITIVE_IOU`, else ``num_classes`` ("no part"); and the index of that
    part [P] (meaningful where the label is a part)."""
    labels = torch.full((len(boxes),), num_classes, dtype=torch.long, device=boxes.device)
    best_part = torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
    if len(gt) == 0 or len(boxes) == 0:
        return labels, best_part
    iou = box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(gt, "cxcywh", "xyxy"))
    iou = torch.where(image_idx[:, None] == gt_image[None], iou, torch.full_like(iou, -1.0))
    best, best_part = iou.max(1)
    labels = torch.where(best >= POSITIVE_IOU, gt_labels[best_part], labels)
    return labels, best_part


class BoxRefiner(nn.Module):
    """Class and box correction of candidate boxes from a feature map.

    Args:
        width: channels of the feature map.
        num_classes: C part classes (the class head has C + 1 outputs, "no part" last).
        hidden: width of the two fully connected layers.
    """

    def __init__(self, width: int, num_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(width * POOL * POOL + 2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.class_head = nn.Linear(hidden, num_classes + 1)
        self.delta_head = nn.Linear(hidden, 4)
        nn.init.zeros_(self.delta_head.weight)  # starts as the identity on the boxes
        nn.init.zeros_(self.delta_head.bias)

    def forward(self, features: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """``features`` [B, W, h, w]; ``boxes`` [B, K, 4] normalised (cx, cy, w, h) on their image ->
        class logits [B, K, C + 1] and corrected boxes [B, K, 4]. The pooled features go in with the
        box's log size in cells."""
        h, w = features.shape[-2:]
        scale = boxes.new_tensor([w, h, w, h]).float()
        # Non-finite boxes (a diverged prompter, which the training step then reports) would make
        # non-finite interpolation weights: they pool the corner cell instead.
        xyxy = (box_convert(boxes.float(), "cxcywh", "xyxy") * scale).nan_to_num(0.0, posinf=0.0, neginf=0.0)
        pooled = roi_align_grouped(features.float(), xyxy, POOL, sampling_ratio=2)
        size = (boxes[..., 2:].float() * scale[2:]).nan_to_num(1.0, posinf=1.0, neginf=1.0)
        log_size = torch.log(size.clamp(min=1e-3))
        hidden = self.mlp(torch.cat([pooled.flatten(2), log_size], dim=-1))
        return self.class_head(hidden), apply_deltas(boxes.float(), self.delta_head(hidden))
