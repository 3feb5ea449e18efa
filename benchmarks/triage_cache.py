"""How much the triage cache saves at a train or eval start: the first triage of a split against the second.

Writes (once) a split of ``--images`` JPEGs of ImageNet's typical size (500x375, shapes on a grainy
gradient, three rectangular parts each, COCO polygons), then times ``triaged_split`` with an empty triage cache and again with the
verdicts stored, in one process.

    python benchmarks/triage_cache.py --out DIR [--images 5000]

prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

W, H = 500, 375


def write_split(root: Path, n: int, seed: int = 0) -> None:
    images_dir, ann_dir = root / "images" / "train", root / "annotations" / "train"
    if (ann_dir / "train.json").is_file():
        return
    images_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, anns = [], []
    yy, xx = np.mgrid[0:H, 0:W]
    for i in range(n):
        base = xx * rng.uniform(0.1, 0.5) + yy * rng.uniform(0.1, 0.5)
        texture = rng.normal(0, 12, (H, W, 3))  # photo-like grain: JPEG decodes as slowly as a photo's
        pixels = np.clip(np.stack([base, base[::-1], base[:, ::-1]], -1) + texture, 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x0, y0 = int(rng.integers(0, W - 80)), int(rng.integers(0, H - 80))
            x1, y1 = x0 + int(rng.integers(20, 80)), y0 + int(rng.integers(20, 80))
            draw.rectangle((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
            poly = [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "segmentation": [poly],
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0})  # fmt: skip
        name = f"{i:06d}.jpg"
        image.save(images_dir / name, quality=90)
        images.append({"id": i + 1, "file_name": name, "height": H, "width": W})
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "part"}]}
    (ann_dir / "train.json").write_text(json.dumps(coco))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--images", type=int, default=5000)
    args = ap.parse_args()
    root = args.out / f"split-{args.images}"
    write_split(root, args.images)
    os.environ["WPS_SAM_TRIAGE_CACHE"] = str(args.out / f"triage-{time.time_ns()}")  # empty at first
    from wps_sam.data.checks import triaged_split

    times = []
    for _ in range(2):
        t = time.perf_counter()
        index = triaged_split(root, "train")
        times.append(time.perf_counter() - t)
    result = {
        "images": len(index.images),
        "parts": index.num_parts,
        "first_s": round(times[0], 3),
        "second_s": round(times[1], 3),
        "speedup": round(times[0] / times[1], 1),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
