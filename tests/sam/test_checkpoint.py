"""Strict, safe SAM checkpoint loading: official layouts load unchanged, everything else is refused."""

import hashlib
import pathlib
import pickle
import random
import warnings

import pytest
import torch
from safetensors.torch import save_file

from wps_sam.errors import CheckpointError
from wps_sam.sam.backbones import build_sam
from wps_sam.sam.checkpoint import guess_sam_type, load_into


class TouchOnUnpickle:
    """A pickle payload: unpickling it runs code (creates ``marker``)."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def assert_same_tensors(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    assert own.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(own[key], value), key


@pytest.fixture(scope="module")
def vit_b_file(tmp_path_factory):
    """An official-layout vit_b checkpoint (random weights) and the model it was saved from."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = build_sam("vit_b", "random")
    path = tmp_path_factory.mktemp("vit_b") / "sam_vit_b.pth"
    torch.save(model.state_dict(), path)
    return path, model


@pytest.fixture
def tiny_state(mini_sam) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in mini_sam.state_dict().items()}


def test_official_layout_loads_unchanged(tiny_state, tmp_path):
    path = tmp_path / "sam_tiny.pth"
    torch.save(tiny_state, path)
    sam = build_sam("vit_mini", path)
    assert_same_tensors(sam, tiny_state)
    assert sam.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not sam.training and not any(p.requires_grad for p in sam.parameters())


def test_official_vit_b_layout_loads_unchanged(vit_b_file):
    path, saved = vit_b_file
    assert_same_tensors(build_sam("vit_b", path), saved.state_dict())


def test_safetensors_loads_unchanged(tiny_state, tmp_path):
    path = tmp_path / "sam_tiny.safetensors"
    save_file(tiny_state, str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    sam = build_sam("vit_mini", path, sha256=digest.upper())
    assert_same_tensors(sam, tiny_state)
    assert sam.checkpoint_sha256 == digest


def test_sha256_mismatch_is_refused(tiny_state, tmp_path):
    path = tmp_path / "sam_tiny.pth"
    torch.save(tiny_state, path)
    with pytest.raises(CheckpointError, match="sha256") as info:
        build_sam("vit_mini", path, sha256="0" * 64)
    assert str(path) in str(info.value) and hashlib.sha256(path.read_bytes()).hexdigest() in str(info.value)


def _drop_key(state):
    del state["mask_decoder.iou_token.weight"]
    return "mask_decoder.iou_token.weight"


def _add_key(state):
    state["mask_decoder.extra.weight"] = torch.zeros(3)
    return "mask_decoder.extra.weight"


def _reshape_key(state):
    state["prompt_encoder.no_mask_embed.weight"] = torch.zeros(1, 128)
    return "prompt_encoder.no_mask_embed.weight"


@pytest.mark.parametrize(
    "corrupt,what",
    [(_drop_key, "missing key"), (_add_key, "unexpected key"), (_reshape_key, "shape mismatch")],
)
def test_mismatched_keys_are_named(tiny_state, tmp_path, corrupt, what):
    key = corrupt(tiny_state)
    path = tmp_path / "bad.pth"
    torch.save(tiny_state, path)
    with pytest.raises(CheckpointError, match=what) as info:
        build_sam("vit_mini", path)
    assert str(path) in str(info.value) and f"'{key}'" in str(info.value)
    assert "--sam-type" not in str(info.value)


def test_vit_b_file_as_tiny_suggests_sam_type(vit_b_file):
    path, _ = vit_b_file
    for kind in ("vit_mini", "tiny"):
        with pytest.raises(CheckpointError, match="use --sam-type vit_b") as info:
            build_sam(kind, path)
        assert str(path) in str(info.value) and f"does not fit SAM {kind}" in str(info.value)


def test_tiny_state_into_vit_b_is_refused(vit_b_file, tiny_state):
    # load_into is what build_sam calls; reusing the fixture's vit_b saves building another one.
    _, vit_b = vit_b_file
    with pytest.raises(CheckpointError, match=r"sam_tiny\.pth does not fit SAM vit_b") as info:
        load_into(vit_b, tiny_state, "sam_tiny.pth", "vit_b")
    assert "image_encoder" in str(info.value) and "use --sam-type vit_mini" in str(info.value)


@pytest.mark.parametrize("width,kind", [(192, "vit_mini"), (768, "vit_b"), (1024, "vit_l"), (1280, "vit_h")])
def test_guess_sam_type_from_encoder_width(width, kind):
    assert guess_sam_type({"image_encoder.pos_embed": torch.zeros(1, 4, 4, width)}) == kind
    assert guess_sam_type({"image_encoder.pos_embed": torch.zeros(1, 4, 4, 100)}) is None
    assert guess_sam_type({}) is None


def test_guess_sam_type_knows_the_tiny_sam(recwarn):
    state = build_sam("tiny", "random").state_dict()
    assert guess_sam_type(state) == "tiny"


def _truncated(path, state):
    torch.save(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random_bytes(path, state):
    path.write_bytes(random.Random(0).randbytes(4096))


def _text(path, state):
    path.write_text("this is not a checkpoint\n")


def _empty(path, state):
    path.write_bytes(b"")


def _not_tensors(path, state):
    torch.save({"image_encoder.pos_embed": 1.0}, path)


@pytest.mark.parametrize(
    "write,message",
    [
        (_truncated, "truncated"),
        (_random_bytes, "not a PyTorch checkpoint"),
        (_text, "not a complete PyTorch checkpoint"),
        (_empty, "empty file"),
        (_not_tensors, "expected a state dict of tensors"),
    ],
)
def test_unreadable_files_are_refused(tiny_state, tmp_path, write, message):
    path = tmp_path / "sam_tiny.pth"
    write(path, tiny_state)
    with pytest.raises(CheckpointError, match=message) as info:
        build_sam("vit_mini", path)
    assert str(path) in str(info.value)


def test_unreadable_safetensors_is_refused(tmp_path):
    path = tmp_path / "sam_tiny.safetensors"
    path.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as info:
        build_sam("vit_mini", path)
    assert str(path) in str(info.value)


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "code_ran"
    # The payload is live: plain unpickling runs it.
    pickle.loads(pickle.dumps(TouchOnUnpickle(marker)))
    assert marker.exists()
    marker.unlink()

    path = tmp_path / "evil.pth"
    torch.save({"image_encoder.pos_embed": TouchOnUnpickle(marker)}, path)
    with pytest.raises(CheckpointError, match="refused to load") as info:
        build_sam("vit_mini", path)
    assert not marker.exists()
    assert str(path) in str(info.value) and "Python object" in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(CheckpointError, match="not found") as info:
        build_sam("vit_mini", path)
    assert str(path) in str(info.value)


def test_unknown_kind():
    with pytest.raises(CheckpointError, match=r"unknown SAM type 'vit_x'.*vit_b"):
        build_sam("vit_x", "random")


def test_official_kind_needs_a_checkpoint():
    with pytest.raises(CheckpointError, match="--sam-checkpoint"):
        build_sam("vit_b", None)
