"""``run_benchmark``: every measurement of the package docstring in one run, written as json."""

from __future__ import annotations

import dataclasses
import datetime
import logging
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_json
from ..config import Config, PrompterConfig
from .inference import PREDICT_IMAGE_SIZE, measure_encoder, measure_predict
from .timing import device_name
from .training import NUM_CLASSES, REL_POS_STD, TrainingRun, measure_ours, measure_reference, setup_run

logger = logging.getLogger(__name__)

RESULT_KEYS = (
    "device",
    "train_speedup",
    "reference_train_img_s",
    "train_img_s",
    "encoder_img_s",
    "encoder_rel_err",
    "predict_img_s",
    "peak_mem_gb",
)


def _settings(
    run: TrainingRun,
    cfg: Config,
    images: int,
    epochs: int,
    quick: bool,
    seed: int,
    reference_tf32: bool,
    runner: Any,
    compile: bool,
) -> dict[str, Any]:
    """What a benchmark result was measured with."""
    batch_size, dev = run.batch_size, run.dev
    return {
        "sam_type": cfg.sam.type,
        "images": images,
        "epochs": epochs,
        "batch_size": batch_size,
        "weights": "random",
        "rel_pos_std": REL_POS_STD,
        "num_classes": NUM_CLASSES,
        "prompter": dataclasses.asdict(cfg.prompter),
        "quick": quick,
        "seed": seed,
        "reference": "segment-anything attention, float32 "
        f"({'TF32' if reference_tf32 else 'float32'} matmuls, TF32 cuDNN convolutions), per-image loop",
        "ours": f"cache built once ({runner.precision}, eager), train_step with amp={dev.type == 'cuda'}",
        "encoder": f"{runner.precision}, compile={compile}, batch {batch_size}",
        "predict": f"PartPredictor, {PREDICT_IMAGE_SIZE[0]}x{PREDICT_IMAGE_SIZE[1]} uint8 images, "
        f"encoder {runner.precision}, compile={compile}",
    }


def run_benchmark(
    device: str = "cuda",
    sam_type: str = "vit_b",
    images: int = 256,
    epochs: int = 20,
    batch_size: int = 8,
    out_dir: str | Path | None = Path("benchmarks/results"),
    quick: bool = False,
    compile: bool | None = None,
    prompter: PrompterConfig | None = None,
    full_run_budget_s: float = 300.0,
    reference_tf32: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure everything the module docstring lists; write and return the result.

    Args:
        device: ``cuda``, ``cuda:N`` or ``cpu`` (the CPU mode: use ``sam_type="vit_mini"``, small N, K).
        sam_type: SAM variant (random weights).
        images, epochs, batch_size: N, K and the batch size of the training comparison.
        out_dir: where the json goes; ``None`` writes nothing.
        quick: time fewer steps and iterations (smoke runs, the CPU test).
        compile: ``torch.compile`` the encoder for ``encoder_img_s`` and prediction (default: on CUDA).
        prompter: the prompter's configuration (default: the paper's).
        full_run_budget_s: run our whole K-epoch loop when it is estimated to take at most this.
        reference_tf32: let the reference's float32 matmuls use TF32. The official code leaves
            PyTorch's default (float32 matmuls, TF32 convolutions), which the reference follows.
    """
    from ..sam.encoder import EncoderRunner

    dev = torch.device(device)
    compile = dev.type == "cuda" if compile is None else compile
    run, cfg, gen = setup_run(dev, sam_type, images, epochs, batch_size, quick, prompter, seed)
    model = run.model

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    details: dict[str, Any] = measure_reference(run, reference_tf32)
    if dev.type == "cuda":  # peak_mem_gb is ours: cache, training, encoder and prediction
        details["reference_peak_mem_gb"] = torch.cuda.max_memory_allocated(dev) / 1e9
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    runner = EncoderRunner(model.image_encoder)  # accelerates in place; eager for the cache build
    details.update(measure_ours(run, runner, full_run_budget_s))
    encoder = measure_encoder(model.image_encoder, run.pool[:batch_size].to(dev), dev, compile, quick)
    if encoder["module"] is not None:  # the predictor runs the same compiled module
        model.image_encoder = encoder["module"]
    predict_img_s = measure_predict(model, cfg, dev, batch_size, quick, gen)
    details.update(encoder_img_s_eager=encoder["img_s_eager"], compile_s=encoder["compile_s"])

    reference_s, ours_s = details["reference_total_s"], details["ours_total_s"]
    result: dict[str, Any] = {
        "device": device_name(dev),
        "train_speedup": reference_s / ours_s,
        "reference_train_img_s": epochs * images / reference_s,
        "train_img_s": epochs * images / ours_s,
        "encoder_img_s": encoder["img_s"],
        "encoder_rel_err": encoder["rel_err"],
        "predict_img_s": predict_img_s,
        "peak_mem_gb": torch.cuda.max_memory_allocated(dev) / 1e9 if dev.type == "cuda" else None,
        "settings": _settings(run, cfg, images, epochs, quick, seed, reference_tf32, runner, compile),
        "details": details,
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }
    if out_dir is not None:
        path = Path(out_dir) / f"{result['device']}-{sam_type}-{result['date']}.json"
        atomic_write_json(path, result)
        result["path"] = str(path)
        logger.info("wrote %s", path)
    return result
