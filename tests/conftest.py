"""Shared fixtures: a small SAM of the official structure with random weights (``vit_mini``: 256 px
input, 16x16 embedding) and seeding."""

import warnings

import pytest
import torch
from segment_anything.modeling import Sam

from wps_sam.sam.backbones import build_sam


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def mini_sam() -> Sam:
    """Frozen vit_mini SAM with random weights, built once per session; tests must not modify it."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return build_sam("vit_mini", "random")


@pytest.fixture(scope="session")
def sam_file(tmp_path_factory, mini_sam):
    """``mini_sam``'s weights as an official-layout checkpoint file (``--sam-checkpoint``)."""
    path = tmp_path_factory.mktemp("sam") / "sam_mini_random.pth"
    torch.save(mini_sam.state_dict(), path)
    return path


@pytest.fixture(autouse=True, scope="session")
def _private_embedding_cache(tmp_path_factory) -> None:
    """Tests never write to the user's embedding or triage cache (~/.cache/wps-sam)."""
    import os

    os.environ["WPS_SAM_CACHE"] = str(tmp_path_factory.mktemp("embedding-cache"))
    os.environ["WPS_SAM_TRIAGE_CACHE"] = str(tmp_path_factory.mktemp("triage-cache"))
