"""The triage, kept between runs: a second train or eval on the same data neither decodes an image
nor parses the annotations again.

Two things are kept per image folder, in one JSON file under :func:`default_triage_dir` named after
the folder's path and rewritten atomically:

* every image's verdict (:class:`~wps_sam.data.checks.ImageVerdict`), keyed by the file's path in its
  folder, its size and modification time (ns), the pixel limit and the decode flag: a file that
  changes gets another key, so a stale verdict is never read;
* the last triaged split, keyed by the annotation file's sha256, the run's class names, the pixel
  limit and the decode flag, and valid only while every kept image's file key and the modification
  times of the image folders (a file added or removed anywhere below) are those it was made with.

A change to the annotation file, or to any image, triages the split again, decoding only the images
whose verdicts are not kept. ``--recheck`` ignores what is kept and stores it fresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from wps_sam.atomic import atomic_write_json
from wps_sam.data.coco import ImageEntry, PartDataIndex, PartInstance

logger = logging.getLogger(__name__)

FORMAT = "wps-sam-triage/2"  # 2: parts carry their annotated point; a box may be None


def default_triage_dir() -> Path:
    """``$WPS_SAM_TRIAGE_CACHE``, else ``$XDG_CACHE_HOME/wps-sam/triage`` (``~/.cache`` by default)."""
    if os.environ.get("WPS_SAM_TRIAGE_CACHE"):
        return Path(os.environ["WPS_SAM_TRIAGE_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "wps-sam" / "triage"


def file_key(path: Path, pixel_limit: int, decode: bool) -> str | None:
    """The key of ``path``'s verdict, or None when the file cannot be stat'ed (never cached)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}:{pixel_limit}:{int(decode)}"


class VerdictStore:
    """Verdicts of the images in ``image_dir``: ``get`` and ``put`` by path, ``save`` when done.

    Verdicts are plain dicts (``problem``, ``notes``, ``size``), so this module needs no image code.
    """

    def __init__(self, image_dir: Path, recheck: bool = False, cache_dir: Path | None = None) -> None:
        self.prefix = str(image_dir) + os.sep  # entries are named relative to the folder
        self.folder = str(Path(image_dir).resolve())
        name = hashlib.sha256(self.folder.encode()).hexdigest()[:24]
        self.path = (cache_dir or default_triage_dir()) / f"{name}.json"
        self.entries: dict[str, dict[str, Any]] = {}
        self.split: dict[str, Any] | None = None  # the last triaged split of this folder
        self.changed = False
        if recheck:
            return
        try:
            data = json.loads(self.path.read_text())
            if data.get("format") == FORMAT and data.get("folder") == self.folder:
                self.entries, self.split = dict(data["entries"]), data.get("split")
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            pass  # no store yet, or an unreadable one: everything is checked again

    def _name(self, path: Path) -> str:
        text = str(path)
        return text[len(self.prefix) :] if text.startswith(self.prefix) else str(path.resolve())

    def get(self, path: Path, key: str | None) -> dict[str, Any] | None:
        entry = self.entries.get(self._name(path)) if key is not None else None
        return entry["verdict"] if isinstance(entry, dict) and entry.get("key") == key else None

    def put(self, path: Path, key: str | None, verdict: dict[str, Any]) -> None:
        if key is not None:
            self.entries[self._name(path)] = {"key": key, "verdict": verdict}
            self.changed = True

    def triaged(self, key: str, limit: int, decode: bool) -> PartDataIndex | None:
        """The split triaged under ``key`` before, if neither its folders nor any of its files changed."""
        kept = self.split
        if not isinstance(kept, dict) or kept.get("key") != key:
            return None
        try:
            if kept["folders"] != folder_state(Path(self.prefix)):
                return None
            index = index_from_json(kept["index"])
        except (KeyError, TypeError, ValueError):
            return None
        if any(file_key(e.path, limit, decode) != kept["files"].get(str(e.path)) for e in index.images):
            return None
        return index

    def keep_triaged(self, key: str, index: PartDataIndex, limit: int, decode: bool) -> None:
        """Remember the triaged ``index`` under ``key`` (one split per image folder)."""
        files = {str(e.path): file_key(e.path, limit, decode) for e in index.images}
        split = {
            "key": key,
            "folders": folder_state(Path(self.prefix)),
            "files": files,
            "index": index_to_json(index),
        }
        self.split, self.changed = split, True

    def save(self) -> None:
        """Write the store if anything was added; a cache that cannot be written is only a warning."""
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = {"format": FORMAT, "folder": self.folder, "entries": self.entries, "split": self.split}
            atomic_write_json(self.path, data, indent=None)  # 1600 images: 0.2 s, 1.5 s indented
            self.changed = False
        except OSError as e:
            logger.warning(
                "could not write the triage cache %s (%s): the next start checks again", self.path, e
            )


def split_key(annotation_file: Path, class_names: list[str] | None, pixel_limit: int, decode: bool) -> str:
    """What a triaged split depends on besides its image files: the annotation file's bytes, the
    run's class names (they map the categories), the pixel limit and the decode flag."""
    digest = hashlib.sha256(Path(annotation_file).read_bytes())
    digest.update(json.dumps([class_names, pixel_limit, decode]).encode())
    return digest.hexdigest()


def folder_state(image_dir: Path) -> dict[str, int]:
    """Modification times (ns) of ``image_dir`` and every folder below it: a file added to or removed
    from any of them changes one."""
    state = {}
    for folder, _, _ in os.walk(image_dir):
        try:
            state[os.path.relpath(folder, image_dir)] = os.stat(folder).st_mtime_ns
        except OSError:
            continue
    return state


def _floats(values: np.ndarray | None) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def _array(values: list[float] | None) -> np.ndarray | None:
    return None if values is None else np.asarray(values, np.float32)


def index_to_json(index: PartDataIndex) -> dict[str, Any]:
    """A triaged :class:`PartDataIndex` as JSON-ready data (:func:`index_from_json` reads it back)."""
    images = [
        {
            **{k: getattr(e, k) for k in ("image_id", "file_name", "height", "width")},
            "path": str(e.path),
            "parts": [
                [p.ann_id, p.label, _floats(p.box), p.segmentation, p.is_polygon, p.iscrowd, _floats(p.point)]
                for p in e.parts
            ],
        }
        for e in index.images
    ]
    return {
        "root": str(index.root),
        "split": index.split,
        "class_names": index.class_names,
        "category_ids": index.category_ids,
        "images": images,
        **{k: getattr(index, k) for k in ("skipped_images", "skipped_annotations", "repaired")},
    }


def index_from_json(data: dict[str, Any]) -> PartDataIndex:
    images = [
        ImageEntry(
            e["image_id"], e["file_name"], Path(e["path"]), e["height"], e["width"],
            [PartInstance(a, lab, _array(box), seg, poly, crowd, _array(pt)) for a, lab, box, seg, poly, crowd, pt in e["parts"]],
        )
        for e in data["images"]
    ]  # fmt: skip
    return PartDataIndex(
        Path(data["root"]), data["split"], data["class_names"], data["category_ids"], images,
        data["skipped_images"], data["skipped_annotations"], data["repaired"],
    )  # fmt: skip
