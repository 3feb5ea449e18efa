"""No DeprecationWarning from pycocotools under NumPy 2 reaches the user: every mask decode is quiet."""

from __future__ import annotations

import warnings

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from wps_sam.data.coco import instance_mask, load_split
from wps_sam.data.rle import decode_masks
from wps_sam.export import decode_rle, encode_rle
from wps_sam.synthetic.toyparts import generate_toyparts


def _mask() -> np.ndarray:
    mask = np.zeros((20, 30), bool)
    mask[3:9, 5:25] = True
    return mask


def test_pycocotools_itself_still_warns_so_the_guard_is_needed():
    rle = mask_utils.encode(np.asfortranarray(_mask().astype(np.uint8)))
    if int(np.__version__.split(".")[0]) < 2:
        pytest.skip("the warning is NumPy 2's")
    with pytest.warns(DeprecationWarning, match="__array__"):
        mask_utils.decode(rle)


def test_decoding_is_exact_and_quiet(tmp_path):
    mask = _mask()
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(decode_masks(rle), mask)
        assert decode_masks([rle, rle]).shape == (20, 30, 2)
        assert np.array_equal(decode_rle(encode_rle(mask)), mask)
        generate_toyparts(tmp_path, 1, 1, seed=3)
        split = load_split(tmp_path, "val")
        entry = split.images[0]
        masks = [instance_mask(p, entry.height, entry.width) for p in entry.parts]
    assert masks and all(m.any() for m in masks)
