"""The recipe registry (torch-free): each module of this package that defines `SPEC` is a recipe.

A recipe module declares its own command-line options and defaults in `SPEC` and implements
`objective(cfg, net)` (its loss, val score and schedule hooks) and, where it fits a classifier after
training, `fit_head(...)`. `dfscan train <name>` is built from the spec; `core.run_recipe` runs any.
"""
from __future__ import annotations

import importlib
import math
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Option:
    """One command-line option of a recipe, mapped onto a `RecipeConfig` field."""
    name: str                           # parameter name (and RecipeConfig field unless `to_config`)
    flag: str                           # e.g. "--mode"
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    to_config: Callable[[Any], dict[str, Any]] | None = None  # value -> RecipeConfig fields
    valid: tuple[Callable[[Any], bool], str] | None = None  # (test, what it must be) beyond `choices`


# Common `Option.valid` rules.
AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
POSITIVE = (lambda v: math.isfinite(v) and v > 0, "a number above 0")


@dataclass(frozen=True)
class NetShape:
    """What the recipe puts after the backbone."""
    proj: bool = False                  # a projection to `proj_dim`
    normalize: bool = False             # L2-normalised embeddings
    head_out: int = 0                   # a linear head with this many logits (0: none)


@dataclass(frozen=True)
class RecipeSpec:
    name: str
    summary: str                        # the command's help
    paper: str
    net: NetShape
    options: tuple[Option, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)  # RecipeConfig values the recipe prefers
    head: str = "linear"                # checkpoint head kind: linear | sklearn
    module: str = ""


def _discover() -> dict[str, RecipeSpec]:
    from dfscan.train import recipes as package
    found: dict[str, RecipeSpec] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name in ("config", "registry", "core", "bagging"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, RecipeSpec):
            found[spec.name] = RecipeSpec(**{**spec.__dict__, "module": module.__name__})
    return found


_CACHE: dict[str, RecipeSpec] = {}


def registry() -> dict[str, RecipeSpec]:
    if not _CACHE:
        _CACHE.update(_discover())
    return _CACHE


def get_spec(name: str) -> RecipeSpec:
    specs = registry()
    if name not in specs:
        raise ValueError(f"unknown recipe {name!r}; valid: {', '.join(specs)}")
    return specs[name]


def recipe_module(name: str) -> Any:
    return importlib.import_module(get_spec(name).module)
