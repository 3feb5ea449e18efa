"""Dataset-level semantic-segmentation metrics: mIoU, mACC and pixel accuracy.

This is the standard protocol (as in mmsegmentation), used to compare methods on equal terms;
:mod:`wps_sam.evaluation.paper_protocol` reproduces the official WPS-SAM numbers instead.

Definitions:

- One confusion matrix ``M`` is accumulated over the whole split: ``M[g, p]`` counts the pixels
  whose ground-truth label is ``g`` and predicted label is ``p``. Labels are those of semantic maps:
  0 is background, k (1..C) is part class k-1. Background is a class like any other: it has an IoU
  and an accuracy and enters both means.
- For each class c: ``TP_c = M[c, c]``, ``FN_c = sum_p M[c, p] - TP_c`` (ground truth c, predicted
  otherwise), ``FP_c = sum_g M[g, c] - TP_c`` (predicted c, ground truth otherwise).
- ``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` and ``acc_c = TP_c / (TP_c + FN_c)`` (per-class recall,
  the usual mACC).
- A class with no ground-truth pixel in the split has ``acc_c = None`` (excluded from mACC). Its
  IoU is 0 if it was predicted somewhere (a class that only produces false positives is penalised)
  and None if it was neither in the ground truth nor predicted (excluded from mIoU). This differs
  from mmsegmentation only in the predicted-but-absent case, which mmsegmentation leaves out (NaN).
- ``mIoU`` and ``mACC`` are the unweighted means of the non-None per-class values;
  ``pixel_acc = sum_c TP_c / sum M`` (all pixels, background included).
- All values are fractions in [0, 1]; an empty mean (nothing counted) is None. The output holds no
  NaN, so it can be written as JSON as is.

Merging the matrices of several workers (:meth:`ConfusionMatrix.merge`) gives exactly the matrix of
one worker that saw all the images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


class ConfusionMatrix:
    """A [num_classes, num_classes] pixel confusion matrix over a whole split (rows = ground truth).

    Args:
        num_classes: number of labels *including* background (index 0), i.e. C + 1.
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    @torch.no_grad()
    def update(self, pred: Tensor, gt: Tensor) -> None:
        """Add one image (or a batch of them).

        Args:
            pred: LongTensor [H, W] (or any shape) predicted semantic map, values in 0..num_classes-1.
            gt: LongTensor of the same shape, the ground-truth semantic map.
        """
        if pred.shape != gt.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must have the same shape")
        n = self.num_classes
        pred = pred.reshape(-1).long()
        gt = gt.reshape(-1).long().to(pred.device)
        if pred.numel() == 0:
            return
        for name, t in (("pred", pred), ("gt", gt)):
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= n:
                raise ValueError(f"{name} has labels in [{lo}, {hi}], outside 0..{n - 1}")
        counts = torch.bincount(gt * n + pred, minlength=n * n)
        self.matrix += counts.reshape(n, n).cpu()

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add ``other``'s counts to this matrix (for distributed evaluation); returns ``self``."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self.matrix += other.matrix.to(self.matrix.device)
        return self

    def reset(self) -> None:
        self.matrix.zero_()

    def compute(self, class_names: Sequence[str]) -> dict[str, Any]:
        """The metrics defined in the module docstring.

        Args:
            class_names: num_classes names, background first; or the C part names only, in which case
                "background" is put first.

        Returns:
            ``{"miou": float | None, "macc": float | None, "pixel_acc": float | None,
            "per_class": [{"name": str, "iou": float | None, "acc": float | None}, ...]}``,
            one per-class entry per label, background first.
        """
        names = list(class_names)
        if len(names) == self.num_classes - 1:
            names = ["background", *names]
        if len(names) != self.num_classes:
            raise ValueError(
                f"expected {self.num_classes} class names (background first) or {self.num_classes - 1} "
                f"part names, got {len(names)}"
            )
        m = self.matrix.double()
        tp = m.diag()
        gt_count = m.sum(1)
        pred_count = m.sum(0)
        union = gt_count + pred_count - tp

        per_class = []
        for c, name in enumerate(names):
            if gt_count[c] > 0:
                iou: float | None = float(tp[c] / union[c])
                acc: float | None = float(tp[c] / gt_count[c])
            else:
                iou = 0.0 if pred_count[c] > 0 else None
                acc = None
            per_class.append({"name": name, "iou": iou, "acc": acc})

        total = float(m.sum())
        return {
            "miou": _mean([e["iou"] for e in per_class]),
            "macc": _mean([e["acc"] for e in per_class]),
            "pixel_acc": float(tp.sum()) / total if total > 0 else None,
            "per_class": per_class,
        }


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None
