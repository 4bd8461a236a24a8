"""Samplers as functions over a score function: ``fn(score_fn, x, schedule, *, callback,
generator, **knobs) -> SampleResult``."""

from scorelab.sampling.api import *  # noqa: F403
from scorelab.sampling.api import __all__  # noqa: F401
