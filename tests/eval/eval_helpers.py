"""Settings for the evaluation tests; composing configs is shared with the other tests."""

from __future__ import annotations

import math

import torch

from run_helpers import TOY_FAST as TOY_TRAIN
from run_helpers import compose_cfg

# Small toy settings: reference sizes and MMD kept tiny so every test runs in seconds.
TOY_EVAL = ["toy.n_reference=400", "toy.n_projections=64", "toy.mmd_max_n=400"]

# NCSN's toy mixture, written out here so expected values do not come from the code under test.
NCSN_WEIGHTS, NCSN_MEANS, NCSN_STD = (0.2, 0.8), ((-5.0, -5.0), (5.0, 5.0)), 1.0


def mixture_logpdf(
    x: torch.Tensor, weights=NCSN_WEIGHTS, means=NCSN_MEANS, std: float = NCSN_STD
) -> torch.Tensor:
    """log p(x) of the isotropic Gaussian mixture sum_k w_k N(mu_k, std² I), (N,) float64."""
    x = x.double().flatten(1)
    d = x.shape[1]
    mu = torch.tensor(means, dtype=torch.float64)
    sq = ((x[:, None, :] - mu[None]) ** 2).sum(-1)  # (N, K)
    log_norm = -0.5 * d * math.log(2 * math.pi * std**2)
    logw = torch.tensor(weights, dtype=torch.float64).log()
    return torch.logsumexp(logw + log_norm - sq / (2 * std**2), dim=1)


def ncsn_mixture_entropy() -> float:
    """Entropy (nats) of NCSN's mixture: the modes are 14 std apart, so it is that of one
    2-D unit Gaussian, 1 + ln 2π, plus that of the weights (their overlap is below 1e-40)."""
    w = torch.tensor(NCSN_WEIGHTS, dtype=torch.float64)
    return 1 + math.log(2 * math.pi) - float((w * w.log()).sum())


__all__ = ["TOY_EVAL", "TOY_TRAIN", "compose_cfg", "mixture_logpdf", "ncsn_mixture_entropy"]
