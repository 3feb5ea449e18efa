"""The scalars of a training run: ``metrics.jsonl`` always, and TensorBoard event files under
``RUN/tb/`` when tensorboard is installed (``pip install tensorboard``; ``tensorboard --logdir RUN/tb``).

Training records (``loss``, every loss term, ``match_recall``, ``lr`` ...) go to ``train/<name>``,
validation records (``val_miou``, ``val_macc``) to ``val/<name>``, at the record's step. A resumed run
purges the events after its resumed step, as :func:`.run_dir.drop_metrics_after` does for the json.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from . import run_dir

logger = logging.getLogger(__name__)

TB_DIR = "tb"
_NOT_SCALARS = ("step", "epoch")


class ScalarLog:
    """Writes each record of the run in ``run`` (main process only); ``close`` when training ends."""

    def __init__(self, run: Path, resumed_step: int = 0) -> None:
        self.run = run
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional: metrics.jsonl and `wps-sam plot` need nothing
            logger.info("tensorboard is not installed: no event files (metrics.jsonl is written)")
            return
        self.writer = SummaryWriter(str(run / TB_DIR), purge_step=resumed_step + 1 if resumed_step else None)

    def write(self, record: dict[str, Any]) -> None:
        run_dir.append_metrics(self.run, record)
        if self.writer is None:
            return
        for key, value in record.items():
            if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            tag = f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"
            self.writer.add_scalar(tag, value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
