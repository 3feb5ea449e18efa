"""Benchmark results as text: ratios measured side by side, and the table of BENCHMARKS.md."""

from __future__ import annotations

from typing import Any


def format_ratios(results: list[dict[str, Any]]) -> str:
    """Each result against the first, measured side by side: encoder images/s and whole-run time."""
    if len(results) < 2:
        return ""
    base = results[0]
    lines = []
    for r in results[1:]:
        encoder = r["encoder_img_s"] / base["encoder_img_s"]
        run = base["details"]["ours_total_s"] / r["details"]["ours_total_s"]
        lines.append(
            f"{r['settings']['sam_type']} vs {base['settings']['sam_type']}: encoder {encoder:.1f}x the images/s, "
            f"training run {run:.1f}x as fast (ours, {r['settings']['images']} x {r['settings']['epochs']})"
        )
    return "\n".join(lines)


def format_table(results: list[dict[str, Any]]) -> str:
    """A markdown table of benchmark results (BENCHMARKS.md)."""
    head = (
        "| device | SAM | N x K | train speedup | reference img/s | ours img/s | encoder img/s | "
        "encoder rel err | predict img/s | peak GPU GB |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in results:
        s = r["settings"]
        mem = "-" if r["peak_mem_gb"] is None else f"{r['peak_mem_gb']:.1f}"
        lines.append(
            f"| {r['device']} | {s['sam_type']} | {s['images']} x {s['epochs']} | "
            f"{r['train_speedup']:.1f}x | {r['reference_train_img_s']:.1f} | {r['train_img_s']:.1f} | "
            f"{r['encoder_img_s']:.1f} | {r['encoder_rel_err']:.1e} | {r['predict_img_s']:.1f} | {mem} |"
        )
    return "\n".join(lines)
