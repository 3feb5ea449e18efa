"""benchmarks/input_scales.py: a shifted view's frame and its maps brought back to the unshifted grid."""

import torch
from benchmarks.input_scales import shifted, unshifted

SIDE, GRID = 64, 8  # an 8 px cell


def test_shifted_moves_the_frame_and_pads_with_zeros():
    frame = torch.arange(1.0, 1 + 3 * SIDE * SIDE).reshape(1, 3, SIDE, SIDE)
    right = shifted(frame, 3, 0)
    assert torch.equal(right[..., 3:], frame[..., :-3]) and not right[..., :3].any()
    up = shifted(frame, 0, -5)
    assert torch.equal(up[..., :-5, :], frame[..., 5:, :]) and not up[..., -5:, :].any()
    assert torch.equal(shifted(frame, 0, 0), frame)


def _maps(heat_logits, geometry):
    return {"heatmap": heat_logits, "geometry": geometry}


def test_a_whole_cell_shift_comes_back_cell_for_cell():
    torch.manual_seed(0)
    heat = torch.randn(2, 3, GRID, GRID)
    geometry = torch.rand(2, GRID, GRID, 4)
    # The view shifted one cell right sees the base cell j at its cell j + 1, its centres 8 px right.
    moved_heat = torch.roll(heat, 1, dims=-1)
    moved_geometry = torch.roll(geometry, 1, dims=2) + torch.tensor([8 / SIDE, 0, 0, 0])
    back = unshifted(_maps(moved_heat, moved_geometry), 8, 0, SIDE)
    inside = slice(0, GRID - 1)  # the last column reads the border
    assert torch.allclose(back["heatmap"][..., inside], heat[..., inside], atol=1e-4)
    assert torch.allclose(back["geometry"][:, :, inside], geometry[:, :, inside], atol=1e-6)


def test_half_a_cell_averages_the_two_neighbours_and_no_shift_is_the_identity():
    torch.manual_seed(1)
    heat, geometry = torch.randn(1, 2, GRID, GRID), torch.rand(1, GRID, GRID, 4)
    same = unshifted(_maps(heat, geometry), 0, 0, SIDE)
    assert torch.allclose(same["heatmap"], heat, atol=1e-4) and torch.allclose(same["geometry"], geometry)
    down = unshifted(_maps(heat, geometry), 0, 4, SIDE)
    probs = heat.sigmoid()
    assert torch.allclose(
        down["heatmap"].sigmoid()[..., :-1, :], (probs[..., :-1, :] + probs[..., 1:, :]) / 2, atol=1e-5
    )
    expected_y = (geometry[:, :-1, :, 1] + geometry[:, 1:, :, 1]) / 2 - 4 / SIDE
    assert torch.allclose(down["geometry"][:, :-1, :, 1], expected_y, atol=1e-6)
