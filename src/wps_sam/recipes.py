"""Named recipes: bundles of settings over the paper's numbers (the dataclass defaults of :mod:`.config`).

``paper`` is the official WPS-SAM training, unchanged. The others switch on remedies for the slow
convergence of a DETR-style prompter, or replace it by the dense prompter; the README's ablation
(``benchmarks/recipes.py``) measures each switch alone and together. A recipe is applied over the
defaults and under a config file and ``--set`` overrides, so any of its values can be changed.
"""

from __future__ import annotations

from typing import Any

RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {},
    # Every DETR remedy of modeling/queries.py at once.
    "detr-fast": {
        "prompter": {
            "aux_loss": True,
            "geometry_head": True,
            "two_stage": True,
            "groups": 3,
            "dn_groups": 3,
            "standardize_input": True,
        },
        # Matching by geometry (DETR's L1 5 and GIoU 2) rather than by 512-value token distances,
        # and "no part" down-weighted as in DETR.
        "loss": {"cost_class": 2.0, "cost_token": 0.0, "weight_token": 1.0, "eos_coef": 0.1},
        "train": {"augment": "hflip"},
        "inference": {"point_multimask": True},
    },
    # Per-cell heat maps and geometry (modeling/dense_prompter.py), the geometry learned by the cells
    # within 2 of each centre (TTFNet), heat-map bumps 1.5x as wide as CenterNet's, trained on the
    # images and their mirrors and read from both at test time (one more encoder pass per image:
    # docs/demo/NOTES.md).
    "dense": {
        "prompter": {"kind": "dense", "standardize_input": True, "dense_geometry_radius": 2},
        "loss": {"box_spread": 1.5},
        "train": {"augment": "hflip"},
        "inference": {"point_multimask": True, "flip_test": True},
    },
}
# What `wps-sam train` uses unless told otherwise: the recipe that wins the README's ablation.
DEFAULT_RECIPE = "dense"


def recipe_settings(name: str) -> dict[str, dict[str, Any]]:
    """The sections a recipe sets (a copy); raises KeyError naming the known recipes."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}")
    return {section: dict(values) for section, values in RECIPES[name].items()}
