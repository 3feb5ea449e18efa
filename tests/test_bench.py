"""``wps-sam bench`` in its CPU mode (tiny SAM, a few images), and on CUDA when there is one."""

from __future__ import annotations

import json
import math

import pytest
import torch

from wps_sam.bench import RESULT_KEYS, format_ratios, format_table, run_benchmark
from wps_sam.config import PrompterConfig

SMALL = PrompterConfig(num_queries=4, hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1, dim_feedforward=64)


@pytest.fixture(autouse=True)
def _one_thread():
    """Timing loops on a shared CPU: one intra-op thread avoids oversubscription stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check(result: dict, images: int, epochs: int) -> None:
    assert set(RESULT_KEYS) <= set(result)
    for key in RESULT_KEYS[1:-1]:
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, key
    assert result["train_speedup"] == pytest.approx(result["train_img_s"] / result["reference_train_img_s"])
    details = result["details"]
    assert result["train_img_s"] == pytest.approx(images * epochs / details["ours_total_s"])
    assert details["ours_total_s"] == pytest.approx(details["cache_build_s"] + details["train_loop_s"])
    assert details["reference_measured_steps"] >= 1
    assert result["settings"]["weights"] == "random"


def test_cpu_mode_writes_the_result(tmp_path):
    result = run_benchmark(
        "cpu", "vit_mini", images=4, epochs=2, batch_size=2, out_dir=tmp_path, quick=True, prompter=SMALL
    )
    _check(result, 4, 2)
    assert result["device"] == "cpu" and result["peak_mem_gb"] is None
    assert result["encoder_rel_err"] < 1e-5  # float32 SDPA on the CPU
    assert not result["details"]["train_extrapolated"]  # 4 steps: run in full
    files = list(tmp_path.iterdir())
    # nothing else, no temporary file
    assert [f.name for f in files] == [f"cpu-vit_mini-{result['date']}.json"]
    written = json.loads(files[0].read_text())
    assert {k: written[k] for k in RESULT_KEYS} == {k: result[k] for k in RESULT_KEYS}
    table = format_table([written])
    assert table.count("\n") == 2 and "| cpu | vit_mini | 4 x 2 |" in table


def test_ratios_are_against_the_first_result():
    def result(kind, encoder_img_s, total_s):
        settings = {"sam_type": kind, "images": 8, "epochs": 1}
        return {"encoder_img_s": encoder_img_s, "details": {"ours_total_s": total_s}, "settings": settings}

    text = format_ratios([result("vit_b", 0.05, 400.0), result("vit_t", 0.5, 50.0)])
    assert text == "vit_t vs vit_b: encoder 10.0x the images/s, training run 8.0x as fast (ours, 8 x 1)"
    assert format_ratios([result("vit_b", 0.05, 400.0)]) == ""


def test_extrapolates_long_runs():
    result = run_benchmark(
        "cpu",
        "vit_mini",
        images=2,
        epochs=50,
        batch_size=2,
        out_dir=None,
        quick=True,
        prompter=SMALL,
        full_run_budget_s=0.0,
    )
    _check(result, 2, 50)
    assert result["details"]["train_extrapolated"] and result["details"]["train_measured_steps"] == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_vit_b_smoke(tmp_path):
    result = run_benchmark("cuda", "vit_b", images=16, epochs=2, out_dir=tmp_path, quick=True, compile=False)
    _check(result, 16, 2)
    assert result["peak_mem_gb"] > 0 and result["encoder_rel_err"] <= 1e-2
