"""What ``schedule=`` builds: the grid a sampling function walks, for one model.

A σ schedule (``karras``, ``geometric``) gives ``sigmas`` and the σ-conditioned score; ``sde``
gives the process with its step count and end time, for the samplers that discretise the SDE or
its ODE themselves (predictor-corrector, probability flow); ``level`` gives one σ (plain
Langevin). :func:`scorelab.draw.draw` hands the grid to the function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from scorelab.schedules import karras_sigmas
from scorelab.sde import as_sde

#: EDM's σ range (Karras et al. 2022). A VP or sub-VP SDE spans σ(1e-5)…σ(1) ≈ 1e-3 (VP) or
#: 1e-6 (sub-VP) … 152: Karras steps crowd below 0.002 and spend the budget where nothing
#: changes, so the model's range is clamped to this one unless given.
EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0

#: On SDE models annealed Langevin's smallest level is this fraction of the data's scale (the RMS
#: per-coordinate std), never below the SDE's own σ(eps): at σ(1e-5) the last levels' steps are
#: too small to move anything. NCSN's σ_L = 0.01 for pixels in [0, 1] (std ≈ 0.25–0.3) is
#: 0.03–0.04 of the data's scale; 0.02 measured best on mixtures (docs/samplers.md).
SIGMA_MIN_OVER_DATA_STD = 0.02


@dataclass
class Grid:
    """A schedule evaluated for one model.

    ``kwargs``: what the sampling function takes for it (``sigmas``; ``sigma``; or ``sde``,
    ``n_steps``, ``eps``). ``view``: the score it needs, ``"sigma"`` (``fn(x, σ)``) or
    ``"time"`` (``fn(x, t)``). ``alpha``, ``std``, ``prior_std``: the marginal
    alpha·x_0 + std·z at the first point, and the prior's std there (where a start is drawn).
    """

    kwargs: dict
    view: str
    alpha: float
    std: float
    prior_std: float


def _need(key: str, value, *, minimum: float = 0.0, integer: bool = False, null: bool = False):
    if value is None and null:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if integer:
        ok = ok and int(value) == value and value >= minimum
    else:
        ok = ok and minimum < value < math.inf
    if not ok:
        what = f"an integer >= {minimum:g}" if integer else f"a number > {minimum:g}"
        raise ValueError(f"{key}={value!r} must be {what}{' or null' * null}")


class Karras:
    """EDM's schedule: ``num_steps`` levels from σ_max down to σ_min with exponent ``rho``, then
    0 (Karras et al. 2022). A null end is the model's own, clamped to
    ``[clamp_sigma_min, clamp_sigma_max]`` (EDM's [0.002, 80]; null turns a clamp off)."""

    def __init__(
        self,
        num_steps: int = 18,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        rho: float = 7.0,
        clamp_sigma_min: float | None = EDM_SIGMA_MIN,
        clamp_sigma_max: float | None = EDM_SIGMA_MAX,
    ) -> None:
        _need("num_steps", num_steps, minimum=2, integer=True)
        _need("rho", rho)
        for key, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
            _need(key, v, null=True)
        for key, v in (("clamp_sigma_min", clamp_sigma_min), ("clamp_sigma_max", clamp_sigma_max)):
            _need(key, v, null=True)
        if None not in (sigma_min, sigma_max) and not sigma_max > sigma_min:
            raise ValueError(f"sigma_max={sigma_max} must be > sigma_min={sigma_min}; swap them")
        self.num_steps, self.rho = int(num_steps), float(rho)
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.clamp_sigma_min, self.clamp_sigma_max = clamp_sigma_min, clamp_sigma_max

    def sigma_range(self, noise) -> tuple[float, float]:
        lo, hi = noise.sigma_range()
        if self.sigma_min is not None:
            lo = self.sigma_min
        elif self.clamp_sigma_min is not None:
            lo = max(lo, self.clamp_sigma_min)
        if self.sigma_max is not None:
            hi = self.sigma_max
        elif self.clamp_sigma_max is not None:
            hi = min(hi, self.clamp_sigma_max)
        if not hi > lo:
            raise ValueError(
                f"schedule=karras's σ range [{lo:.4g}, {hi:.4g}] is empty for this model; set "
                "schedule.sigma_min < schedule.sigma_max"
            )
        return lo, hi

    def __call__(self, model) -> Grid:
        lo, hi = self.sigma_range(model.noise)
        s = karras_sigmas(self.num_steps, lo, hi, self.rho)
        s = torch.cat([s, s.new_zeros(1)])
        return Grid({"sigmas": s}, "sigma", 1.0, float(s[0]), float(s[0]))


class Geometric:
    """NCSN's levels: the model's own on discrete-level models; on SDE models ``num_scales``
    geometric levels from the SDE's σ(T) down to ``sigma_min`` (null: ``0.02 ×`` the data's
    scale when the model knows its data's moments, not below σ(eps))."""

    def __init__(self, num_scales: int = 100, sigma_min: float | None = None) -> None:
        _need("num_scales", num_scales, minimum=2, integer=True)
        _need("sigma_min", sigma_min, null=True)
        self.num_scales, self.sigma_min = int(num_scales), sigma_min

    def __call__(self, model) -> Grid:
        noise = model.noise
        lo, hi = noise.sigma_range()
        data_min, moments = None, getattr(model, "data_moments", None)
        if moments is not None and moments.known:
            data_min = min(max(lo, SIGMA_MIN_OVER_DATA_STD * moments.data_std()), hi / 2)
        s = noise.annealing_sigmas(self.num_scales, self.sigma_min, default_min=data_min)
        return Grid({"sigmas": s}, "sigma", 1.0, float(s[0]), float(s[0]))


class Level:
    """One noise level for plain Langevin dynamics: ``sigma`` (null: the model's smallest; 0:
    the data's own score, which only an exact score knows)."""

    def __init__(self, sigma: float | None = None) -> None:
        if sigma != 0:  # 0: the data's own score
            _need("sigma", sigma, null=True)
        self.sigma = sigma

    def __call__(self, model) -> Grid:
        lo, hi = model.noise.sigma_range()
        sigma = lo if self.sigma is None else float(self.sigma)
        return Grid({"sigma": sigma}, "sigma", 1.0, hi, hi)


class Times:
    """The SDE's own time grid: ``n_steps`` times (null: the SDE's N) from T down to ``eps``
    (null: 1e-5 for VE, 1e-3 for VP and sub-VP), discretised by the sampling function."""

    def __init__(self, n_steps: int | None = None, eps: float | None = None) -> None:
        _need("n_steps", n_steps, minimum=1, integer=True, null=True)
        _need("eps", eps, null=True)
        self.n_steps, self.eps = n_steps, eps

    def __call__(self, model) -> Grid:
        sde = as_sde(model.noise, "schedule=sde needs an SDE model")
        if self.eps is not None and not self.eps < sde.T:
            raise ValueError(
                f"schedule.eps={self.eps} must be in (0, T) = (0, {sde.T:g}) for this SDE; use "
                "null (1e-5 for VE, 1e-3 for VP/sub-VP)"
            )
        alpha, std = sde.marginal_coeffs(torch.tensor([sde.T], dtype=torch.float64))
        kwargs = {"sde": sde, "n_steps": self.n_steps or sde.N, "eps": self.eps}
        return Grid(kwargs, "time", float(alpha), float(std), float(sde.prior_std))
