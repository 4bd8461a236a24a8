"""Sampler drivers: what a Hydra ``sampler=`` choice builds.

A driver knows how to start (uniform noise or the prior), which schedule to hand the sampler
(discrete σ levels, an SDE, a Karras schedule) and which view of the score it needs
(σ-conditioned or time-conditioned). It then calls one of the pure samplers in
:mod:`scorelab.sampling` with a progress bar.

``driver(model, shape, *, device, generator, progress) -> SampleResult`` where ``model`` is a
:class:`~scorelab.nets.precond.ScoreModel` or an :class:`~scorelab.nets.precond.OracleScoreModel`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import Tensor

from scorelab.schedules import NoiseLevels, geometric_sigmas, karras_sigmas
from scorelab.sde import SDE, subVPSDE


@contextmanager
def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar advanced by the sampler callback (a no-op when disabled)."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=None)
    try:
        yield lambda info: bar.update(1)
    finally:
        bar.close()


def _sde_of(model, name: str) -> SDE:
    noise = model.noise
    if isinstance(noise, NoiseLevels):
        raise ValueError(
            f"sampler={name} needs an SDE model (sde=ve, vp or subvp), but this model uses "
            "discrete noise levels (sde=ncsn); use sampler=ald, langevin or heun"
        )
    return noise


def _sigma_range(model) -> tuple[float, float]:
    """(σ_min, σ_max) of the model's noise, in VE-equivalent terms."""
    noise = model.noise
    if isinstance(noise, NoiseLevels):
        return noise.sigma_min, noise.sigma_max
    t = torch.tensor([1e-5, noise.T], dtype=torch.float64)
    s = noise.sigma(t)
    return float(s[0]), float(s[1])


class _Driver:
    name = "sampler"
    init = "prior"

    def __init__(self, init: str = "prior", init_low: float = 0.0, init_high: float = 1.0):
        if init not in ("prior", "uniform"):
            raise ValueError(f"init must be 'prior' or 'uniform', got {init!r}")
        if not init_high > init_low:
            raise ValueError(f"init_high must be > init_low = {init_low}, got {init_high}")
        self.init, self.init_low, self.init_high = init, float(init_low), float(init_high)

    def check(self, model) -> None:
        """Refuse a model this sampler cannot drive (before any sampling work)."""

    def start(self, shape, prior_std: float, device, generator) -> Tensor:
        if self.init == "uniform":
            u = torch.rand(shape, generator=generator, device=device)
            return self.init_low + (self.init_high - self.init_low) * u
        return prior_std * torch.randn(shape, generator=generator, device=device)

    def describe(self) -> dict:
        return {"name": self.name, **{k: v for k, v in vars(self).items() if _plain(v)}}


def _plain(v) -> bool:
    return isinstance(v, int | float | str | bool | type(None))


def _check_init_moments(driver: _Driver, init_mean, init_std) -> None:
    if (init_mean is not None or init_std is not None) and driver.init != "prior":
        raise ValueError("init_mean / init_std set a Gaussian start; they need init='prior'")
    if init_std is not None and not bool((torch.as_tensor(init_std) > 0).all()):
        raise ValueError(f"init_std must be > 0, got {init_std}")


def _gaussian_start(shape, mean, std, device, generator) -> Tensor:
    """x ~ N(mean, std²) per coordinate; mean and std broadcast against ``shape[1:]``."""
    z = torch.randn(shape, generator=generator, device=device)
    return (
        torch.as_tensor(mean, dtype=z.dtype, device=device)
        + torch.as_tensor(std, dtype=z.dtype, device=device) * z
    )


class LangevinDriver(_Driver):
    """Plain Langevin dynamics at one noise level (default: the smallest)."""

    name = "langevin"

    def __init__(
        self, n_steps: int = 1000, step_size: float = 1e-4, sigma: float | None = None, **init
    ):
        super().__init__(**{"init": "uniform", **init})
        self.n_steps, self.step_size, self.sigma = n_steps, step_size, sigma

    def __call__(self, model, shape, *, device="cpu", generator=None, progress=False):
        from scorelab.sampling.langevin import langevin

        sigma = self.sigma if self.sigma is not None else _sigma_range(model)[0]
        x = self.start(shape, _sigma_range(model)[1], device, generator)
        with _progress(self.n_steps, self.name, progress) as cb:
            return langevin(
                model.sigma_score(),
                x,
                sigma,
                n_steps=self.n_steps,
                step_size=self.step_size,
                callback=cb,
                generator=generator,
            )


# NCSN's ε = 2e-5 at σ_L = 0.01 is ε/σ_L² = 0.2; the same ratio suits any σ_L.
DEFAULT_EPS_OVER_SIGMA_MIN_SQ = 0.2


class AnnealedLangevinDriver(_Driver):
    """NCSN's annealed Langevin dynamics (Algorithm 1), optionally with NCSNv2's denoising.

    On discrete models the σ levels are the model's; on SDE models ``num_scales`` geometric levels
    span the SDE's VE-equivalent range. Give exactly one of ``eps`` (paper) and ``step_lr``
    (official code, = ε/2).
    """

    name = "ald"

    def __init__(
        self,
        n_steps_each: int = 100,
        eps: float | None = None,
        step_lr: float | None = None,
        final_denoise: bool = False,
        num_scales: int = 100,
        **init,
    ):
        super().__init__(**{"init": "uniform", **init})
        self.n_steps_each, self.eps, self.step_lr = n_steps_each, eps, step_lr
        self.final_denoise, self.num_scales = final_denoise, num_scales

    def sigmas(self, model) -> Tensor:
        if isinstance(model.noise, NoiseLevels):
            return model.noise.sigmas
        lo, hi = _sigma_range(model)
        return geometric_sigmas(hi, lo, self.num_scales)

    def __call__(self, model, shape, *, device="cpu", generator=None, progress=False):
        from scorelab.sampling.langevin import annealed_langevin

        sigmas = self.sigmas(model).to(device)
        x = self.start(shape, float(sigmas[0]), device, generator)
        eps = self.eps
        if eps is None and self.step_lr is None:
            eps = DEFAULT_EPS_OVER_SIGMA_MIN_SQ * float(sigmas[-1]) ** 2
        with _progress(len(sigmas) * self.n_steps_each, self.name, progress) as cb:
            return annealed_langevin(
                model.sigma_score(),
                x,
                sigmas,
                n_steps_each=self.n_steps_each,
                eps=eps,
                step_lr=self.step_lr,
                final_denoise=self.final_denoise,
                callback=cb,
                generator=generator,
            )


class PCDriver(_Driver):
    """Predictor–corrector sampling of the reverse SDE (Song et al. 2021, Algorithm 1).

    ``predictor`` and ``corrector`` are partials ``cls(sde, score_fn)``; Euler–Maruyama,
    reverse-diffusion and ancestral sampling are this driver with no corrector.
    """

    name = "pc"

    def __init__(
        self,
        predictor: Callable,
        corrector: Callable | None = None,
        n_steps: int | None = None,
        eps: float | None = None,
        denoise: bool = True,
        name: str = "pc",
        **init,
    ):
        super().__init__(**init)
        if n_steps is not None and n_steps < 1:
            raise ValueError(f"n_steps must be >= 1 or null (the SDE's N), got {n_steps}")
        self.predictor, self.corrector = predictor, corrector
        self.n_steps, self.eps, self.denoise, self.name = n_steps, eps, denoise, name

    def check(self, model) -> None:
        sde = _sde_of(model, self.name)
        pred = getattr(self.predictor, "func", self.predictor)
        if "Ancestral" in getattr(pred, "__name__", "") and isinstance(sde, subVPSDE):
            raise ValueError(
                "sampler=ancestral is defined for VE and VP only, not subVP; use "
                "sampler=reverse_diffusion or pc"
            )
        # the step objects validate their knobs (snr, n_steps ...) when built: build them now
        self.predictor(sde, model.time_score())
        if self.corrector is not None:
            self.corrector(sde, model.time_score())

    def __call__(self, model, shape, *, device="cpu", generator=None, progress=False):
        from scorelab.sampling.pc import NoneCorrector, pc_sampler

        self.check(model)
        sde = model.noise
        x = sde.prior_sampling(shape, generator=generator, device=device)
        n = self.n_steps or sde.N
        with _progress(n, self.name, progress) as cb:
            return pc_sampler(
                model.time_score(),
                x,
                sde,
                predictor=self.predictor,
                corrector=self.corrector or NoneCorrector,
                n_steps=n,
                eps=self.eps,
                denoise=self.denoise,
                callback=cb,
                generator=generator,
            )


class ODEDriver(_Driver):
    """The probability-flow ODE, adaptive (dopri5/rk45) or fixed-step (euler, heun).

    ``init_mean`` / ``init_std`` (default None: the SDE's prior) start the ODE from
    N(init_mean, init_std²) per coordinate instead, e.g. the moment-matched start
    :func:`scorelab.schedules.moment_matched_start` ``(data, sigma, alpha)`` with the SDE's
    (alpha, std) at T; a missing one keeps the prior's (mean 0, its std).
    """

    name = "ode"

    def __init__(
        self,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        eps: float | None = None,
        n_steps: int = 100,
        init_mean=None,
        init_std=None,
        **init,
    ):
        super().__init__(**init)
        self.method, self.rtol, self.atol, self.eps, self.n_steps = method, rtol, atol, eps, n_steps
        _check_init_moments(self, init_mean, init_std)
        self.init_mean, self.init_std = init_mean, init_std

    def check(self, model) -> None:
        _sde_of(model, self.name)

    def __call__(self, model, shape, *, device="cpu", generator=None, progress=False):
        from scorelab.sampling.ode import ode_sampler

        sde = _sde_of(model, self.name)
        if self.init_std is None:
            x = sde.prior_sampling(shape, generator=generator, device=device)
        else:
            x = _gaussian_start(shape, 0.0, self.init_std, device, generator)
        if self.init_mean is not None:
            x = x + torch.as_tensor(self.init_mean, dtype=x.dtype, device=x.device)
        total = self.n_steps if self.method in ("euler", "heun") else 0
        with _progress(total, f"{self.name}-{self.method}", progress) as cb:
            return ode_sampler(
                model.time_score(),
                x,
                sde,
                method=self.method,
                rtol=self.rtol,
                atol=self.atol,
                eps=self.eps,
                n_steps=self.n_steps,
                callback=cb,
            )


class EDMHeunDriver(_Driver):
    """EDM's 2nd-order Heun sampler on the Karras σ schedule (18 steps = 35 NFE).

    ``init_mean`` / ``init_std`` (default None: N(0, σ_max² I)) start it from
    N(init_mean, init_std²) per coordinate instead, e.g. the moment-matched start
    :func:`scorelab.schedules.moment_matched_start` ``(data, sigma_max)``, which removes the
    mode-weight bias that the data mean's offset causes. The sampler works in VE coordinates,
    on VP models too, so the VE moments (alpha = 1) apply.
    """

    name = "heun"

    def __init__(
        self,
        num_steps: int = 18,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        rho: float = 7.0,
        s_churn: float = 0.0,
        init_mean=None,
        init_std=None,
        **init,
    ):
        super().__init__(**init)
        self.num_steps, self.sigma_min, self.sigma_max = num_steps, sigma_min, sigma_max
        self.rho, self.s_churn = rho, s_churn
        _check_init_moments(self, init_mean, init_std)
        self.init_mean, self.init_std = init_mean, init_std

    def sigmas(self, model) -> Tensor:
        lo, hi = _sigma_range(model)
        lo = self.sigma_min if self.sigma_min is not None else lo
        hi = self.sigma_max if self.sigma_max is not None else hi
        s = karras_sigmas(self.num_steps, lo, hi, self.rho)
        return torch.cat([s, s.new_zeros(1)])

    def __call__(self, model, shape, *, device="cpu", generator=None, progress=False):
        from scorelab.sampling.edm import edm_heun

        sigmas = self.sigmas(model).to(device)
        if self.init_mean is None and self.init_std is None:
            x = self.start(shape, float(sigmas[0]), device, generator)
        else:
            mean = 0.0 if self.init_mean is None else self.init_mean
            std = float(sigmas[0]) if self.init_std is None else self.init_std
            x = _gaussian_start(shape, mean, std, device, generator)
        with _progress(self.num_steps, self.name, progress) as cb:
            res = edm_heun(
                model.sigma_score(),
                x,
                sigmas,
                s_churn=self.s_churn,
                callback=cb,
                generator=generator,
            )
        # On SDE models the sampler runs in VE-equivalent coordinates y = x / alpha(t); its
        # last level is σ = 0, where alpha = 1, so the result needs no rescaling.
        return res
