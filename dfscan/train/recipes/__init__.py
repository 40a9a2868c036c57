"""Training recipes, one module each (see `registry`): `triplet` (Kumar & Bhavsar 2020), `bce` and
`twostep` (Bondi et al. 2020), `multimetric` (Zhang et al. 2021). Every recipe ends with the same typed
checkpoint (`core.CheckpointMeta` + weights + head + val scores); `--bags K` trains K members on
balanced subsets (Kumar & Bhavsar) and ends with an ensemble checkpoint.

Importing this package imports no torch: the CLI builds its commands from the registry. The torch parts
(`Net`, `build_net`, `run_recipe`, ...) load on first use.
"""
from __future__ import annotations

from typing import Any

from dfscan.train.recipes.config import RecipeConfig
from dfscan.train.recipes.registry import NetShape, Option, RecipeSpec, get_spec, recipe_module, registry

RECIPES = ("triplet", "bce", "twostep", "multimetric")  # the built-in ones; registry() lists every recipe

_CORE = ("Net", "ImageEmbedder", "build_net", "run_recipe", "make_splits", "Split", "Objective",
         "TripletObjective", "CheckpointMeta", "_meta", "CACHE_SAFE_AUGMENTATIONS", "resolve_defaults")

__all__ = ["RECIPES", "RecipeConfig", "NetShape", "Option", "RecipeSpec", "get_spec", "recipe_module",
           "registry", *_CORE]


def __getattr__(name: str) -> Any:
    if name in _CORE:
        from dfscan.train.recipes import core
        return getattr(core, name)
    raise AttributeError(name)
