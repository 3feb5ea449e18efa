"""RoIAlign forward + backward: torchvision's ``roi_align`` against :func:`roi_align_grouped`.

The box refiner's pooling on a batch of the demo's size (8 feature maps of 64 x 32 x 32, 54 boxes
per image: 30 peaks and the jittered ground truth, 7 x 7 bins, 2 x 2 samples), both measured side by
side in one process, alternating, and their largest difference:

    python benchmarks/roi_pooling.py [--repeats 20]

prints one JSON object (milliseconds per forward + backward).
"""

from __future__ import annotations

import argparse
import json

import torch
from torchvision.ops import roi_align

from wps_sam.bench import mean_ms
from wps_sam.modeling.roi_pooling import roi_align_grouped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    b, c, side, k, bins = 8, 64, 32, 54, 7
    features = torch.randn(b, c, side, side, requires_grad=True)
    centre, size = torch.rand(b, k, 2) * side, torch.rand(b, k, 2) * side / 3 + 0.3
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1)
    rois = torch.cat([torch.arange(b).repeat_interleave(k)[:, None].float(), boxes.reshape(-1, 4)], 1)
    grad = torch.randn(b * k, c, bins, bins)

    def torchvision_pool() -> None:
        roi_align(features, rois, bins, 1.0, 2, aligned=True).backward(grad)

    def matrix_pool() -> None:
        roi_align_grouped(features, boxes, bins, 2).reshape_as(grad).backward(grad)

    times = {"torchvision_ms": [], "matrices_ms": []}
    for _ in range(2):
        times["torchvision_ms"].append(mean_ms(torchvision_pool, args.repeats, warmup=3))
        times["matrices_ms"].append(mean_ms(matrix_pool, args.repeats, warmup=3))
    with torch.no_grad():
        diff = roi_align(features, rois, bins, 1.0, 2, True) - roi_align_grouped(
            features, boxes, bins
        ).reshape_as(grad)
    print(json.dumps({
        "boxes": b * k, "threads": torch.get_num_threads(),
        **{key: [round(t, 1) for t in v] for key, v in times.items()},
        "max_abs_diff": float(diff.abs().max()),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
