"""Noise-level schedules: NCSN's geometric σ, NCSNv2's rules for choosing it, and EDM's;
and the moment-matched start of a deterministic sampler. (NCSN's discrete levels as a noise
process are :class:`scorelab.sde.NoiseLevels`.)

All schedules are returned in *descending* order (the order samplers visit them).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scorelab.utils import check_positive


def geometric_sigmas(sigma_max: float, sigma_min: float, num_scales: int) -> Tensor:
    """σ_1 > … > σ_L, geometric between ``sigma_max`` and ``sigma_min`` (NCSN), shape (L,)."""
    check_positive("sigma_min", sigma_min)
    if num_scales < 1 or int(num_scales) != num_scales:
        raise ValueError(f"num_scales must be an integer >= 1, got {num_scales}")
    if num_scales == 1:
        if sigma_max != sigma_min:
            raise ValueError("num_scales=1 needs sigma_max == sigma_min; use num_scales >= 2")
        return torch.tensor([float(sigma_max)])
    if not sigma_max > sigma_min:
        raise ValueError(
            f"sigma_max must be > sigma_min = {sigma_min}, got sigma_max = {sigma_max}"
        )
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), int(num_scales)))


def karras_sigmas(
    num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> Tensor:
    """EDM schedule σ_i = (σ_max^{1/ρ} + i/(n-1) (σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ, shape (n,)."""
    check_positive("sigma_min", sigma_min)
    check_positive("rho", rho)
    if not sigma_max > sigma_min:
        raise ValueError(f"sigma_max must be > sigma_min = {sigma_min}, got {sigma_max}")
    if num_steps < 2:
        raise ValueError(f"num_steps must be >= 2 for the Karras schedule, got {num_steps}")
    ramp = torch.linspace(0, 1, int(num_steps), dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return ((hi + ramp * (lo - hi)) ** rho).float()


def moment_matched_start(data: Tensor, sigma: float, alpha: float = 1.0) -> tuple[Tensor, Tensor]:
    """``(mean, std)`` per coordinate of alpha·x_0 + sigma·z from data samples (N >= 2, ...):
    alpha·E[x_0] and sqrt(alpha²·Var[x_0] + sigma²), each of shape ``data.shape[1:]``.

    The Gaussian start of a deterministic sampler that removes the bias of N(0, σ_max² I)
    (:mod:`scorelab.sampling.start`); ``alpha = 1`` and ``sigma = σ_max`` for VE and EDM-Heun,
    a VP SDE's (alpha, std) at T for its own ODE.
    """
    check_positive("sigma", sigma)
    check_positive("alpha", alpha)
    if data.ndim < 1 or data.shape[0] < 2:
        raise ValueError(f"need (N, ...) data with N >= 2 samples, got shape {tuple(data.shape)}")
    x = data.double()
    mean = alpha * x.mean(0)
    std = (alpha**2 * x.var(0) + sigma**2).sqrt()
    return mean.to(data.dtype), std.to(data.dtype)


# ---------------------------------------------------------------------------------------------
# NCSNv2 (Song & Ermon 2020), Techniques 1, 2 and 4.
# ---------------------------------------------------------------------------------------------


def max_pairwise_distance(data: Tensor, chunk: int = 1024) -> float:
    """Technique 1: σ_1 = max_{i,j} ||x_i - x_j||. ``data`` is (N, ...); computed in chunks."""
    x = data.reshape(data.shape[0], -1).double()
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 data points for a pairwise distance, got {x.shape[0]}")
    best = 0.0
    for i in range(0, x.shape[0], chunk):
        best = max(best, torch.cdist(x[i : i + chunk], x).max().item())
    return best


def _normal_cdf(v: float) -> float:
    return 0.5 * (1.0 + math.erf(v / math.sqrt(2.0)))


def ncsnv2_gamma(dim: int, C: float = 0.5) -> float:
    """Technique 2: the ratio γ = σ_{i-1}/σ_i > 1 solving
    Φ(√(2D)(γ-1) + 3γ) - Φ(√(2D)(γ-1) - 3γ) = C, found by bisection.
    """
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if not 0 < C < _normal_cdf(3) - _normal_cdf(-3):
        raise ValueError(f"C must be in (0, 0.9973), got {C}")
    r = math.sqrt(2 * dim)

    def f(g: float) -> float:
        return _normal_cdf(r * (g - 1) + 3 * g) - _normal_cdf(r * (g - 1) - 3 * g) - C

    lo, hi = 1.0, 2.0
    while f(hi) > 0:
        hi *= 2
        if hi > 1e12:
            # With √(2D) <= 3 the interval always holds [-√(2D), 3]: the overlap never drops to C.
            raise ValueError(
                f"no ratio gamma > 1 brings the overlap down to C = {C} for dim = {dim}; "
                "Technique 2 needs sqrt(2 dim) > 3 (dim >= 5) for C < 0.92. "
                "For low-dimensional data choose num_scales directly (geometric_sigmas)"
            )
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def ncsnv2_num_scales(sigma_max: float, sigma_min: float, dim: int, C: float = 0.5) -> int:
    """Number of geometric scales L so consecutive ratios are at most γ(D, C)."""
    check_positive("sigma_min", sigma_min)
    if not sigma_max > sigma_min:
        raise ValueError(f"sigma_max must be > sigma_min = {sigma_min}, got {sigma_max}")
    gamma = ncsnv2_gamma(dim, C)
    return int(math.ceil(math.log(sigma_max / sigma_min) / math.log(gamma))) + 1


def langevin_variance_ratio(step_size: float, gamma: float, sigma_min: float, T: int) -> float:
    """NCSNv2 Proposition 3: s_T²/σ_i² after T Langevin steps at level i, with step
    α_i = ε σ_i²/σ_L² and the update x ← x + α s + √(2α) z. ``step_size`` is ε.
    """
    e = step_size / sigma_min**2
    a = (1 - e) ** 2
    base = 2 * e / (1 - a) if a != 1 else 1.0
    return a**T * (gamma**2 - base) + base


def ncsnv2_step_size(gamma: float, sigma_min: float, T: int) -> float:
    """Technique 4: the ε that brings the variance ratio closest to 1 for T steps per level.

    The ratio lies between its fixed point 2e/(1-(1-e)²) > 1 and γ² (e = ε/σ_L²), so it never
    reaches 1 exactly; we minimise |ratio - 1| over log ε (grid, then golden-section refinement).
    """
    if T < 1:
        raise ValueError(f"T (steps per noise level) must be >= 1, got {T}")
    if not gamma > 1:
        raise ValueError(f"gamma must be > 1, got {gamma}")

    def f(log_eps: float) -> float:
        return abs(langevin_variance_ratio(math.exp(log_eps), gamma, sigma_min, T) - 1.0)

    lo, hi = math.log(1e-10 * sigma_min**2), math.log(0.999 * sigma_min**2)
    grid = [lo + (hi - lo) * k / 2000 for k in range(2001)]
    k = min(range(len(grid)), key=lambda j: f(grid[j]))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, 2000)]
    inv_phi = (math.sqrt(5) - 1) / 2
    for _ in range(100):
        c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
        a, b = (a, d) if f(c) < f(d) else (c, b)
    return math.exp(0.5 * (a + b))


def ncsnv2_schedule(
    data: Tensor, sigma_min: float = 0.01, C: float = 0.5, T: int = 5
) -> dict[str, float]:
    """All NCSNv2 choices for a data set ``(N, ...)``: σ_max, L, γ and the step size."""
    dim = data[0].numel()
    sigma_max = max_pairwise_distance(data)
    L = ncsnv2_num_scales(sigma_max, sigma_min, dim, C)
    gamma = (sigma_max / sigma_min) ** (1 / (L - 1))
    return {
        "sigma_max": sigma_max,
        "sigma_min": sigma_min,
        "num_scales": L,
        "gamma": gamma,
        "step_size": ncsnv2_step_size(gamma, sigma_min, T),
        "T": T,
    }
