"""Palette, overlays with legend, grids and the bar chart."""

import numpy as np
import pytest
from PIL import Image

from wps_sam.viz import bar_chart, overlay, overlay_grid, palette, save_overlay


def test_palette_is_fixed_and_distinct() -> None:
    colours = palette(60)
    assert colours.shape == (60, 3) and colours.dtype == np.uint8
    assert colours[0].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in colours.tolist()}) == 60
    assert np.array_equal(palette(7), colours[:7])


def _scene() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((32, 40, 3), 100, dtype=np.uint8)
    labels = np.zeros((32, 40), dtype=np.int64)
    labels[4:12, 4:20] = 1
    labels[16:28, 10:30] = 3
    return image, labels


def test_overlay_shape_blend_boundaries_and_legend() -> None:
    image, labels = _scene()
    names = ["head", "body", "tail"]
    out = overlay(image, labels, names, alpha=0.5)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] >= 32 and out.shape[1] > 40  # legend panel on the right
    colours = palette(4)
    assert np.array_equal(out[0, 0], image[0, 0])  # background untouched
    inside = np.rint(0.5 * 100 + 0.5 * colours[1].astype(float)).astype(np.uint8)
    assert np.array_equal(out[8, 10], inside)
    assert out[3, 10].tolist() == [255, 255, 255]  # boundary above the part
    panel = out[:, 40:].reshape(-1, 3)
    present = {tuple(c) for c in panel.tolist()}
    assert tuple(colours[1].tolist()) in present and tuple(colours[3].tolist()) in present
    assert tuple(colours[2].tolist()) not in present  # "body" is absent: not in the legend


def test_overlay_without_parts_has_no_legend() -> None:
    image, _ = _scene()
    out = overlay(image, np.zeros((32, 40), dtype=np.int64), ["a"])
    assert np.array_equal(out, image)
    with pytest.raises(ValueError):
        overlay(image, np.full((32, 40), 5), ["a"])


def test_save_overlay_and_grid(tmp_path) -> None:
    image, labels = _scene()
    path = save_overlay(tmp_path / "o.png", image, labels, ["head", "body", "tail"])
    with Image.open(path) as saved:
        assert saved.format == "PNG"
    a = overlay(image, labels, ["head", "body", "tail"])
    grid = overlay_grid([[a, image], [image]], titles=["pred", "image"], gap=2)
    assert grid.dtype == np.uint8 and grid.shape[1] == 2 + a.shape[1] + 2 + 40 + 2
    assert grid.shape[0] > 2 + a.shape[0] + 2 + 32 + 2  # title strip on top


def test_bar_chart_written(tmp_path) -> None:
    path = bar_chart(
        tmp_path / "chart.png",
        {"WPS-SAM": {"miou": 0.68, "macc": 0.8}, "SAM box": {"miou": 0.5, "macc": None}},
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["chart.png"]
