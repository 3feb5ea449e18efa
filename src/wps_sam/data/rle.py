"""pycocotools' mask decoding without its NumPy 2 DeprecationWarning.

pycocotools' Cython ``decode`` builds its output through an ``__array__`` that lacks NumPy 2's ``copy``
keyword, so every call warns (``__array__ implementation doesn't accept a copy keyword``). The result is
right; the warning is noise that would reach every user on every mask. All of wps-sam decodes here.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils


def decode_masks(rle: dict[str, Any] | list[dict[str, Any]]) -> np.ndarray:
    """``pycocotools.mask.decode``, quietly: one compressed RLE -> uint8 [H, W]; a list -> [H, W, N]."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        return mask_utils.decode(rle)
