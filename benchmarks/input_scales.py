"""Test-time input scales and shifts for a dense box run: do other views find the parts it misses?

The tiny SAM's encoder is convolutional (its attention layers take their position from a depthwise
convolution), so it encodes an image at any multiple of 32 pixels; a 384 px input gives a 48x48
embedding in which every part is 1.5x as many cells wide. The dense prompter is convolutional too.
This benchmark encodes every held-out image (and its mirror, as test-time mirroring does) at each
of ``--scales``, reads the prompter's heat maps and geometry at every scale, and scores, with the
standard protocol, each scale alone and fusions of scales: the maps resized to one grid (heat-map
probabilities bilinearly, each cell's geometry from the scale whose heat map is highest there),
averaged, then the peaks. With ``--shifts D ...``, also views at the run's own scale whose input is
shifted by D px (a fraction of the 8 px cell; zero padding, SAM's mean colour) right, left, down and
up: each view's maps are brought back to the unshifted grid (its geometry moved by -D px, its maps
resampled bilinearly at the unshifted cells' centres) and averaged with the unshifted view's, as the
mirror is (variant ``shiftD``: 5 positions, each with its mirror). SAM always decodes the masks from
the run's own unshifted embedding, so only where the parts are found changes. Every view is encoded
in float32.

    python benchmarks/input_scales.py DEMO_DIR [--run wps-sam-box] [--scales 256 320 384] [--shifts 2 4] [--limit N]

prints one JSON object: mIoU (%) per variant.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from wps_sam.cli.arguments import positive_int
from wps_sam.data.images import read_image
from wps_sam.data.transforms import SamTransform
from wps_sam.demo import baselines
from wps_sam.demo.runner import finished_run
from wps_sam.errors import WpsSamError
from wps_sam.evaluation.metrics import ConfusionMatrix
from wps_sam.modeling.dense_prompter import average_with_mirror
from wps_sam.modeling.geometry import to_pixels
from wps_sam.postprocess import compose_semantic_map, select_queries
from wps_sam.sam.decoder import masks_to_frame


def fuse(views: list[dict[str, torch.Tensor]], grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """The views' maps on one grid: mean heat-map probability, each cell's geometry from the view
    whose best class scores highest there."""
    heats = [F.interpolate(v["heatmap"].float().sigmoid(), size=grid, mode="bilinear") for v in views]
    geoms = [
        F.interpolate(v["geometry"].permute(0, 3, 1, 2), size=grid, mode="nearest").permute(0, 2, 3, 1)
        for v in views
    ]
    best = torch.stack([h.max(1).values for h in heats]).argmax(0)  # [B, h, w]
    stacked = torch.stack(geoms)  # [V, B, h, w, 4]
    geometry = stacked.gather(0, best[None, ..., None].expand(1, *stacked.shape[1:]))[0]
    return {"heatmap": torch.logit(torch.stack(heats).mean(0), eps=1e-6), "geometry": geometry}


def scale_views(model, image, scales: list[int]) -> tuple[dict[int, dict], torch.Tensor]:
    """The prompter's maps of ``image`` (uint8 [H, W, 3]) at every input size of ``scales``, each
    averaged with its mirrored frame's, and the embedding [1, 256, h, w] at the run's own size."""
    views, own = {}, None
    for side in scales:
        frame = SamTransform(side).apply_image(image)[None]
        embeddings = model.image_encoder(frame)
        own = embeddings if side == model.image_size else own
        mirrored = model.image_encoder(frame.flip(-1))
        views[side] = average_with_mirror(model.prompter.maps(embeddings), model.prompter.maps(mirrored))
    return views, own


def shifted(frame: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """[B, 3, S, S] ``frame`` moved by (dx, dy) px (right and down when positive), zero-padded."""
    out = torch.zeros_like(frame)
    size = frame.shape[-1]
    src = [slice(max(-d, 0), size - max(d, 0)) for d in (dy, dx)]
    dst = [slice(max(d, 0), size - max(-d, 0)) for d in (dy, dx)]
    out[..., dst[0], dst[1]] = frame[..., src[0], src[1]]
    return out


def unshifted(maps: dict[str, torch.Tensor], dx: int, dy: int, side: int) -> dict[str, torch.Tensor]:
    """The maps of a view shifted by (dx, dy) px on the unshifted grid: the centres moved back, the
    heat-map probabilities and the geometry resampled at the unshifted cells' centres."""
    geometry = maps["geometry"].float()
    geometry = torch.cat(
        [geometry[..., :1] - dx / side, geometry[..., 1:2] - dy / side, geometry[..., 2:]], -1
    )
    b, _, h, w = maps["heatmap"].shape
    # The unshifted cell j's centre is the shifted view's cell j + dx / stride; grid_sample's [-1, 1].
    xs = (torch.arange(w) + 0.5 + dx * w / side) * 2 / w - 1
    ys = (torch.arange(h) + 0.5 + dy * h / side) * 2 / h - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], -1)[None].expand(b, -1, -1, -1)

    def resample(x: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    heat = resample(maps["heatmap"].float().sigmoid())
    geometry = resample(geometry.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return {"heatmap": torch.logit(heat, eps=1e-6), "geometry": geometry}


def shift_view(model, image, shift: int, own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The prompter's maps of ``image`` averaged over its frame at the run's own size (``own``: that
    frame's maps, mirror averaged in, as :func:`scale_views` gives them) and that frame shifted by
    ``shift`` px right, left, down and up, each position with its mirror."""
    side = model.image_size
    frame = SamTransform(side).apply_image(image)[None]
    heats, geometries = [own["heatmap"].float().sigmoid()], [own["geometry"].float()]
    for dx, dy in ((shift, 0), (-shift, 0), (0, shift), (0, -shift)):
        moved = shifted(frame, dx, dy)
        maps = average_with_mirror(
            model.prompter.maps(model.image_encoder(moved)),
            model.prompter.maps(model.image_encoder(moved.flip(-1))),
        )
        maps = unshifted(maps, dx, dy, side)
        heats.append(maps["heatmap"].sigmoid())
        geometries.append(maps["geometry"])
    heat = torch.stack(heats).mean(0)
    return {"heatmap": torch.logit(heat, eps=1e-6), "geometry": torch.stack(geometries).mean(0)}


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("demo", type=Path, help="the --out folder of a finished `wps-sam demo`")
    parser.add_argument("--run", default="wps-sam-box")
    parser.add_argument("--scales", type=int, nargs="+", default=[256, 320, 384])
    parser.add_argument(
        "--shifts", type=positive_int, nargs="*", default=[], help="shifts in px (see the docstring)"
    )
    parser.add_argument("--limit", type=int, help="the first N held-out images only")
    args = parser.parse_args()
    try:
        predictor, index = finished_run(args.demo, args.run, "cpu")
    except WpsSamError as error:
        raise SystemExit(str(error)) from None
    model, cfg = predictor.model, predictor.cfg
    side = model.image_size
    if side not in args.scales or any(s % 32 for s in args.scales):
        raise SystemExit(f"--scales must be multiples of 32 and include the run's own {side}")
    others = [s for s in args.scales if s != side]
    variants = {str(s): [s] for s in args.scales}
    variants |= {f"{side}+{s}": [side, s] for s in others}
    if len(others) > 1:
        variants["+".join(map(str, args.scales))] = list(args.scales)
    names = ["background", *index.class_names]
    matrices = {v: ConfusionMatrix(len(names)) for v in [*variants, *(f"shift{d}" for d in args.shifts)]}
    threshold = float(torch.sigmoid(torch.tensor(cfg.inference.mask_threshold)))
    grid = model.prompter.embed_size
    for entry in index.images[: args.limit]:
        size = (entry.height, entry.width)
        image = read_image(entry.path)
        views, own = scale_views(model, image, args.scales)
        variant_maps = {
            name: views[scales[0]] if len(scales) == 1 else fuse([views[s] for s in scales], grid)
            for name, scales in variants.items()
        }
        variant_maps |= {f"shift{d}": shift_view(model, image, d, views[side]) for d in args.shifts}
        gt_map = baselines.gt_semantic_map(entry)
        for name, maps in variant_maps.items():
            out = model.prompter.peaks(maps)
            keep, labels, scores = select_queries(out["pred_logits"][0], cfg.inference.score_threshold)
            probs = torch.zeros(0, *size)
            if len(keep):
                tokens = model.teacher.encode(
                    boxes=to_pixels(out["pred_geometry"][0, keep].float(), "box", side)
                )
                logits, _ = model.decoder(own.expand(len(keep), -1, -1, -1), tokens[:, None])
                frame = side, SamTransform(side).input_size(size), size
                probs = masks_to_frame(logits[:, 0], *frame).sigmoid()
            matrices[name].update(compose_semantic_map(probs, labels, scores, threshold), gt_map)
    print(json.dumps({name: round(100 * m.compute(names)["miou"], 2) for name, m in matrices.items()}))


if __name__ == "__main__":
    main()
