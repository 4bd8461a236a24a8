"""EDM's deterministic/stochastic Heun sampler (Karras et al. 2022, Algorithms 1 and 2).

The sampler works on a σ-conditioned score s(x, σ) = ∇ log p_σ(x). The EDM denoiser is
D(x, σ) = x + σ² s(x, σ) (Tweedie) and the probability-flow ODE in σ is
dx/dσ = (x - D(x, σ))/σ = -σ s(x, σ). For a model trained on a VP or sub-VP SDE, wrap its
time-conditioned score with :func:`scorelab.sde.sigma_score_from_time_score` and start from
x ~ N(0, σ_0² I).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scorelab.sampling.base import (
    Callback,
    SampleResult,
    ScoreFn,
    counted,
    full_batch,
    randn_like,
    sigmas_to_zero,
)


def edm_heun(
    score_fn: ScoreFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> SampleResult:
    """EDM Heun sampler on a descending σ schedule ending at 0.

    With ``s_churn = 0`` this is Algorithm 1 (deterministic); otherwise Algorithm 2, which
    raises σ_i to σ̂ = (1 + γ) σ_i with γ = min(s_churn/N, √2 - 1) for σ_i in [s_tmin, s_tmax]
    and adds the matching noise before each step. Start: x ~ N(0, σ_0² I).
    ``nfe = 2N - 1`` (18 levels → 35); the callback also gets ``"denoised"``.

    Args:
        sigmas: (N,) or (N+1,) strictly descending noise levels, e.g.
            ``schedules.karras_sigmas(18)``; a trailing 0 is appended if absent, so N steps
            are taken.
        s_churn, s_tmin, s_tmax, s_noise: EDM's stochasticity knobs (S_churn >= 0,
            S_noise > 0).
    """
    score = counted(score_fn, x)
    sig = sigmas_to_zero(sigmas)
    if not s_churn >= 0:
        raise ValueError(f"s_churn must be >= 0, got {s_churn}")
    if not s_noise > 0:
        raise ValueError(f"s_noise must be > 0, got {s_noise}")
    n = len(sig) - 1

    def slope(x: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        """dx/dσ = (x - D)/σ = -σ s(x, σ), and the denoised D."""
        s_val = score(x, full_batch(sigma, x))
        return -sigma * s_val, x + sigma**2 * s_val

    for i in range(n):
        sigma, sigma_next = sig[i], sig[i + 1]
        # Increase the noise level temporarily (Algorithm 2, lines 4-6).
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * randn_like(x, generator)
        # Euler step.
        d, denoised = slope(x, sigma_hat)
        x_next = x + (sigma_next - sigma_hat) * d
        # 2nd-order correction, except at the last step (σ_{i+1} = 0).
        if sigma_next > 0:
            d_next, _ = slope(x_next, sigma_next)
            x_next = x + (sigma_next - sigma_hat) * 0.5 * (d + d_next)
        x = x_next
        if callback is not None:
            callback({"i": i, "x": x, "sigma": full_batch(sigma_next, x), "denoised": denoised})
    return score.result(x)
