"""Settings for the evaluation tests; composing configs is shared with the other tests."""

from __future__ import annotations

from run_helpers import TOY_FAST as TOY_TRAIN
from run_helpers import compose_cfg

# Small toy settings: reference sizes and MMD kept tiny so every test runs in seconds.
TOY_EVAL = ["toy.n_reference=400", "toy.n_projections=64", "toy.mmd_max_n=400"]

__all__ = ["TOY_EVAL", "TOY_TRAIN", "compose_cfg"]
