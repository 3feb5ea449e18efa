"""The official WPS-SAM evaluation, reproduced exactly, quirks included.

Use it only to compare with the paper's tables; :mod:`wps_sam.evaluation.metrics` is the standard
protocol. Source: ``validate`` in ``eval.py`` / ``train.py`` of xjwu1024/WPS-SAM, with
``dataset.py`` (ground truth) and ``model_reproductive.py`` (kept queries), and
``segmentation_models_pytorch.metrics`` (smp) ``get_stats`` / ``iou_score`` / ``accuracy``.

What the official code computes, per image, in SAM's padded square input frame [S, S]:

1. Ground truth: only annotations whose first polygon has more than two points
   (``len(ann["segmentation"][0]) > 4``) take part (``gt_eligible`` here); images without
   annotations are skipped (here: images without an *eligible* one).
2. Kept queries: argmax of the logits is not "no part" (see ``postprocess.select_queries``). If an
   image has no kept query it adds *one* entry of 0 to both means (not one per category) and counts
   as a null image.
3. Otherwise, for each ground-truth category ``c`` of the image:

   - if no kept query predicts ``c``: one entry of 0 to both means ("failed part");
   - else the sigmoid probabilities of all kept queries of class ``c`` are *summed*
     (``pred_sum``), the ground-truth masks of ``c`` are summed (``gt_sum``), and
     ``smp.metrics.get_stats(pred_sum, gt_sum.int(), mode="binary", threshold=0.5)`` binarises
     *both* with ``>= 0.5`` (so the prediction is ``pred_sum >= 0.5``, probabilities that cross 0.5
     only together count, and the target is the union of the masks). Predicted categories absent
     from the ground truth are ignored.

4. IoU and accuracy of that entry come from ``iou_score`` / ``accuracy`` with
   ``reduction="micro-imagewise"`` on these 2-D [S, S] tensors. smp expects [N, C, ...]; its
   ``_get_stats_multilabel`` unpacks ``batch_size, num_classes, *dims = target.shape``, so a 2-D
   mask is read as S "images" (the rows) of S "classes" (the pixels of a row). "micro-imagewise"
   then sums TP/FP/FN/TN over each *row*, computes the metric per row, replaces 0/0 with
   ``zero_division=1.0`` (the default of ``iou_score`` and ``accuracy``), and averages the S rows:

   - ``IoU = mean over rows y of IoU_y``, ``IoU_y = TP_y / (TP_y + FP_y + FN_y)``, and a row where
     neither prediction nor ground truth has a pixel scores **1** (all padding rows, and every
     row the part does not reach). This inflates IoU well above the whole-image value.
   - ``acc = mean over rows of (TP_y + TN_y) / S``; every row has S pixels, so this *equals* the
     whole-image accuracy ``(TP + TN) / S^2``, padding pixels counting as true negatives.

5. ``mIoU`` / ``mACC`` = mean over all entries (an ``AverageMeter`` with n=1 per entry).

``iou_reduction="smp_rows"`` (the default) computes exactly that. ``iou_reduction="image"`` is the
whole-image reading of the protocol, ``IoU = TP / (TP + FP + FN)`` over the square (0/0 -> 1, as
smp would give for one image); everything else is the same, and mACC does not change. Because the
row mean is invariant to permuting rows and to shifting pixels within a row, our top-left padding
gives the same numbers as the official centred padding.

Not reproduced (they are accidents of the official run, not of the protocol):
``model_reproductive.Model.forward`` appends masks only for images with a kept query, so in
``validate`` the ``zip`` over the batch pairs later images with the wrong predictions and drops the
last ones, and the ``len(pred_masks) == 0`` branch is never reached; each DDP rank averaged only its
own shard and the printed numbers are rank 0's. Here the null-image rule of item 2 is applied as
written, and :meth:`PaperProtocol.merge` combines the shards.

Values are computed in float64; the official float32 arithmetic may differ in the last digits.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

IouReduction = Literal["smp_rows", "image"]


class PaperProtocol:
    """Accumulates the official WPS-SAM mIoU / mACC over a split (see the module docstring).

    Args:
        iou_reduction: "smp_rows" (official: per-row IoU averaged over the rows of the square,
            empty rows = 1) or "image" (IoU over the whole square).
        threshold: binarisation threshold of the summed probabilities and of the ground truth
            (``>=``, as smp does).
    """

    def __init__(self, iou_reduction: IouReduction = "smp_rows", threshold: float = 0.5) -> None:
        if iou_reduction not in ("smp_rows", "image"):
            raise ValueError(f"iou_reduction must be 'smp_rows' or 'image', got {iou_reduction!r}")
        self.iou_reduction = iou_reduction
        self.threshold = threshold
        self.iou_sum = 0.0
        self.acc_sum = 0.0
        self.entries = 0
        self.null_images = 0
        self.failed_parts = 0
        self.matched_parts = 0

    @torch.no_grad()
    def update(
        self,
        pred_probs: Tensor,
        pred_labels: Tensor,
        gt_masks: Tensor,
        gt_labels: Tensor,
        gt_eligible: Tensor,
    ) -> None:
        """Add one image.

        Args:
            pred_probs: [K, S, S] sigmoid mask probabilities of the kept queries, input frame
                (padded square).
            pred_labels: LongTensor [K], the kept queries' classes in 0..C-1.
            gt_masks: BoolTensor [N, S, S] ground-truth part masks, input frame (0/1 floats are
                read as the official code does: summed per category, truncated to int, ``>= 0.5``).
            gt_labels: LongTensor [N], their classes in 0..C-1.
            gt_eligible: BoolTensor [N], True for annotations that take part (polygon with more
                than two points in the official data loader).
        """
        if gt_masks.ndim != 3 or pred_probs.ndim != 3:
            raise ValueError(
                f"pred_probs {tuple(pred_probs.shape)} and gt_masks {tuple(gt_masks.shape)} must be [K|N, S, S]"
            )
        if pred_probs.shape[0] > 0 and pred_probs.shape[1:] != gt_masks.shape[1:]:
            raise ValueError(
                f"pred_probs {tuple(pred_probs.shape)} and gt_masks {tuple(gt_masks.shape)} differ"
            )
        if pred_labels.shape != pred_probs.shape[:1]:
            raise ValueError(f"pred_labels must be [{pred_probs.shape[0]}], got {tuple(pred_labels.shape)}")
        n = gt_masks.shape[0]
        if gt_labels.shape != (n,) or gt_eligible.shape != (n,):
            raise ValueError(
                f"gt_labels {tuple(gt_labels.shape)} and gt_eligible {tuple(gt_eligible.shape)} must be [{n}]"
            )

        eligible = gt_eligible.bool()
        gt_masks, gt_labels = gt_masks[eligible], gt_labels[eligible]
        if gt_masks.shape[0] == 0:
            return  # the official data set has no such image
        if pred_probs.shape[0] == 0:
            self.null_images += 1
            self.entries += 1  # one zero entry for the whole image
            return

        pred_labels = pred_labels.to(pred_probs.device)
        gt_masks, gt_labels = gt_masks.to(pred_probs.device), gt_labels.to(pred_probs.device)
        for c in torch.unique(gt_labels).tolist():
            self.entries += 1
            pred_idx = torch.nonzero(pred_labels == c).squeeze(-1).tolist()
            if not pred_idx:
                self.failed_parts += 1
                continue
            self.matched_parts += 1
            # summed one by one in query order, in float32, as the official torch.add chain
            pred_sum = pred_probs[pred_idx[0]].float()
            for i in pred_idx[1:]:
                pred_sum = pred_sum + pred_probs[i].float()
            pred_bin = pred_sum >= self.threshold
            # official: sum, .int() (truncation), then >= 0.5; for 0/1 masks this is their union
            gt_bin = gt_masks[gt_labels == c].float().sum(0).int() >= self.threshold
            iou, acc = self._scores(pred_bin, gt_bin)
            self.iou_sum += iou
            self.acc_sum += acc

    def _scores(self, pred: Tensor, gt: Tensor) -> tuple[float, float]:
        """IoU and accuracy of one binary [S, S] prediction against its binary ground truth."""
        dim = 1 if self.iou_reduction == "smp_rows" else (0, 1)
        tp = (pred & gt).sum(dim).double()
        fp = (pred & ~gt).sum(dim).double()
        fn = (~pred & gt).sum(dim).double()
        per_pixel_count = pred.shape[1] if self.iou_reduction == "smp_rows" else pred.numel()
        union = tp + fp + fn
        # smp: 0/0 -> zero_division = 1.0
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.ones_like(tp))
        acc = (per_pixel_count - fp - fn) / per_pixel_count  # (TP + TN) / pixels
        return float(iou.mean()), float(acc.mean())

    def merge(self, other: PaperProtocol) -> PaperProtocol:
        """Add ``other``'s entries (for distributed evaluation); returns ``self``."""
        if (other.iou_reduction, other.threshold) != (self.iou_reduction, self.threshold):
            raise ValueError("cannot merge PaperProtocol objects with different settings")
        self.iou_sum += other.iou_sum
        self.acc_sum += other.acc_sum
        self.entries += other.entries
        self.null_images += other.null_images
        self.failed_parts += other.failed_parts
        self.matched_parts += other.matched_parts
        return self

    def state_dict(self) -> dict[str, Any]:
        """The accumulated sums and counts, for gathering across processes."""
        return {
            "iou_reduction": self.iou_reduction,
            "threshold": self.threshold,
            "iou_sum": self.iou_sum,
            "acc_sum": self.acc_sum,
            "entries": self.entries,
            "null_images": self.null_images,
            "failed_parts": self.failed_parts,
            "matched_parts": self.matched_parts,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PaperProtocol:
        proto = cls(iou_reduction=state["iou_reduction"], threshold=state["threshold"])
        for key in ("iou_sum", "acc_sum", "entries", "null_images", "failed_parts", "matched_parts"):
            setattr(proto, key, state[key])
        return proto

    def compute(self) -> dict[str, Any]:
        """``{"miou", "macc"}`` as fractions in [0, 1] (None with no entry), and the counts
        ``entries``, ``null_images``, ``failed_parts``, ``matched_parts``, plus ``iou_reduction``."""
        return {
            "miou": self.iou_sum / self.entries if self.entries else None,
            "macc": self.acc_sum / self.entries if self.entries else None,
            "entries": self.entries,
            "null_images": self.null_images,
            "failed_parts": self.failed_parts,
            "matched_parts": self.matched_parts,
            "iou_reduction": self.iou_reduction,
        }
