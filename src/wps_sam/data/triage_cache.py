"""The triage's image verdicts, kept between runs: a second train or eval on the same data decodes nothing.

A verdict (:class:`~wps_sam.data.checks.ImageVerdict`) depends on the file's bytes only, given the
pixel limit and whether the file was fully decoded. It is keyed by the file's path in its folder, its
size and modification time (ns), the pixel limit and the decode flag: a file that changes gets another key,
so a stale verdict is never read. The json is parsed again at every start (it holds the annotations,
which are not cached); only the decoding of the images is saved.

The verdicts of one image folder live in one JSON file under :func:`default_triage_dir`, named after
the folder's path and rewritten atomically. ``--recheck`` ignores them and stores fresh ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from wps_sam.atomic import atomic_write_json

logger = logging.getLogger(__name__)

FORMAT = "wps-sam-triage/1"


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
        self.changed = False
        if recheck:
            return
        try:
            data = json.loads(self.path.read_text())
            if data.get("format") == FORMAT and data.get("folder") == self.folder:
                self.entries = dict(data["entries"])
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

    def save(self) -> None:
        """Write the store if anything was added; a cache that cannot be written is only a warning."""
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, {"format": FORMAT, "folder": self.folder, "entries": self.entries})
            self.changed = False
        except OSError as e:
            logger.warning(
                "could not write the triage cache %s (%s): the next start checks again", self.path, e
            )
