"""Where a prompter puts the parts, in SAM's own terms: its tokens against the teacher's.

``token_error``: every part of a split is paired (Hungarian, on token distance, within its class)
with one of the model's kept predictions, and the smooth-L1 between that prediction's tokens and the
teacher tokens SAM's prompt encoder makes of the part's box or point is averaged over all parts; a
part left without a prediction counts the error of a reference token (the training set's mean
teacher token: :func:`mean_teacher_token`). ``mean_token_error``, that error for every part, is the
level of a prompter that has learned nothing about where parts are (every query regressing to the
mean token, the failure of a DETR prompter trained too briefly).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ..data.datasets import PartSegmentationDataset
from ..data.images import image_size
from ..modeling.wps_sam import WPSSAM


@torch.no_grad()
def mean_teacher_token(model: WPSSAM, dataset: PartSegmentationDataset) -> Tensor:
    """The mean teacher token [T, D] of a data set's parts (no image is decoded)."""
    items = [dataset.targets(i, image_size(e.path)) for i, e in enumerate(dataset.index.images)]
    return torch.cat(model.teacher_tokens([i for i in items if len(i["labels"])])).mean(0).cpu()


@torch.no_grad()
def token_error(model: WPSSAM, dataset: PartSegmentationDataset, reference: Tensor) -> tuple[float, float]:
    """(token error, reference-token error) over the parts of ``dataset``; see the module docstring."""
    device = next(model.parameters()).device
    errors, baseline = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        if not len(item["labels"]):
            continue
        out = model(model.embed(item["image"][None].to(device)).float())
        logits, tokens = out["pred_logits"][0].cpu(), out["pred_tokens"][0].float().cpu()
        labels = logits.argmax(-1)
        keep = labels != logits.shape[-1] - 1
        labels, kept = labels[keep], tokens[keep]
        teacher = model.teacher_tokens([item])[0].cpu()
        part_error = torch.stack([F.smooth_l1_loss(reference, t) for t in teacher])
        baseline += part_error.tolist()
        if len(kept):
            dist = torch.cdist(teacher.flatten(1), kept.flatten(1))
            dist[item["labels"][:, None] != labels[None, :]] = float("inf")
            rows, cols = linear_sum_assignment(dist.clamp(max=1e9).numpy())
            for r, c in zip(rows, cols):
                if torch.isfinite(dist[r, c]):
                    part_error[r] = F.smooth_l1_loss(kept[c], teacher[r])
        errors += part_error.tolist()
    return float(np.mean(errors)), float(np.mean(baseline))
