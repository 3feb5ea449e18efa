"""Pre-training of the tiny SAM foundation model on synthetic generic shapes (never on ToyParts)."""

from .shapes import ShapesConfig, SyntheticShapes, generate_scene
from .trainer import PretrainConfig, evaluate_prompted_miou, pretrain_tiny_sam

__all__ = [
    "PretrainConfig",
    "ShapesConfig",
    "SyntheticShapes",
    "evaluate_prompted_miou",
    "generate_scene",
    "pretrain_tiny_sam",
]
