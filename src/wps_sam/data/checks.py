"""Triage of a part data set: what is usable, what is skipped and what is repaired, each with its reason.

Annotation tools export every kind of fault. :func:`~wps_sam.data.coco.load_split` handles the json
(zero-area, non-finite or outside boxes, unknown categories and images, degenerate polygons, malformed
RLE); this module adds the image files. Every image is opened, verified and fully decoded, so that
missing, empty, truncated or corrupt files and decompression bombs are skipped *before* training
meets them, and what reading will convert (grayscale, RGBA, CMYK, palette, 16-bit, EXIF orientation,
a json size that disagrees with the file) is recorded as repaired.

``wps-sam check-data`` prints :func:`check_data`'s report; train and eval read their splits through
:func:`triaged_split`, so they skip exactly what check-data skips and say so in one line.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from wps_sam.data.coco import PartDataIndex, load_split, rescale_entry
from wps_sam.data.coco_json import find_annotation_file
from wps_sam.data.images import pixel_limit
from wps_sam.data.triage_cache import VerdictStore, file_key, split_key
from wps_sam.errors import DataError

logger = logging.getLogger(__name__)

_EXIF_ORIENTATION = 0x0112
_MODE_NAMES = {
    "1": "1-bit",
    "L": "grayscale",
    "LA": "grayscale+alpha",
    "La": "grayscale+alpha",
    "P": "palette",
    "PA": "palette+alpha",
    "RGBA": "RGBA",
    "RGBa": "RGBA",
    "RGBX": "RGBX",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
    "LAB": "Lab",
    "HSV": "HSV",
    "I": "32-bit integer",
    "F": "32-bit float",
    "I;16": "16-bit",
    "I;16L": "16-bit",
    "I;16B": "16-bit",
    "I;16N": "16-bit",
}


@dataclass(frozen=True)
class ImageVerdict:
    """What reading an image file will do.

    ``problem``: why the file is unusable, or None. ``notes``: conversions that reading applies.
    ``size``: (H, W) as displayed (EXIF orientation applied), None when unusable.
    """

    problem: str | None
    notes: tuple[str, ...] = ()
    size: tuple[int, int] | None = None


class _Bomb(Exception):
    pass


def _check_pixels(image: Image.Image) -> None:
    """Refuse a decompression bomb from its header, even where Pillow's own check is switched off."""
    width, height = image.size
    if width * height > pixel_limit():
        raise _Bomb(
            f"decompression bomb: {width}x{height} = {width * height} pixels, more than {pixel_limit()} "
            "(raise PIL.Image.MAX_IMAGE_PIXELS if the image is genuine)"
        )


def inspect_image(path: str | Path, decode: bool = True) -> ImageVerdict:
    """Open, verify and (with ``decode``) fully decode the image at ``path``; never raises.

    Pillow's ``verify`` checks the container (PNG checksums, a missing end chunk); only a full decode
    finds truncated pixel data (JPEG). The pixel count is checked from the header first, so a
    decompression bomb is refused before anything is allocated.
    """
    path = Path(path)
    try:
        n_bytes = path.stat().st_size
    except FileNotFoundError:
        return ImageVerdict("file not found")
    except OSError as e:
        return ImageVerdict(f"cannot be accessed ({e.strerror or e})")
    if n_bytes == 0:
        return ImageVerdict("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if decode:
                with Image.open(path) as image:
                    _check_pixels(image)
                    image.verify()  # must come directly after open
            with Image.open(path) as image:
                _check_pixels(image)
                width, height = image.size
                mode = image.mode
                orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
                if decode:
                    image.load()
    except _Bomb as e:
        return ImageVerdict(str(e))
    except UnidentifiedImageError:
        return ImageVerdict("not an image file Pillow can read")
    except Image.DecompressionBombError as e:
        return ImageVerdict(f"decompression bomb: {e}")
    except Exception as e:  # noqa: BLE001 - decoders of corrupt files raise anything (struct.error ...)
        kind = "truncated" if "truncated" in str(e).lower() else "corrupt"
        return ImageVerdict(f"{kind} image file: cannot be decoded ({type(e).__name__}: {e})")
    if width == 0 or height == 0:
        return ImageVerdict(f"image of size {width}x{height}")
    notes = []
    if mode != "RGB":
        what = _MODE_NAMES.get(mode, f"mode {mode}")
        alpha = " (alpha dropped)" if mode in ("LA", "La", "PA", "RGBA", "RGBa") else ""
        notes.append(f"{what} image (mode {mode}) converted to 8-bit RGB{alpha}")
    if orientation not in (None, 1):
        notes.append(f"EXIF orientation {orientation} applied")
    if orientation in (5, 6, 7, 8):  # these swap height and width
        width, height = height, width
    return ImageVerdict(None, tuple(notes), (height, width))


def verify_images(
    index: PartDataIndex, decode: bool = True, progress: bool = False, store: VerdictStore | None = None
) -> None:
    """Inspect every image of ``index`` and update it in place.

    Unusable images move to ``skipped_images`` and their parts to ``skipped_annotations``;
    conversions go to ``repaired``; an image whose json size disagrees with its file gets its
    annotations scaled to the file (the file wins), and the repair is recorded. With a ``store``, the
    verdicts of unchanged files are read from it instead of decoding them, and new ones are added.
    """
    from tqdm import tqdm

    paths = [entry.path for entry in index.images]
    limit = pixel_limit()
    keys = [file_key(p, limit, decode) if store is not None else None for p in paths]
    verdicts: list[Any] = [
        _verdict_from_json(store.get(p, k)) if store is not None else None for p, k in zip(paths, keys)
    ]
    todo = [i for i, v in enumerate(verdicts) if v is None]
    workers = max(1, min(4, os.cpu_count() or 1))  # Pillow decodes without the GIL
    with ThreadPoolExecutor(workers) as pool:
        fresh = tqdm(
            pool.map(lambda i: inspect_image(paths[i], decode), todo),
            total=len(todo),
            disable=not progress,
            desc=f"check {index.split}",
            dynamic_ncols=True,
        )
        for i, verdict in zip(todo, fresh):
            verdicts[i] = verdict
            if store is not None:
                store.put(paths[i], keys[i], _verdict_to_json(verdict))
    if store is not None:
        store.save()
    kept, skipped_ids = [], set()
    for entry, verdict in zip(index.images, verdicts):
        if verdict.problem is not None:
            skipped_ids.add(entry.image_id)
            index.skipped_images.append(
                {"image_id": entry.image_id, "file_name": entry.file_name, "reason": verdict.problem}
            )
            index.skipped_annotations += [
                {"image_id": entry.image_id, "ann_id": part.ann_id, "reason": "its image is skipped"}
                for part in entry.parts
            ]
            continue
        index.repaired += [{"image_id": entry.image_id, "reason": note} for note in verdict.notes]
        if verdict.size != (entry.height, entry.width):
            height, width = verdict.size
            index.repaired.append(
                {
                    "image_id": entry.image_id,
                    "reason": f"json size {entry.height}x{entry.width} differs from the file's {height}x{width}; "
                    "annotations scaled to the file",
                }
            )
            entry = rescale_entry(entry, height, width)
        kept.append(entry)
    index.images = kept
    # Repairs of what is skipped after all are noise in the report.
    index.repaired = [r for r in index.repaired if r.get("image_id") not in skipped_ids]


def _verdict_to_json(verdict: ImageVerdict) -> dict[str, Any]:
    return {"problem": verdict.problem, "notes": list(verdict.notes), "size": verdict.size}


def _verdict_from_json(data: dict[str, Any] | None) -> ImageVerdict | None:
    if data is None:
        return None
    try:
        size = tuple(int(v) for v in data["size"]) if data["size"] is not None else None
        return ImageVerdict(data["problem"], tuple(str(n) for n in data["notes"]), size)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        return None  # a damaged entry: check the file again


def report_of(index: PartDataIndex) -> dict[str, Any]:
    """The check-data report of a (verified) index, JSON-safe.

    ``{"images_total", "images_usable", "parts_usable", "parts_point_only", "images_skipped":
    [{"file", "reason"}], "annotations_skipped": [{"id", "image_id", "reason"}], "repaired": [{"file" |
    "id", ..., "reason"}]}``; ``parts_point_only`` counts the parts labelled by a point only (mixed
    supervision).
    """
    files = {entry.image_id: entry.file_name for entry in index.images}
    repaired = []
    for record in index.repaired:
        item: dict[str, Any] = {}
        if record.get("ann_id") is not None:
            item["id"] = _json_safe(record["ann_id"])
        item["image_id"] = _json_safe(record.get("image_id"))
        if record.get("image_id") in files:
            item["file"] = files[record["image_id"]]
        repaired.append({**item, "reason": record["reason"]})
    return {
        "images_total": len(index.images) + len(index.skipped_images),
        "images_usable": len(index.images),
        "parts_usable": index.num_parts,
        "parts_point_only": index.num_point_only,
        "images_skipped": [
            {"file": _json_safe(r.get("file_name")), "reason": r["reason"]} for r in index.skipped_images
        ],
        "annotations_skipped": [
            {
                "id": _json_safe(r.get("ann_id")),
                "image_id": _json_safe(r.get("image_id")),
                "reason": r["reason"],
            }
            for r in index.skipped_annotations
        ],
        "repaired": repaired,
    }


def check_data(root: str | Path, split: str, decode_images: bool = True, progress: bool = False) -> dict:
    """Triage split ``split`` of the data set at ``root``; the report of :func:`report_of`.

    Every image is checked again (the stored verdicts are replaced, see :mod:`.triage_cache`).
    Raises :class:`DataError` only when the split cannot be read at all (no root, no or invalid json).
    """
    index = load_split(root, split)
    verify_images(index, decode_images, progress, _store(index.root, split, recheck=True))
    return report_of(index)


def _store(root: Path, split: str, recheck: bool) -> VerdictStore:
    """The kept triage of the split's image folder (:mod:`.triage_cache`)."""
    return VerdictStore(Path(root) / "images" / split, recheck=recheck)


def _triage(
    root: Path, split: str, class_names: list[str] | None, decode: bool, progress: bool, recheck: bool
) -> PartDataIndex:
    """The triaged split: as a previous start left it when nothing it depends on changed (the
    annotation file, the class names, the image files and folders), else loaded and checked anew."""
    store = _store(root, split, recheck)
    limit, annotations = pixel_limit(), find_annotation_file(root, split)
    key = split_key(annotations, class_names, limit, decode)
    index = store.triaged(key, limit, decode)
    if index is None:
        index = load_split(root, split, class_names=class_names)
        verify_images(index, decode, progress, store)
        store.keep_triaged(key, index, limit, decode)
        store.save()
    return index


def triaged_split(
    root: str | Path,
    split: str,
    class_names: list[str] | None = None,
    strict: bool = False,
    decode_images: bool = True,
    progress: bool = False,
    recheck: bool = False,
) -> PartDataIndex:
    """:func:`load_split` with the image checks of :func:`check_data`, summarised in one log line.

    Images unchanged since a previous triage are not decoded again (:mod:`.triage_cache`);
    ``recheck`` decodes every image anew. With ``strict``, a split with any skipped image or
    annotation raises :class:`DataError` instead.
    """
    index = _triage(Path(root), split, class_names, decode_images, progress, recheck)
    report = report_of(index)
    line = summary_line(report)
    if line is None:
        return index
    hint = f"see `wps-sam check-data --data {root} --split {split}`"
    if strict and (report["images_skipped"] or report["annotations_skipped"]):
        first = (report["images_skipped"] or report["annotations_skipped"])[0]
        what = f"image {first['file']!r}" if "file" in first else f"annotation {first['id']!r}"
        raise DataError(
            f"--strict: split '{split}' of {root}: {line}; e.g. {what}: {first['reason']} ({hint})"
        )
    logger.warning("split '%s': %s (%s)", split, line, hint)
    return index


def summary_line(report: dict[str, Any]) -> str | None:
    """One line of counts, or None when nothing was skipped or repaired."""
    n_img, n_ann, n_rep = (len(report[k]) for k in ("images_skipped", "annotations_skipped", "repaired"))
    if not (n_img or n_ann or n_rep):
        return None
    return f"skipped {n_img} of {report['images_total']} image(s) and {n_ann} annotation(s), repaired {n_rep}"


def format_report(report: dict[str, Any], limit: int = 20) -> str:
    """A human summary of a check-data report; at most ``limit`` lines per list."""
    lines = [f"images: {report['images_usable']} usable of {report['images_total']}"]
    point_only = (
        f" ({report['parts_point_only']} labelled by a point only)" if report["parts_point_only"] else ""
    )
    lines.append(f"parts: {report['parts_usable']} usable{point_only}")
    sections = (
        ("skipped images", report["images_skipped"], lambda r: f"{r['file']}: {r['reason']}"),
        (
            "skipped annotations",
            report["annotations_skipped"],
            lambda r: f"annotation {r['id']} (image {r['image_id']}): {r['reason']}",
        ),
        ("repaired", report["repaired"], _describe_repair),
    )
    for title, records, describe in sections:
        lines.append(f"{title}: {len(records)}")
        lines += [f"  {describe(r)}" for r in records[:limit]]
        if len(records) > limit:
            lines.append(f"  ... and {len(records) - limit} more (use --json for all)")
    return "\n".join(lines)


def _describe_repair(record: dict[str, Any]) -> str:
    where = (
        f"annotation {record['id']}" if "id" in record else record.get("file", f"image {record['image_id']}")
    )
    return f"{where}: {record['reason']}"


def _json_safe(value: Any) -> Any:
    """Ids as the json had them where JSON can say them (NaN and objects become their repr)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return repr(value)
