"""Gaussian mixtures whose mean lies far from 0 relative to σ_max, their exact VE models and how
far samples miss the modes; shared by tests/sampling/test_deterministic_start.py and
benchmarks/deterministic_start.py."""

from __future__ import annotations

import torch

from scorelab import toy
from scorelab.nets.precond import OracleScoreModel
from scorelab.schedules import max_pairwise_distance
from scorelab.sde import VESDE

FAR_MEAN_MIXTURES = {
    "2d-two-modes": toy.GaussianMixture(
        [0.3, 0.7], [[2.0, 10.0], [10.0, 4.0]], [[1.0, 0.7], [1.2, 1.0]]
    ),
    "2d-three-modes": toy.GaussianMixture(
        [0.15, 0.35, 0.5], [[-6.0, 3.0], [4.0, 8.0], [6.0, -4.0]], [0.5, 1.0, 0.8]
    ),
    "8d-two-modes": toy.GaussianMixture(
        [0.25, 0.75], [[3.0] * 8, [-1.0, 5.0, 6.0, 2.0, 7.0, 4.0, 0.0, 5.0]], [1.0, 0.8]
    ),
}


def ve_oracle(mix: toy.GaussianMixture) -> OracleScoreModel:
    """The default VE SDE of data=gmm: σ_min 0.01 and σ_max by NCSNv2's rule (the largest
    pairwise distance of 2000 training points, as `sigma_max: auto`)."""
    data = mix.sample(2000, generator=torch.Generator().manual_seed(0))
    return OracleScoreModel(mix, VESDE(0.01, round(max_pairwise_distance(data), 2), 1000))


def mode_errors(mix: toy.GaussianMixture, x: torch.Tensor) -> dict[str, float]:
    """The largest over modes of the weight error (absolute) and of the mean and spread errors
    (in units of that mode's std, per coordinate), each point assigned to its most probable
    component."""
    x = x.double()
    mu, s = mix.means[None], mix.stds[None]
    logp = (-0.5 * ((x[:, None] - mu) / s) ** 2 - s.log()).sum(-1) + mix.weights.log()[None]
    k = logp.argmax(1)
    out = {"weight": 0.0, "mean": 0.0, "spread": 0.0}
    for j in range(mix.num_components):
        part = x[k == j]
        out["weight"] = max(out["weight"], abs(len(part) / len(x) - mix.weights[j].item()))
        out["mean"] = max(out["mean"], ((part.mean(0) - mix.means[j]) / mix.stds[j]).abs().max())
        out["spread"] = max(out["spread"], (part.std(0) / mix.stds[j] - 1).abs().max())
    return {key: float(v) for key, v in out.items()}
