"""Predictor–corrector sampling of a time-conditioned score (Song et al. 2021, Algorithm 1–4).

Predictors and correctors are small objects built from ``(sde, score_fn, *, generator, **knobs)``
with one method ``step(x, t) -> (x, x_mean)``, where ``t`` is (B,) and ``x_mean`` is the step
without its noise. :func:`pc_sampler` takes their *classes* (or ``functools.partial`` of them, as
Hydra's ``_partial_: true`` makes) and builds them itself, so that it can count score calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from scorelab.sampling.base import (
    Callback,
    SampleResult,
    ScoreFn,
    check_eps,
    check_int,
    check_positive,
    counted,
    randn_like,
)
from scorelab.sde import SDE, as_sde
from scorelab.utils import append_dims, flat_norm


class Predictor:
    """One step of a reverse-time SDE solver, from t to t - T/N."""

    def __init__(
        self, sde: SDE, score_fn: ScoreFn, *, generator: torch.Generator | None = None
    ) -> None:
        self.sde = as_sde(sde, f"{type(self).__name__} needs an SDE")
        self.score_fn = score_fn
        self.generator = generator

    def step(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class Corrector(Predictor):
    """MCMC steps towards p_t at a fixed time t: ``n_steps`` steps at signal-to-noise ``snr``."""

    def __init__(self, sde: SDE, score_fn: ScoreFn, snr: float = 0.16, n_steps: int = 1, **kw):
        super().__init__(sde, score_fn, **kw)
        self.snr = check_positive("snr", snr, " (signal-to-noise ratio; 0.16 is typical for VE)")
        self.n_steps = check_int("n_steps", n_steps)


# ----------------------------------------------------------------------------------------------
# Predictors
# ----------------------------------------------------------------------------------------------


class _ReversePredictor(Predictor):
    """A predictor stepping the reverse-time SDE, or the probability-flow ODE."""

    def __init__(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        probability_flow: bool = False,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(sde, score_fn, generator=generator)
        self.rsde = sde.reverse(score_fn, probability_flow)
        self.probability_flow = probability_flow


class EulerMaruyamaPredictor(_ReversePredictor):
    """x ← x - [f - g² s] Δt + g √Δt z with Δt = T/N (or the probability-flow ODE's Euler step,
    drift f - ½ g² s and no noise, when ``probability_flow``)."""

    def step(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        dt = -self.sde.T / self.sde.N
        drift, diffusion = self.rsde.sde(x, t)
        x_mean = x + drift * dt
        if self.probability_flow:
            return x_mean, x_mean
        noise = append_dims(diffusion, x.ndim) * math.sqrt(-dt) * randn_like(x, self.generator)
        return x_mean + noise, x_mean


class ReverseDiffusionPredictor(_ReversePredictor):
    """Reverse of the SDE's own discretisation: x ← x - f_i + G_i² s + G_i z."""

    def step(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        f, G = self.rsde.discretize(x, t)
        x_mean = x - f
        if self.probability_flow:
            return x_mean, x_mean
        return x_mean + append_dims(G, x.ndim) * randn_like(x, self.generator), x_mean


class AncestralSamplingPredictor(Predictor):
    """Ancestral sampling of the discrete model: SMLD's for VE, DDPM's for VP.

    VE: x_mean = x + (σ_i² - σ_{i-1}²) s, std² = σ_{i-1}² (σ_i² - σ_{i-1}²)/σ_i².
    VP: x_mean = (x + β_i s)/√(1 - β_i), std² = β_i.
    """

    def __init__(
        self, sde: SDE, score_fn: ScoreFn, *, generator: torch.Generator | None = None
    ) -> None:
        super().__init__(sde, score_fn, generator=generator)
        # Refuse a process without ancestral steps now, not at the first step.
        sde.ancestral_step(torch.zeros(1), torch.zeros(1), torch.full((1,), sde.T))

    def step(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        x_mean, std = self.sde.ancestral_step(x, self.score_fn(x, t), t)
        return x_mean + append_dims(std, x.ndim) * randn_like(x, self.generator), x_mean


class NonePredictor(Predictor):
    """No predictor step (corrector-only sampling)."""

    def step(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return x, x


# ----------------------------------------------------------------------------------------------
# Correctors
# ----------------------------------------------------------------------------------------------


class LangevinCorrector(Corrector):
    """Langevin MCMC with the step set by a target signal-to-noise ratio r (Algorithm 4).

    ε = 2 α (r ‖z‖ / ‖s‖)², where the norms are averaged over the batch (as the official code)
    and α = 1 - β_i for VP/sub-VP, 1 for VE; then x ← x + ε s + √(2ε) z.
    """

    def step(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        alpha = self.sde.corrector_alpha(t, x)
        x_mean = x
        for _ in range(self.n_steps):
            grad = self.score_fn(x, t)
            noise = randn_like(x, self.generator)
            # Batch-mean norms stay on the device: no host synchronisation.
            ratio = flat_norm(noise).mean() / flat_norm(grad).mean()
            step = 2 * alpha * (self.snr * ratio) ** 2
            step = append_dims(step.expand(x.shape[0]), x.ndim)
            x_mean = x + step * grad
            x = x_mean + torch.sqrt(2 * step) * noise
        return x, x_mean


class AnnealedLangevinCorrector(Corrector):
    """NCSN's annealed Langevin as a corrector: ε = 2 α (r std(t))², x ← x + ε s + √(2ε) z."""

    def step(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        alpha = self.sde.corrector_alpha(t, x)
        _, std = self.sde.marginal_coeffs(t)
        step = append_dims(2 * alpha * (self.snr * std) ** 2, x.ndim)
        x_mean = x
        for _ in range(self.n_steps):
            grad = self.score_fn(x, t)
            x_mean = x + step * grad
            x = x_mean + torch.sqrt(2 * step) * randn_like(x, self.generator)
        return x, x_mean


class NoneCorrector(Corrector):
    """No corrector step."""

    def step(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return x, x


# ----------------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------------

PredictorFactory = Callable[..., Predictor]
CorrectorFactory = Callable[..., Corrector]


def _build(factory: Callable, kind: str, sde: SDE, score: ScoreFn, generator) -> object:
    if isinstance(factory, Predictor | Corrector) or not callable(factory):
        raise ValueError(
            f"{kind} must be a class or functools.partial building a {kind} from "
            f"(sde, score_fn, generator=...), got {factory!r}; pass the class, not an instance"
        )
    return factory(sde, score, generator=generator)


#: ``fn(x, x_mean, t) -> (x, x_mean)``: a step applied between the sampler's steps (t (B,), or
#: None after the last step).
Projection = Callable[[Tensor, Tensor, Tensor | None], tuple[Tensor, Tensor]]


def pc_sampler(
    score_fn: ScoreFn,
    x: Tensor,
    sde: SDE,
    *,
    predictor: PredictorFactory = ReverseDiffusionPredictor,
    corrector: CorrectorFactory | None = NoneCorrector,
    eps: float | None = None,
    n_steps: int | None = None,
    denoise: bool = True,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
    project: Projection | None = None,
) -> SampleResult:
    """Predictor–corrector sampling from t = T down to t = eps in ``n_steps`` steps.

    At each time of ``linspace(T, eps, n_steps)``: corrector step(s), then the predictor step
    (the official order); ``nfe = n_steps · (predictor evals + corrector n_steps)``.

    Args:
        predictor: class or partial, called as ``predictor(sde, score_fn, generator=g)``.
        corrector: class or partial, called as ``corrector(sde, score_fn, generator=g)``;
            None: no corrector.
        eps: final time, in (0, T); default 1e-5 for VE and 1e-3 for VP / sub-VP.
        n_steps: number of steps; default ``sde.N``. Otherwise the SDE is re-discretised with
            N = n_steps (which sets Δt, SMLD's σ_i and DDPM's β_i).
        denoise: return the last step's mean (no final noise) as ``x``.
        project: ``fn(x, x_mean, t) -> (x, x_mean)`` applied to the start at t = T, after each
            corrector step at t_i and after each predictor step at t_{i+1}, with ``t=None``
            after the last one (conditional samplers overwrite known coordinates with it).
    """
    score = counted(score_fn, x)
    sde = as_sde(sde, "pc_sampler needs an SDE")
    eps = check_eps(eps, sde)
    if n_steps is not None and n_steps != sde.N:
        sde = sde.with_num_steps(check_int("n_steps", n_steps))
    pred = _build(predictor, "predictor", sde, score, generator)
    corr = _build(corrector or NoneCorrector, "corrector", sde, score, generator)
    timesteps = torch.linspace(sde.T, eps, sde.N, device=x.device, dtype=x.dtype)
    x_mean = x
    if project is not None:
        x, x_mean = project(x, x_mean, timesteps[0].expand(x.shape[0]))
    for i in range(sde.N):
        t = timesteps[i].expand(x.shape[0])
        x, x_mean = corr.step(x, t)
        if project is not None:
            x, x_mean = project(x, x_mean, t)
        x, x_mean = pred.step(x, t)
        if project is not None:
            t_next = timesteps[i + 1].expand(x.shape[0]) if i + 1 < sde.N else None
            x, x_mean = project(x, x_mean, t_next)
        if callback is not None:
            callback({"i": i, "x": x, "x_mean": x_mean, "t": t})
    return score.result(x_mean if denoise else x, x_mean)


def em_sampler(score_fn: ScoreFn, x: Tensor, sde: SDE, **kwargs) -> SampleResult:
    """Euler–Maruyama on the reverse SDE (pc_sampler with no corrector)."""
    return pc_sampler(score_fn, x, sde, predictor=EulerMaruyamaPredictor, **kwargs)


def reverse_diffusion_sampler(score_fn: ScoreFn, x: Tensor, sde: SDE, **kwargs) -> SampleResult:
    """Reverse diffusion predictor, optionally with a corrector (``corrector=``)."""
    return pc_sampler(score_fn, x, sde, predictor=ReverseDiffusionPredictor, **kwargs)


def ancestral_sampler(score_fn: ScoreFn, x: Tensor, sde: SDE, **kwargs) -> SampleResult:
    """SMLD (VE) or DDPM (VP) ancestral sampling; refuses sub-VP."""
    return pc_sampler(score_fn, x, sde, predictor=AncestralSamplingPredictor, **kwargs)
