"""Pre-training of the tiny SAM foundation model: generic shapes with class-agnostic masks, and
image-level object labels of the ToyParts world (never a part label, box or mask)."""

from .data import BatchConfig
from .evaluation import evaluate_coco_miou, evaluate_prompted_miou
from .prompts import PromptConfig
from .trainer import PretrainConfig, pretrain_tiny_sam

__all__ = [
    "BatchConfig",
    "PretrainConfig",
    "PromptConfig",
    "evaluate_coco_miou",
    "evaluate_prompted_miou",
    "pretrain_tiny_sam",
]
