"""Strict, safe loading of SAM checkpoints: the one place that reads SAM weight files.

Official files (``sam_vit_b_01ec64.pth`` …) are plain state dicts saved with ``torch.save``; they are
read with ``weights_only=True`` so that no pickle can run code. ``.safetensors`` files (the shipped
tiny SAM) are read with safetensors. Every failure is a :class:`CheckpointError` that names the file
and, where it applies, the key.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..hashing import sha256_of

logger = logging.getLogger(__name__)

# Width of the image encoder -> SAM type (as in backbones.SAM_SPECS), to name a foreign checkpoint.
_ENCODER_WIDTH_TO_TYPE = {192: "vit_mini", 768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"SAM checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"SAM checkpoint is an empty file: {path}")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` without executing code; map every failure to CheckpointError."""
    path = Path(path)
    _require_file(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            # weights_only reports a forbidden object and plain garbage alike; tell them apart.
            forbidden = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
            if forbidden:
                raise CheckpointError(
                    f"{path}: refused to load: the file holds a Python object ({forbidden.group(1)}) "
                    f"other than tensors, which weights_only loading does not run"
                ) from None
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (unreadable pickle data)") from None
        except Exception as exc:
            # Arbitrary bytes reach torch's legacy (non-zip) reader, which fails with any error type
            # (RuntimeError, EOFError, KeyError ...).
            first_line = str(exc).split("\n", 1)[0]
            raise CheckpointError(
                f"{path}: not a complete PyTorch checkpoint (truncated or another kind of file: "
                f"{type(exc).__name__}: {first_line})"
            ) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (the official SAM layout)")
    return state


def guess_sam_type(state: dict[str, torch.Tensor]) -> str | None:
    """Name the variant a state dict belongs to: the ViTs by the width of their encoder; the tiny SAM
    and MobileSAM by their convolutional stems."""
    if "image_encoder.stem.0.weight" in state:
        return "tiny"
    if "image_encoder.patch_embed.seq.0.c.weight" in state:  # TinyViT's convolutional patch embedding
        return "vit_t"
    pos = state.get("image_encoder.pos_embed")
    if pos is None or pos.ndim != 4:
        return None
    return _ENCODER_WIDTH_TO_TYPE.get(int(pos.shape[-1]))


def load_into(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, expected_type: str) -> None:
    """Copy ``state`` into ``model``, refusing any missing or unexpected key or wrong shape."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        found = guess_sam_type(state)
        hint = (
            f" It looks like a {found} checkpoint: use --sam-type {found}."
            if found and found != expected_type
            else ""
        )
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), first '{missing[0]}'")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), first '{unexpected[0]}'")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} shape mismatch(es), first '{k}': file {tuple(state[k].shape)} vs "
                f"model {tuple(own[k].shape)}"
            )
        raise CheckpointError(f"{path} does not fit SAM {expected_type}: {'; '.join(parts)}.{hint}")
    model.load_state_dict(state, strict=True)


def check_sha256(path: str | Path, expected: str | None) -> str:
    """Return the file's sha256; raise if ``expected`` is given and differs."""
    _require_file(Path(path))
    digest = sha256_of(path)
    if expected is not None and digest.lower() != expected.lower().strip():
        raise CheckpointError(f"{path}: sha256 is {digest}, expected {expected}")
    return digest
