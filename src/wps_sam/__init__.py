"""wps-sam: weakly-supervised part segmentation on a frozen Segment Anything Model.

Public API (imported lazily so that ``import wps_sam`` stays fast):
    build_sam, PartPredictor, load_config, Config
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "build_sam": "wps_sam.sam.backbones",
    "PartPredictor": "wps_sam.predictor",
    "load_config": "wps_sam.config",
    "Config": "wps_sam.config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'wps_sam' has no attribute {name!r}")
