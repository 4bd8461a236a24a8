"""The noise processes: the SDEs of the score SDE framework (Song et al. 2021) and NCSN's levels.

Each SDE is a small object over tensors of any shape ``(B, ...)``. Time ``t`` is ``(B,)`` in
``[0, T]``; per-sample scalars are broadcast with :func:`scorelab.utils.append_dims`.

All three SDEs have affine Gaussian transition kernels, ``x_t = alpha(t) x_0 + std(t) z``. The ratio
``sigma(t) = std(t) / alpha(t)`` is the equivalent variance-exploding noise level, which lets
σ-conditioned samplers (annealed Langevin, EDM-Heun) run on any of them.

NCSN's discrete levels (:class:`NoiseLevels`) answer the same :class:`NoiseProcess` methods, in
the *noise argument* ``cond`` (B,) callers pass with ``x``: t for an SDE, σ itself for levels
(x_σ = x_0 + σ z: alpha = 1, std = σ). What only some processes have (the reverse-time SDE, the
level index, DDPM's ᾱ, ancestral steps) raises a one-line ValueError naming the fix elsewhere.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from scorelab.schedules import geometric_sigmas
from scorelab.utils import append_dims, flat_sum

ScoreFn = Callable[[Tensor, Tensor], Tensor]

# The smallest time the SDE losses train on (and where the VE-equivalent σ range starts).
T_MIN = 1e-5
_SDES = "sde=edm, ve, vp or subvp"


class NoiseProcess(ABC):
    """What every noise process answers: VE, VP, sub-VP and NCSN's discrete levels alike.
    ``cond`` (B,) is the caller's noise argument: t for an SDE, σ for :class:`NoiseLevels`."""

    N: int  # discretisation steps (levels)

    @abstractmethod
    def marginal_coeffs(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha, std)``, each (B,), with x = alpha x_0 + std z at ``cond``."""

    def marginal_prob(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (shaped like ``x``) and std (B,) of p(x_cond | x_0 = x)."""
        alpha, std = self.marginal_coeffs(cond)
        return append_dims(alpha, x.ndim) * x, std

    def sigma(self, cond: Tensor) -> Tensor:
        """Equivalent VE noise level std/alpha at ``cond``, (B,)."""
        alpha, std = self.marginal_coeffs(cond)
        return std / alpha

    @abstractmethod
    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        """Inverse of :meth:`sigma`: the noise argument at VE-equivalent level σ (B,)."""

    @abstractmethod
    def sigma_range(self) -> tuple[float, float]:
        """``(σ_min, σ_max)``, the VE-equivalent range the process trains on."""

    @abstractmethod
    def grid(self) -> Tensor:
        """Noise arguments of the own discretisation, (N,), noisiest first: t_i = i T/(N-1)
        (SDE) or the levels σ_1 > … > σ_L."""

    @abstractmethod
    def with_num_steps(self, N: int) -> NoiseProcess:
        """A copy with ``N`` steps (levels), its other parameters kept."""

    @abstractmethod
    def noise_fraction(self, cond: Tensor) -> Tensor:
        """Where ``cond`` (B,) lies in the range, in [0, 1]: uniform in t (SDE) or log σ."""

    @abstractmethod
    def bucket_names(self, n: int) -> list[str]:
        """Names of ``n`` equal parts of the range :meth:`noise_fraction` splits."""

    @property
    @abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior at the noisiest level."""

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

    # ----- conversions between parametrisations -----
    @abstractmethod
    def to_sigma_score(self, score_fn: ScoreFn) -> ScoreFn:
        """σ-conditioned score ``fn(y, sigma)`` of the VE-equivalent process from ``score_fn``."""

    @abstractmethod
    def from_sigma_score(self, sigma_score_fn: ScoreFn) -> ScoreFn:
        """Inverse of :meth:`to_sigma_score`."""

    # ----- step sizes of the samplers -----
    def corrector_alpha(self, cond: Tensor, like: Tensor) -> Tensor:
        """α (B,) of the Langevin corrector's step 2 α (r ‖z‖/‖s‖)²: 1 without DDPM's alphas."""
        return torch.ones(cond.shape, device=like.device, dtype=like.dtype)

    def ancestral_step(self, x: Tensor, score: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """One ancestral step of the own discretisation: ``(x_mean, std)``."""
        raise ValueError(
            f"sampler=ancestral is defined for VE and VP only, got sde={type(self).__name__}; "
            "use ReverseDiffusionPredictor (sampler=reverse_diffusion) or EulerMaruyamaPredictor"
        )

    def annealing_sigmas(
        self, num_scales: int, sigma_min: float | None = None, *, default_min: float | None = None
    ) -> Tensor:
        """Annealed Langevin's levels: ``num_scales`` geometric ones from σ_max down to
        ``sigma_min`` (inside :meth:`sigma_range`), else ``default_min``, else σ_min."""
        lo, hi = self.sigma_range()
        # σ(t) at the smallest time sits a hair above the process's own σ_min (VE: σ(1e-5) =
        # σ_min · (σ_max/σ_min)^1e-5); σ_min itself is allowed
        if sigma_min is not None and not lo * (1 - 1e-3) <= sigma_min < hi:
            raise ValueError(
                f"schedule.sigma_min={sigma_min} must lie in the model's range "
                f"[{lo:.4g}, {hi:.4g}); choose one inside it or null (from the data's scale)"
            )
        lo = next((v for v in (sigma_min, default_min) if v is not None), lo)
        return geometric_sigmas(hi, lo, num_scales)

    # ----- what only some processes have: a one-line ValueError on the others -----
    def dsm_sigmas(self, need: str) -> Tensor:
        """The levels (L,), descending, that discrete-level DSM draws from."""
        raise ValueError(
            f"{need} needs discrete σ levels (sde=ncsn), but sde is {type(self).__name__}; "
            "use loss=dsm_discrete with sde=ncsn, loss=dsm with SDEs"
        )

    @abstractmethod
    def check_net_cond(self, kind: str) -> None:
        """Refuse a network conditioning kind this process cannot feed."""


class SDE(NoiseProcess):
    """dx = f(x, t) dt + g(t) dw on t in [0, T], discretised with N steps."""

    T: float = 1.0
    #: Where sampling stops by default (Song et al. 2021: 1e-3 for VP and sub-VP).
    sampling_eps: float = 1e-3

    def __init__(self, N: int) -> None:
        if isinstance(N, bool) or int(N) != N or N < 1:
            raise ValueError(f"N must be an integer >= 1 (number of discretisation steps), got {N}")
        self.N = int(N)

    # ----- the continuous process -----
    @abstractmethod
    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Drift f(x, t) shaped like ``x`` and diffusion g(t) of shape (B,)."""

    def sigma_range(self) -> tuple[float, float]:
        s = self.sigma(torch.tensor([T_MIN, self.T], dtype=torch.float64))
        return float(s[0]), float(s[1])

    def grid(self) -> Tensor:
        return torch.linspace(0.0, self.T, self.N).flip(0)

    def noise_fraction(self, cond: Tensor) -> Tensor:
        return cond / self.T

    def bucket_names(self, n: int) -> list[str]:
        return [f"t_{k / n:.2f}-{(k + 1) / n:.2f}" for k in range(n)]

    def to_sigma_score(self, score_fn: ScoreFn) -> ScoreFn:
        return sigma_score_from_time_score(self, score_fn)

    def from_sigma_score(self, sigma_score_fn: ScoreFn) -> ScoreFn:
        """∇ log p_t(x) = s_σ(x/alpha)/alpha, the inverse of :func:`sigma_score_from_time_score`."""

        def fn(x: Tensor, t: Tensor) -> Tensor:
            alpha, std = self.marginal_coeffs(t)
            a = append_dims(alpha, x.ndim)
            return sigma_score_fn(x / a, std / alpha) / a

        return fn

    def check_net_cond(self, kind: str) -> None:
        if kind == "index":
            raise ValueError(
                "net_cond='index' needs discrete noise levels (sde=ncsn); for an SDE use "
                "net_cond='sigma' or 'time'"
            )

    def _table(self, name: str, like: Tensor) -> Tensor:
        """A discretisation table on ``like``'s device and dtype, copied once per pair."""
        cache = self.__dict__.setdefault("_tables", {})
        key = (name, like.device, like.dtype)
        if key not in cache:
            cache[key] = getattr(self, name).to(device=like.device, dtype=like.dtype)
        return cache[key]

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


@dataclass
class ReverseSDE:
    """dx = [f - c g² ∇log p_t] dt + [g if SDE else 0] dw̄, c = 1 (SDE) or 1/2 (ODE)."""

    forward: SDE
    score_fn: ScoreFn
    probability_flow: bool = False

    def _reverse(self, f: Tensor, g: Tensor, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        c = 0.5 if self.probability_flow else 1.0
        f = f - c * append_dims(g**2, x.ndim) * self.score_fn(x, t)
        return f, torch.zeros_like(g) if self.probability_flow else g

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return self._reverse(*self.forward.sde(x, t), x, t)

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Reverse of the forward discretisation: x_{i} = x_{i+1} - f_rev + G_rev z."""
        return self._reverse(*self.forward.discretize(x, t), x, t)


class VESDE(SDE):
    """Variance exploding: sigma(t) = sigma_min (sigma_max/sigma_min)^t, dx = g(t) dw.

    Args:
        sigma_min: smallest noise level, > 0.
        sigma_max: largest noise level, > sigma_min.
        N: number of discrete noise levels (SMLD discretisation).
    """

    sampling_eps = 1e-5

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

    def with_num_steps(self, N: int) -> VESDE:
        return VESDE(self.sigma_min, self.sigma_max, N)

    def _levels(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """SMLD's σ_i at the step of ``t`` and σ_{i-1} (0 below the first), each (B,)."""
        i = self.timestep_index(t)
        sigmas = self._table("discrete_sigmas", like)
        prev = torch.where(i == 0, torch.zeros_like(sigmas[i]), sigmas[(i - 1).clamp(min=0)])
        return sigmas[i], prev

    def ancestral_step(self, x: Tensor, score: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """SMLD: x_mean = x + (σ_i² - σ_{i-1}²) s, std² = σ_{i-1}² (σ_i² - σ_{i-1}²)/σ_i²."""
        sigma, prev = self._levels(t, x)
        var_step = sigma**2 - prev**2
        x_mean = x + append_dims(var_step, x.ndim) * score
        return x_mean, torch.sqrt(prev**2 * var_step / sigma**2)

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """SMLD step: x_{i} = x_{i-1} + sqrt(sigma_i² - sigma_{i-1}²) z, with sigma_{-1} = 0."""
        sigma, prev = self._levels(t, x)
        return torch.zeros_like(x), torch.sqrt(sigma**2 - prev**2)


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

    def with_num_steps(self, N: int) -> _BetaSDE:
        return type(self)(self.beta_0, self.beta_1, N)

    def corrector_alpha(self, t: Tensor, like: Tensor) -> Tensor:
        """DDPM's α_i = 1 - β_i at the step of ``t``."""
        return self._table("alphas", like)[self.timestep_index(t)]

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

    def ancestral_step(self, x: Tensor, score: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """DDPM: x_mean = (x + β_i s)/√(1 - β_i), std² = β_i."""
        beta = self._table("discrete_betas", x)[self.timestep_index(t)]
        b = append_dims(beta, x.ndim)
        return (x + b * score) / torch.sqrt(1.0 - b), torch.sqrt(beta)

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """DDPM step: x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z."""
        i = self.timestep_index(t)
        alpha = self._table("alphas", x)[i]
        f = append_dims(torch.sqrt(alpha), x.ndim) * x - x
        return f, torch.sqrt(self._table("discrete_betas", x)[i])


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


def as_sde(process: object, need: str, fix: str = "") -> SDE:
    """``process`` as an :class:`SDE`, for what needs continuous time (the reverse-time SDE, the
    probability-flow ODE); discrete levels are refused with ``need`` (a phrase such as
    "sampler=pc needs an SDE model") and ``fix`` (default: the σ-conditioned samplers)."""
    if isinstance(process, SDE):
        return process
    if not isinstance(process, NoiseProcess):
        raise ValueError(
            f"sde must be a noise process of scorelab.sde (VESDE, VPSDE, subVPSDE or "
            f"NoiseLevels), got {type(process).__name__}"
        )
    fix = fix or "use a σ-conditioned sampler (sampler=ald, langevin or heun)"
    raise ValueError(
        f"{need} ({_SDES}), but the noise is {type(process).__name__} (discrete levels, "
        f"sde=ncsn), which has no reverse-time SDE or probability-flow ODE; {fix}"
    )


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


class NoiseLevels(NoiseProcess):
    """A discrete set of noise levels σ_1 > … > σ_L (NCSN / NCSNv2 training and sampling).

    The Hydra ``sde=ncsn`` choice builds one of these. Its noise argument is σ itself:
    x_σ = x_0 + σ z, so alpha = 1 and std = σ.
    """

    def __init__(self, sigma_max: float = 1.0, sigma_min: float = 0.01, num_scales: int = 10):
        self.sigmas = geometric_sigmas(sigma_max, sigma_min, num_scales)
        self.sigma_max = float(sigma_max)
        self.sigma_min = float(sigma_min)
        self.num_scales = int(num_scales)

    @property
    def N(self) -> int:
        return self.num_scales

    def index_of(self, sigma: Tensor) -> Tensor:
        """Index of the nearest level (in log σ) for each entry of ``sigma`` (B,) -> (B,) long."""
        table = torch.log(self.sigmas.to(sigma.device, torch.float64))
        d = (torch.log(sigma.double())[:, None] - table[None]).abs()
        return d.argmin(dim=1)

    def marginal_coeffs(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(sigma), sigma

    def sigma(self, sigma: Tensor) -> Tensor:
        return sigma

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        return sigma

    def sigma_range(self) -> tuple[float, float]:
        return self.sigma_min, self.sigma_max

    def grid(self) -> Tensor:
        return self.sigmas

    def with_num_steps(self, N: int) -> NoiseLevels:
        return NoiseLevels(self.sigma_max, self.sigma_min, N)

    def noise_fraction(self, sigma: Tensor) -> Tensor:
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        return (torch.log(sigma) - lo) / max(hi - lo, 1e-12)

    def bucket_names(self, n: int) -> list[str]:
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        edges = [math.exp(lo + (hi - lo) * k / n) for k in range(n + 1)]
        return [f"sigma_{edges[k]:.3g}-{edges[k + 1]:.3g}" for k in range(n)]

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def to_sigma_score(self, score_fn: ScoreFn) -> ScoreFn:
        return score_fn

    def from_sigma_score(self, sigma_score_fn: ScoreFn) -> ScoreFn:
        return sigma_score_fn

    def dsm_sigmas(self, need: str) -> Tensor:
        return self.sigmas

    def check_net_cond(self, kind: str) -> None:
        if kind in ("time", "step"):
            raise ValueError(
                f"net_cond={kind!r} needs an SDE; with sde=ncsn use 'sigma' or 'index'"
            )

    def annealing_sigmas(
        self, num_scales: int, sigma_min: float | None = None, *, default_min: float | None = None
    ) -> Tensor:
        """The levels themselves (NCSN anneals over the levels it was trained on)."""
        if sigma_min is not None:
            raise ValueError(
                "schedule.sigma_min sets the smallest level on SDE models; a model with discrete "
                "levels (sde=ncsn) samples its own: set schedule.sigma_min=null"
            )
        return self.sigmas
