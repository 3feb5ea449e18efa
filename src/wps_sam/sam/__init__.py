"""SAM backbones: the official variants and the tiny SAM, strictly loaded."""

from .backbones import SAM_SPECS, build_sam, freeze

__all__ = ["SAM_SPECS", "build_sam", "freeze"]
