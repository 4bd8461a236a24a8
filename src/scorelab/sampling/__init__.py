"""Samplers as functions over a score function: ``fn(score_fn, x, schedule, *, callback,
generator, **knobs) -> SampleResult``.

Common arguments: ``score_fn(x, cond)`` is σ-conditioned (cond = σ, (B,)) for the samplers on a
σ schedule and time-conditioned (cond = t) for those on an SDE; ``x`` (B, ...) is the start;
``callback`` is called after each step with a dict of the state (``i``, ``x``, and ``t`` or
``sigma``); ``generator`` is the source of all noise, on ``x``'s device (accepted and unused by
the deterministic ones). The :class:`SampleResult`'s ``nfe`` counts the score evaluations.
"""

from scorelab.sampling.api import *  # noqa: F403
from scorelab.sampling.api import __all__  # noqa: F401
