"""Stochastic differential equations of the score SDE framework (Song et al. 2021).

Each SDE is a small object over tensors of any shape ``(B, ...)``. Time ``t`` is ``(B,)`` in
``[0, T]``; per-sample scalars are broadcast with :func:`scorelab.utils.append_dims`.

All three SDEs have affine Gaussian transition kernels, ``x_t = alpha(t) x_0 + std(t) z``. The ratio
``sigma(t) = std(t) / alpha(t)`` is the equivalent variance-exploding noise level, which lets
σ-conditioned samplers (annealed Langevin, EDM-Heun) run on any of them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from scorelab.utils import append_dims, flat_sum

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def _check_N(N: int) -> int:
    if isinstance(N, bool) or int(N) != N or N < 1:
        raise ValueError(f"N must be an integer >= 1 (number of discretisation steps), got {N}")
    return int(N)


class SDE(ABC):
    """dx = f(x, t) dt + g(t) dw on t in [0, T], discretised with N steps."""

    T: float = 1.0

    def __init__(self, N: int) -> None:
        self.N = _check_N(N)

    # ----- the continuous process -----
    @abstractmethod
    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Drift f(x, t) shaped like ``x`` and diffusion g(t) of shape (B,)."""

    @abstractmethod
    def marginal_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha(t), std(t))``, each (B,), with x_t = alpha x_0 + std z."""

    def marginal_prob(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (shaped like ``x``) and std (B,) of p_0t(x_t | x_0 = x)."""
        alpha, std = self.marginal_coeffs(t)
        return append_dims(alpha, x.ndim) * x, std

    def sigma(self, t: Tensor) -> Tensor:
        """Equivalent VE noise level std(t)/alpha(t), (B,)."""
        alpha, std = self.marginal_coeffs(t)
        return std / alpha

    @abstractmethod
    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        """Inverse of :meth:`sigma`."""

    # ----- the prior -----
    @property
    @abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior at t = T."""

    def prior_sampling(
        self,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return z * self.prior_std

    def prior_logp(self, z: Tensor) -> Tensor:
        """log N(z; 0, prior_std² I), summed over all but the batch dim -> (B,)."""
        D = z[0].numel()
        s2 = self.prior_std**2
        return -0.5 * D * math.log(2 * math.pi * s2) - flat_sum(z**2) / (2 * s2)

    # ----- discretisation -----
    def timestep_index(self, t: Tensor) -> Tensor:
        """Index i in [0, N-1] of the discrete step at or below ``t`` (B,): floor(t (N-1)/T), as
        the official code's truncation, with a 1e-4 guard so float error at a grid point
        (t = i T/(N-1) computed as 998.99998) does not drop a step."""
        return (t * (self.N - 1) / self.T + 1e-4).floor().long().clamp(0, self.N - 1)

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """One forward step x_{i+1} = x_i + f_i + G_i z. Default: Euler–Maruyama with dt = T/N."""
        dt = self.T / self.N
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * math.sqrt(dt)

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (or the probability-flow ODE) driven by ``score_fn(x, t)``."""
        return ReverseSDE(self, score_fn, probability_flow)

    def describe(self) -> dict:
        return {"name": type(self).__name__, "N": self.N}


@dataclass
class ReverseSDE:
    """dx = [f - c g² ∇log p_t] dt + [g if SDE else 0] dw̄, c = 1 (SDE) or 1/2 (ODE)."""

    forward: SDE
    score_fn: ScoreFn
    probability_flow: bool = False

    @property
    def N(self) -> int:
        return self.forward.N

    @property
    def T(self) -> float:
        return self.forward.T

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        drift, diffusion = self.forward.sde(x, t)
        score = self.score_fn(x, t)
        c = 0.5 if self.probability_flow else 1.0
        drift = drift - c * append_dims(diffusion**2, x.ndim) * score
        diffusion = torch.zeros_like(diffusion) if self.probability_flow else diffusion
        return drift, diffusion

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Reverse of the forward discretisation: x_{i} = x_{i+1} - f_rev + G_rev z."""
        f, G = self.forward.discretize(x, t)
        score = self.score_fn(x, t)
        c = 0.5 if self.probability_flow else 1.0
        rev_f = f - c * append_dims(G**2, x.ndim) * score
        rev_G = torch.zeros_like(G) if self.probability_flow else G
        return rev_f, rev_G


class VESDE(SDE):
    """Variance exploding: sigma(t) = sigma_min (sigma_max/sigma_min)^t, dx = g(t) dw.

    Args:
        sigma_min: smallest noise level, > 0.
        sigma_max: largest noise level, > sigma_min.
        N: number of discrete noise levels (SMLD discretisation).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000) -> None:
        super().__init__(N)
        if not sigma_min > 0:
            raise ValueError(f"sigma_min must be > 0, got {sigma_min}")
        if not sigma_max > sigma_min:
            raise ValueError(
                f"sigma_max must be > sigma_min = {sigma_min}, got sigma_max = {sigma_max}; "
                "swap them or widen the range"
            )
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)
        # SMLD noise levels in increasing order, sigma_0 = sigma_min ... sigma_{N-1} = sigma_max.
        self.discrete_sigmas = torch.exp(
            torch.linspace(math.log(self.sigma_min), math.log(self.sigma_max), self.N)
        )

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        return torch.log(sigma / self.sigma_min) / self._log_ratio

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        diffusion = self.sigma(t) * math.sqrt(2 * self._log_ratio)
        return torch.zeros_like(x), diffusion

    def marginal_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(t), self.sigma(t)

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """SMLD step: x_{i} = x_{i-1} + sqrt(sigma_i² - sigma_{i-1}²) z, with sigma_{-1} = 0."""
        i = self.timestep_index(t)
        sigmas = self.discrete_sigmas.to(device=t.device, dtype=x.dtype)
        sigma = sigmas[i]
        prev = torch.where(i == 0, torch.zeros_like(sigma), sigmas[(i - 1).clamp(min=0)])
        return torch.zeros_like(x), torch.sqrt(sigma**2 - prev**2)

    def describe(self) -> dict:
        return {**super().describe(), "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


class _BetaSDE(SDE):
    """Shared parts of VP and sub-VP: linear beta(t) = beta_min + t (beta_max - beta_min)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000) -> None:
        super().__init__(N)
        if not beta_min > 0:
            raise ValueError(f"beta_min must be > 0, got {beta_min}")
        if not beta_max >= beta_min:
            raise ValueError(f"beta_max must be >= beta_min = {beta_min}, got {beta_max}")
        self.beta_0 = float(beta_min)
        self.beta_1 = float(beta_max)
        # DDPM's discrete betas: beta_i = beta(t_i) / N.
        self.discrete_betas = torch.linspace(self.beta_0 / self.N, self.beta_1 / self.N, self.N)
        self.alphas = 1.0 - self.discrete_betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_0 + t * (self.beta_1 - self.beta_0)

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        """log alpha(t) = -t² (beta_1 - beta_0)/4 - t beta_0/2."""
        return -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def _t_from_log_alpha(self, log_alpha: Tensor) -> Tensor:
        # Solve a t² + b t + log_alpha = 0 for t >= 0, a = (beta_1-beta_0)/4, b = beta_0/2, in
        # the form t = -2 log_alpha / (b + sqrt(b² - 4 a log_alpha)): no cancellation at small t,
        # and a = 0 (constant beta) needs no special case.
        a = 0.25 * (self.beta_1 - self.beta_0)
        b = 0.5 * self.beta_0
        return -2 * log_alpha / (b + torch.sqrt(b * b - 4 * a * log_alpha))

    @property
    def prior_std(self) -> float:
        return 1.0

    def describe(self) -> dict:
        return {**super().describe(), "beta_min": self.beta_0, "beta_max": self.beta_1}


class VPSDE(_BetaSDE):
    """Variance preserving: dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw (continuous DDPM)."""

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        beta = self.beta(t)
        return -0.5 * append_dims(beta, x.ndim) * x, torch.sqrt(beta)

    def marginal_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        lmc = self.log_mean_coeff(t)
        return torch.exp(lmc), torch.sqrt(-torch.expm1(2 * lmc))

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        # alpha² = 1 / (1 + sigma²)
        return self._t_from_log_alpha(-0.5 * torch.log1p(sigma**2))

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """DDPM step: x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z."""
        i = self.timestep_index(t)
        beta = self.discrete_betas.to(device=t.device, dtype=x.dtype)[i]
        alpha = self.alphas.to(device=t.device, dtype=x.dtype)[i]
        f = append_dims(torch.sqrt(alpha), x.ndim) * x - x
        return f, torch.sqrt(beta)


class subVPSDE(_BetaSDE):
    """Sub-VP: dx = -beta x / 2 dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw."""

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        beta = self.beta(t)
        discount = -torch.expm1(-2 * self.beta_0 * t - (self.beta_1 - self.beta_0) * t**2)
        return -0.5 * append_dims(beta, x.ndim) * x, torch.sqrt(beta * discount)

    def marginal_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        lmc = self.log_mean_coeff(t)
        return torch.exp(lmc), -torch.expm1(2 * lmc)

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        # sigma = (1 - alpha²)/alpha  =>  alpha = (sqrt(sigma² + 4) - sigma)/2, i.e.
        # log alpha = -asinh(sigma/2). The asinh form keeps full precision at small sigma, where
        # sqrt(sigma² + 4) - sigma rounds to 2 in float32 (t = 1e-5 came back 5% off).
        return self._t_from_log_alpha(-torch.asinh(0.5 * sigma))


def sigma_score_from_time_score(sde: SDE, score_fn: ScoreFn) -> ScoreFn:
    """σ-conditioned score of the VE-equivalent process from a time-conditioned score.

    If x_t = alpha (x_0 + sigma z), then p_sigma(y) = alpha^D p_t(alpha y) and
    ∇_y log p_sigma(y) = alpha ∇ log p_t(alpha y).
    """

    def fn(y: Tensor, sigma: Tensor) -> Tensor:
        t = sde.t_from_sigma(sigma)
        alpha, _ = sde.marginal_coeffs(t)
        a = append_dims(alpha, y.ndim)
        return a * score_fn(a * y, t)

    return fn


def time_score_from_sigma_score(sde: SDE, score_fn: ScoreFn) -> ScoreFn:
    """Inverse of :func:`sigma_score_from_time_score`: ∇ log p_t(x) = s_sigma(x/alpha)/alpha."""

    def fn(x: Tensor, t: Tensor) -> Tensor:
        alpha, std = sde.marginal_coeffs(t)
        a = append_dims(alpha, x.ndim)
        return score_fn(x / a, std / alpha) / a

    return fn
