"""Test-time input scales for a dense box run: does a zoomed-in view find the small parts it misses?

The tiny SAM's encoder is convolutional (its attention layers take their position from a depthwise
convolution), so it encodes an image at any multiple of 32 pixels; a 384 px input gives a 48x48
embedding in which every part is 1.5x as many cells wide. The dense prompter is convolutional too.
This benchmark encodes every held-out image (and its mirror, as test-time mirroring does) at each
of ``--scales``, reads the prompter's heat maps and geometry at every scale, and scores, with the
standard protocol, each scale alone and fusions of scales: the maps resized to one grid (heat-map
probabilities bilinearly, each cell's geometry from the scale whose heat map is highest there),
averaged, then the peaks. SAM always decodes the masks from the run's own 256 px embedding, so only
where the parts are found changes. Every view is encoded in float32.

    python benchmarks/input_scales.py DEMO_DIR [--run wps-sam-box] [--scales 256 320 384] [--limit N]

prints one JSON object: mIoU (%) per variant.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

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


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("demo", type=Path, help="the --out folder of a finished `wps-sam demo`")
    parser.add_argument("--run", default="wps-sam-box")
    parser.add_argument("--scales", type=int, nargs="+", default=[256, 320, 384])
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
    matrices = {v: ConfusionMatrix(len(names)) for v in variants}
    threshold = float(torch.sigmoid(torch.tensor(cfg.inference.mask_threshold)))
    grid = model.prompter.embed_size
    for entry in index.images[: args.limit]:
        size = (entry.height, entry.width)
        views, own = scale_views(model, read_image(entry.path), args.scales)
        gt_map = baselines.gt_semantic_map(entry)
        for name, scales in variants.items():
            maps = views[scales[0]] if len(scales) == 1 else fuse([views[s] for s in scales], grid)
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
