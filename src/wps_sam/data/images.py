"""Reading images from disk as 8-bit RGB in the original frame.

The original frame is the image *as displayed*: EXIF orientation is applied, so that annotations
made on the displayed image line up. Every failure is a :class:`~wps_sam.errors.DataError` that
names the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from wps_sam.errors import DataError

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # these swap height and width
# Pillow's default MAX_IMAGE_PIXELS; it raises DecompressionBombError above twice that many pixels.
_DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3


def pixel_limit() -> int:
    """The most pixels an image may have before it counts as a decompression bomb.

    Twice ``PIL.Image.MAX_IMAGE_PIXELS`` (where Pillow itself refuses), or twice Pillow's default when
    another library set the limit to ``None``: a bomb must never reach the allocator.
    """
    return 2 * (Image.MAX_IMAGE_PIXELS or _DEFAULT_MAX_PIXELS)


def check_pixels(width: int, height: int, path: Path) -> None:
    """Raise :class:`DataError` if a ``width`` x ``height`` image (from its header) is a decompression bomb."""
    if width * height > pixel_limit():
        raise DataError(
            f"image {path} is a decompression bomb: {width}x{height} = {width * height} pixels, more than "
            f"{pixel_limit()} (raise PIL.Image.MAX_IMAGE_PIXELS if the image is genuine)"
        )


def _to_uint8(values: np.ndarray, bit_depth_max: float | None) -> np.ndarray:
    """Scale a high-bit-depth or float single-channel array to uint8 [H, W]."""
    values = values.astype(np.float64)
    peak = float(values.max()) if values.size else 0.0
    if bit_depth_max is None:  # "I" (32-bit int) or "F": guess the range from the data
        bit_depth_max = 1.0 if peak <= 1.0 else 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
    return np.clip(np.rint(values * (255.0 / bit_depth_max)), 0, 255).astype(np.uint8)


def _to_rgb(image: Image.Image) -> np.ndarray:
    """uint8 [H, W, 3] RGB of any PIL mode (alpha is dropped, as cv2.imread and SAM's demo do)."""
    if image.mode.startswith("I;16"):
        gray = _to_uint8(np.asarray(image), 65535.0)
    elif image.mode in ("I", "F"):
        gray = _to_uint8(np.asarray(image), None)
    else:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def read_image(path: Path) -> np.ndarray:
    """The image at ``path`` as uint8 [H, W, 3] RGB, EXIF orientation applied.

    Grayscale, RGBA, CMYK, palette and 16-bit images are converted to 8-bit RGB (16-bit values are
    scaled, not clipped).
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            check_pixels(*image.size, path)
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
    except FileNotFoundError as e:
        raise DataError(f"image {path} not found") from e
    except DataError:
        raise
    except Image.DecompressionBombError as e:
        raise DataError(f"image {path} is a decompression bomb: {e}") from e
    except Exception as e:  # decoders of corrupt files raise anything: struct.error, EOFError, IndexError ...
        raise DataError(f"image {path} cannot be read: {e}") from e
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise DataError(f"image {path} is empty ({rgb.shape})")
    return np.ascontiguousarray(rgb)


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of the image at ``path`` after EXIF orientation, from its header (no pixel decoding)."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            check_pixels(width, height, path)
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except FileNotFoundError as e:
        raise DataError(f"image {path} not found") from e
    except DataError:
        raise
    except Image.DecompressionBombError as e:
        raise DataError(f"image {path} is a decompression bomb: {e}") from e
    except Exception as e:  # as in read_image: a corrupt header can raise anything
        raise DataError(f"image {path} cannot be read: {e}") from e
    if orientation in _TRANSPOSED_ORIENTATIONS:
        height, width = width, height
    return height, width
