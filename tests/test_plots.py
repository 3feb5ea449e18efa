"""Training curves, per-class IoU and confusion charts; the scalar log's TensorBoard side."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from wps_sam.cli import main
from wps_sam.engine import scalars
from wps_sam.engine.scalars import ScalarLog
from wps_sam.plots import confusion_chart, per_class_iou_chart, training_curves

RESULT = {
    "miou": 0.5,
    "per_class": [
        {"name": "background", "iou": 0.9},
        {"name": "head", "iou": 0.4},
        {"name": "tail", "iou": None},
    ],
    "confusion": [[90, 5, 5], [10, 30, 0], [0, 0, 0]],
}


def test_charts_are_written(tmp_path):
    records = [
        {"step": s, "loss": 1.0 / s, "loss_ce": 0.5 / s, "lr": 1e-3, "match_recall": 0.5} for s in (1, 2, 3)
    ]
    records.append({"step": 3, "epoch": 0, "val_miou": 0.3, "val_macc": 0.4})
    for path in (
        training_curves(tmp_path / "curves.png", records),
        per_class_iou_chart(tmp_path / "iou.png", RESULT),
        confusion_chart(tmp_path / "confusion.svg", RESULT),
    ):
        assert path.stat().st_size > 0
    assert Image.open(tmp_path / "curves.png").size[0] > 400
    assert (tmp_path / "confusion.svg").read_text().startswith("<?xml")


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no training"):
        training_curves(tmp_path / "c.png", [{"step": 1}])
    with pytest.raises(ValueError, match="does not fit"):
        confusion_chart(tmp_path / "m.png", {**RESULT, "confusion": np.eye(2).tolist()})


def test_plot_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "metrics.jsonl does not exist" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{oops\n')
    assert main(["plot", str(tmp_path)]) == 2
    assert "line 2 is not JSON" in capsys.readouterr().err


def test_scalar_log_without_tensorboard_writes_the_json(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "torch.utils.tensorboard":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    log = ScalarLog(tmp_path)
    log.write({"step": 1, "loss": 0.5})
    log.close()
    assert log.writer is None and not (tmp_path / scalars.TB_DIR).exists()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "loss": 0.5}


def test_a_resumed_log_purges_later_events(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = ScalarLog(tmp_path)
    for step in (1, 2, 3):
        log.write({"step": step, "loss": float(step)})
    log.close()
    resumed = ScalarLog(tmp_path, resumed_step=1)  # killed after step 3, resumed from the state of step 1
    for step in (2, 3):
        resumed.write({"step": step, "loss": 10.0 * step})
    resumed.close()
    events = EventAccumulator(str(tmp_path / scalars.TB_DIR))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 1.0), (2, 20.0), (3, 30.0)]
