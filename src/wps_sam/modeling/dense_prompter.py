"""The dense prompter: per-cell part heat maps and geometry on SAM's embedding, CenterNet-style.

A recipe of its own beside the paper's set prompter (Zhou et al. 2019, *Objects as Points*): a
residual stack of dilated 3x3 convolutions reads SAM's image embedding at its own resolution; one
head scores every cell for every part class (a part "is" at the cell of its box centre, or of its
point), another predicts the part's geometry from that cell: the centre's offset inside the cell and,
for boxes, width and height (mixed supervision: a box head and a point head, each trained by the
parts of its kind); with ``geometry_radius`` r > 0 the cells around a centre learn it too, so an
offset reaches r + 1 cells. Training is dense, with no matching (:mod:`.dense_criterion`), which is
why it converges in minutes where a set prompter needs days.

At inference the local maxima of the heat maps (3x3 max-pooling) are the parts; each peak's geometry
goes through SAM's frozen prompt encoder (:meth:`WPSSAM.complete_tokens`), so the tokens SAM's mask
decoder receives are exactly its own tokens of a box or a point: the teacher's tokens of the
predicted geometry. The outputs follow the set prompter's contract (``pred_logits`` [B, K, C+1] with
"no part" last), so selection, decoding and composition are shared: a peak of score s and class c
gets the logits ``logit(s)`` for c and ``logit(peak_threshold)`` for "no part" (the others -inf), so
it is kept exactly when s > peak_threshold, with the score s itself when ``peak_threshold`` is 0.5.

With ``refine`` (box supervision) a second stage reads the prompter's features inside each peak's
box, classifies it and corrects the box (:mod:`.box_refiner`); it trains on the peaks and on
jittered ground-truth boxes (the ``denoising`` argument of :meth:`DensePrompter.forward`).

Test-time mirroring (``inference.flip_test``): the prompter also reads the embedding of the mirror
image (SAM's whole S x S input frame flipped left-right, so that its grid mirrors this one's cell for
cell) and averages, cell by cell, the heat-map probabilities and the geometry of both views, the
mirror's flipped back (:func:`average_with_mirror`), before it picks the peaks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .box_refiner import BoxRefiner, JitteredBoxes
from .geometry import GEOMETRY_DIMS
from .prompter import SAM_EMBED_DIM
from .standardize import InputStandardizer

_PRIOR = 0.1  # initial heat-map probability (CenterNet's bias of -2.19)


class _Block(nn.Module):
    """Pre-activation residual block of two dilated 3x3 convolutions: [B, W, h, w] -> same."""

    def __init__(self, width: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(8, width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation),
            nn.GroupNorm(8, width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _head(width: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, out, 1))


def _geometry_head(width: int, kind: str) -> nn.Sequential:
    """Offset of the centre in its cell (2, through a sigmoid) and, for boxes, log size in cells (2);
    it starts at the cell's centre and, for boxes, two cells wide."""
    head = _head(width, GEOMETRY_DIMS[kind])
    nn.init.zeros_(head[-1].weight)
    if kind == "box":
        nn.init.constant_(head[-1].bias[2:], math.log(2.0))
    return head


def average_with_mirror(dense: dict[str, Tensor], mirrored: dict[str, Tensor]) -> dict[str, Tensor]:
    """The cell-wise mean of :meth:`DensePrompter.dense` of an embedding and of its mirror image's.

    ``mirrored`` holds the maps of the left-right mirrored input frame: they are flipped back along
    the grid's width, and every centre's x becomes 1 - x (sizes are unchanged). The heat maps are
    averaged as probabilities and returned as logits, the geometry as normalised coordinates.
    """
    heat = (dense["heatmap"].float().sigmoid() + mirrored["heatmap"].float().flip(-1).sigmoid()) / 2
    out = {"heatmap": torch.logit(heat, eps=1e-6)}
    for key in ("geometry", "point_geometry"):
        if key in dense:
            back = mirrored[key].float().flip(2)  # [B, h, w, G]: the cells in this view's order
            back = torch.cat([1 - back[..., :1], back[..., 1:]], dim=-1)
            out[key] = (dense[key].float() + back) / 2
    return out


class DensePrompter(nn.Module):
    """Per-cell part classes and geometry from a SAM image embedding.

    Args:
        num_classes: C part classes.
        kind: ``"box"``, ``"point"`` or ``"mixed"``: the geometry of the supervision; ``"mixed"`` has a
            box head and a point head on every cell (``"geometry"`` and ``"point_geometry"``).
        embed_dim, embed_size: channels and (H, W) of SAM's embedding (the heads' grid).
        width: channels of the residual stack.
        dilations: one residual block per entry.
        max_parts: peaks kept per image at inference.
        peak_threshold: heat-map score from which a peak is kept (see the module docstring).
        standardize_input: standardise SAM's embedding per channel with fixed statistics
            (:meth:`set_input_stats`).
        geometry_radius: 0: a cell's centre offset lies inside the cell (a sigmoid; only the centre
            cell learns a part's geometry, CenterNet); r > 0: the offset from the cell's middle is
            free within r + 1 cells, so that the cells around a centre can predict it too (TTFNet).
        refine: a second stage that corrects each peak's box (:mod:`.box_refiner`; ``kind="box"``
            only).
    """

    def __init__(
        self,
        num_classes: int,
        kind: str,
        embed_dim: int = SAM_EMBED_DIM,
        embed_size: tuple[int, int] = (64, 64),
        width: int = 128,
        dilations: tuple[int, ...] = (1, 2, 4, 8, 1),
        max_parts: int = 30,
        peak_threshold: float = 0.3,
        standardize_input: bool = True,
        geometry_radius: int = 0,
        refine: bool = False,
    ) -> None:
        super().__init__()
        if kind not in (*GEOMETRY_DIMS, "mixed"):
            raise ValueError(f"kind must be 'box', 'point' or 'mixed', got {kind!r}")
        if refine and kind != "box":
            raise ValueError(f"the box refiner corrects boxes: it needs kind 'box', got {kind!r}")
        self.num_classes, self.kind = num_classes, kind
        self.embed_dim, self.embed_size = embed_dim, tuple(embed_size)
        self.max_parts, self.peak_threshold = max_parts, peak_threshold
        self.standardizes_input = standardize_input
        self.geometry_radius = geometry_radius
        if standardize_input:
            self.standardizer = InputStandardizer(embed_dim)
        self.stem = nn.Conv2d(embed_dim, width, 1)
        self.blocks = nn.Sequential(*(_Block(width, d) for d in dilations), nn.GroupNorm(8, width), nn.ReLU())
        self.heatmap = _head(width, num_classes)
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - _PRIOR) / _PRIOR))
        self.geometry = _geometry_head(width, "point" if kind == "point" else "box")
        if kind == "mixed":
            self.point_geometry = _geometry_head(width, "point")
        self.refiner = BoxRefiner(width, num_classes) if refine else None

    @torch.no_grad()
    def set_input_stats(self, mean: Tensor, std: Tensor) -> None:
        """Per-channel mean and std [embed_dim] of the training embeddings."""
        if not self.standardizes_input:
            raise ValueError("set_input_stats: the prompter was built without standardize_input")
        self.standardizer.set_stats(mean, std)

    def dense(self, image_embeddings: Tensor) -> dict[str, Tensor]:
        """``{"heatmap": [B, C, h, w] logits, "geometry": [B, h, w, G] normalised}`` for every cell
        (and, for mixed supervision, the point head's ``"point_geometry"`` [B, h, w, 2]; with the
        refiner, the feature map it reads as ``"features"`` [B, W, h, w])."""
        if image_embeddings.dim() != 4 or tuple(image_embeddings.shape[1:]) != (
            self.embed_dim,
            *self.embed_size,
        ):
            raise ValueError(
                f"DensePrompter expects an image embedding [B, {self.embed_dim}, {self.embed_size[0]}, "
                f"{self.embed_size[1]}], got {tuple(image_embeddings.shape)}"
            )
        return self.maps(image_embeddings)

    def maps(self, image_embeddings: Tensor) -> dict[str, Tensor]:
        """:meth:`dense` on an embedding [B, embed_dim, h', w'] of any grid (the layers are
        convolutions; :meth:`dense` holds the prompter to the grid it was trained on): the maps are
        [B, C, h', w'] and [B, h', w', G], the geometry normalised to that grid's frame."""
        x = image_embeddings
        if self.standardizes_input:
            x = self.standardizer(x)
        x = self.blocks(self.stem(x))
        out = {"heatmap": self.heatmap(x), "geometry": self._cell_geometry(self.geometry(x))}
        if self.kind == "mixed":
            out["point_geometry"] = self._cell_geometry(self.point_geometry(x))
        if self.refiner is not None:
            out["features"] = x
        return out

    def _cell_geometry(self, raw: Tensor) -> Tensor:
        """A geometry head's [B, G, h, w] -> [B, h, w, G] normalised: the centre is the cell plus an
        offset (see ``geometry_radius``); a box's size is exp(log size) cells."""
        raw = raw.float().permute(0, 2, 3, 1)
        h, w = raw.shape[1:3]
        grid = torch.tensor([w, h], device=raw.device, dtype=raw.dtype)
        ys, xs = torch.meshgrid(
            torch.arange(h, device=raw.device), torch.arange(w, device=raw.device), indexing="ij"
        )
        cells = torch.stack([xs, ys], dim=-1).to(raw.dtype)  # [h, w, 2] (x, y)
        if self.geometry_radius:
            reach = self.geometry_radius + 1
            centre = (cells + 0.5 + raw[..., :2].clamp(-reach, reach)) / grid
        else:
            centre = (cells + raw[..., :2].sigmoid()) / grid
        if raw.shape[-1] == 2:
            return centre
        return torch.cat([centre, raw[..., 2:].clamp(-6, 6).exp() / grid], dim=-1)

    def forward(
        self,
        image_embeddings: Tensor,
        mirrored_embeddings: Tensor | None = None,
        denoising: JitteredBoxes | None = None,
    ) -> dict:
        """Training: :meth:`dense` (with the refiner, also its outputs on the candidates: see
        :meth:`refine_candidates`); evaluation: the peaks as queries, the set prompter's contract:
        ``"pred_logits"`` [B, K, C + 1] and ``"pred_geometry"`` [B, K, G] (K = ``max_parts``; mixed
        supervision: the box head's, and the point head's as ``"pred_point_geometry"`` [B, K, 2]).
        ``mirrored_embeddings`` [B, 256, h, w] (evaluation only): the embeddings of the mirrored input
        frames, averaged in before the peaks (:func:`average_with_mirror`). ``denoising`` (training,
        with the refiner): jittered ground-truth boxes, candidates beside the peaks."""
        if denoising is not None and (self.refiner is None or not self.training):
            raise ValueError("DensePrompter: jittered boxes train the box refiner (refine=True, training)")
        dense = self.dense(image_embeddings)
        if self.training:
            if mirrored_embeddings is not None:
                raise ValueError(
                    "DensePrompter: mirrored embeddings are for evaluation (test-time mirroring)"
                )
            if self.refiner is not None:
                dense |= self.refine_candidates(dense, denoising)
            return dense
        features = dense.pop("features", None)
        if mirrored_embeddings is not None:
            if mirrored_embeddings.shape != image_embeddings.shape:
                raise ValueError(
                    f"mirrored embeddings {tuple(mirrored_embeddings.shape)} must match the embeddings "
                    f"{tuple(image_embeddings.shape)}"
                )
            dense = average_with_mirror(dense, self.dense(mirrored_embeddings))
        out = self.peaks(dense)
        return out if self.refiner is None else self.refine_peaks(out, features)

    def refine_candidates(self, dense: dict[str, Tensor], denoising: JitteredBoxes | None) -> dict:
        """The refiner on the training candidates: every image's peaks (detached) and ``denoising``'s
        boxes. Returns, flattened over the batch, ``"refine_candidates"`` [P, 4], ``"refine_image"``
        [P], the refiner's ``"refine_logits"`` [P, C + 1] and ``"refine_geometry"`` [P, 4]."""
        boxes = self.peaks({k: dense[k].detach() for k in ("heatmap", "geometry")})["pred_geometry"]
        valid = torch.ones(boxes.shape[:2], dtype=torch.bool, device=boxes.device)
        if denoising is not None:
            boxes = torch.cat([boxes, denoising.boxes.to(boxes)], dim=1)
            valid = torch.cat([valid, denoising.valid.to(valid.device)], dim=1)
        logits, refined = self.refiner(dense["features"], boxes)
        image = torch.arange(len(boxes), device=boxes.device)[:, None].expand_as(valid)
        return {
            "refine_candidates": boxes[valid],
            "refine_image": image[valid],
            "refine_logits": logits[valid],
            "refine_geometry": refined[valid],
        }

    def refine_peaks(self, out: dict[str, Tensor], features: Tensor) -> dict[str, Tensor]:
        """The peaks of :meth:`peaks` with the refiner's corrected boxes; their classes and scores
        stay the heat maps' (see :mod:`.box_refiner` for why)."""
        _, refined = self.refiner(features, out["pred_geometry"])
        return {"pred_logits": out["pred_logits"], "pred_geometry": refined}

    def peak_cells(self, heatmap: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The ``max_parts`` highest local maxima (3x3) of ``heatmap`` [B, C, h, w] (logits) over
        all classes: their scores, classes and flat cells (y * w + x), each [B, K], best first."""
        scores = heatmap.float().sigmoid()
        h, w = scores.shape[-2:]
        peak = scores == F.max_pool2d(scores, 3, stride=1, padding=1)
        flat = torch.where(peak, scores, torch.zeros_like(scores)).flatten(1)  # [B, C*h*w]
        top, idx = flat.topk(min(self.max_parts, flat.shape[1]), dim=1)
        return top, idx // (h * w), idx % (h * w)

    def peaks(self, dense: dict[str, Tensor]) -> dict[str, Tensor]:
        """The set prompter's outputs (see :meth:`forward`) of the maps of :meth:`dense`: each of
        :meth:`peak_cells` with the geometry of its cell."""
        top, labels, cell = self.peak_cells(dense["heatmap"])
        b, c = dense["heatmap"].shape[:2]
        logits = torch.full((b, top.shape[1], c + 1), -30.0, device=top.device)
        logits.scatter_(2, labels[..., None], torch.logit(top.clamp(1e-6, 1 - 1e-6))[..., None])
        logits[..., c] = math.log(self.peak_threshold / (1 - self.peak_threshold))
        out = {"pred_logits": logits}
        for key, out_key in (("geometry", "pred_geometry"), ("point_geometry", "pred_point_geometry")):
            if key in dense:
                maps = dense[key].flatten(1, 2)  # [B, h*w, G]
                out[out_key] = maps.gather(1, cell[..., None].expand(-1, -1, maps.shape[-1]))
        return out
