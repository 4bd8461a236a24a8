"""Sampler drivers: what a Hydra ``sampler=`` choice builds.

A driver knows how to start (uniform noise, the prior, or the Gaussian with the data's moments),
which schedule to hand the sampler (discrete σ levels, an SDE, a Karras schedule) and which view
of the score it needs (σ-conditioned or time-conditioned). It then calls one of the pure samplers
in :mod:`scorelab.sampling` with a progress bar.

``driver(model, shape, *, device, generator, progress) -> SampleResult`` where ``model`` is a
:class:`~scorelab.nets.precond.ScoreModel` or an :class:`~scorelab.nets.precond.OracleScoreModel`.
A model may carry ``data_moments`` (:class:`~scorelab.sampling.start.DataMoments`): the oracle
knows them exactly, a trained model saves them from its training data. The deterministic drivers
start from them, and annealed Langevin takes its smallest level from the data's scale.
``driver.describe()`` reports the knobs and, after a call, where that call started.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import Tensor

from scorelab.sampling.start import DataMoments, gaussian_start
from scorelab.schedules import karras_sigmas
from scorelab.sde import SDE, as_sde


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
    return as_sde(model.noise, f"sampler={name} needs an SDE model")


def _data_moments(model) -> DataMoments | None:
    """The data's mean and variance the model carries, if known: exact for the oracle of a
    mixture, saved from the training data in a trained model's checkpoint."""
    moments = getattr(model, "data_moments", None)
    return moments if moments is not None and moments.known else None


def _need_int(name: str, value, minimum: int = 1, hint: str = "") -> None:
    """Refuse ``sampler.<name>`` unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}{hint}")


def _need_positive(name: str, value, hint: str = "", *, nullable: bool = False) -> None:
    """Refuse ``sampler.<name>`` unless it is a finite number > 0 (or null if ``nullable``)."""
    if value is None and nullable:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not (ok and 0 < value < float("inf")):
        raise ValueError(f"{name}={value!r} must be a number > 0{' or null' * nullable}{hint}")


def _check_eps_below_T(eps, sde: SDE) -> None:
    """``eps`` (the smallest time) must lie inside the SDE's (0, T)."""
    if eps is not None and not eps < sde.T:
        raise ValueError(
            f"sampler.eps={eps} must be in (0, T) = (0, {sde.T:g}) for this SDE; use null "
            "(1e-5 for VE, 1e-3 for VP/sub-VP)"
        )


def _plain(v) -> bool:
    return isinstance(v, int | float | str | bool | type(None))


def _summary(v) -> float | list | str:
    """A JSON-friendly view of a start parameter (a number, a short list, or its shape)."""
    t = torch.as_tensor(v)
    if t.numel() == 1:
        return float(t)
    if t.numel() <= 16:
        return t.flatten().tolist()
    return f"tensor of shape {tuple(t.shape)}"


class _Driver:
    name = "sampler"
    init = "prior"
    inits: tuple[str, ...] = ("prior", "uniform")

    def __init__(self, init: str = "prior", init_low: float = 0.0, init_high: float = 1.0):
        if init not in self.inits:
            raise ValueError(f"init must be one of {list(self.inits)}, got {init!r}")
        if not init_high > init_low:
            raise ValueError(f"init_high must be > init_low = {init_low}, got {init_high}")
        self.init, self.init_low, self.init_high = init, float(init_low), float(init_high)
        # Where the last call started (reported by describe(), e.g. in sample_info.json).
        self.started_from: dict | None = None

    def check(self, model) -> None:
        """Refuse a model this sampler cannot drive (before any sampling work)."""

    def start(self, shape, prior_std: float, device, generator) -> Tensor:
        if self.init == "uniform":
            self.started_from = {"kind": "uniform", "low": self.init_low, "high": self.init_high}
            u = torch.rand(shape, generator=generator, device=device)
            return self.init_low + (self.init_high - self.init_low) * u
        self.started_from = {"kind": "prior", "mean": 0.0, "std": float(prior_std)}
        return prior_std * torch.randn(shape, generator=generator, device=device)

    def describe(self) -> dict:
        info = {"name": self.name, **{k: v for k, v in vars(self).items() if _plain(v)}}
        if self.started_from is not None:
            info["start"] = dict(self.started_from)
        return info


class _DeterministicDriver(_Driver):
    """A driver whose sampler carries its start deterministically to the data (ODE, EDM-Heun),
    so any error in the start stays in the samples.

    ``init="auto"`` (the default) starts from N(alpha·mean, alpha²·var + std²) per coordinate,
    the first two moments of the marginal at the top level, whenever the model knows its data's
    mean and variance, and from the prior N(0, prior_std² I) otherwise; ``"moments"`` insists on
    the former and ``"prior"`` forces the latter. ``init_mean`` / ``init_std`` give the Gaussian
    explicitly (a missing one keeps the prior's: mean 0, its std).
    """

    init = "auto"
    inits = ("auto", "moments", "prior", "uniform")

    def __init__(self, init: str = "auto", init_mean=None, init_std=None, **kw):
        super().__init__(init=init, **kw)
        if (init_mean is not None or init_std is not None) and init not in ("auto", "prior"):
            raise ValueError(
                f"init_mean / init_std set a Gaussian start; they need init='prior' or 'auto', "
                f"got init={init!r}"
            )
        if init_std is not None and not bool((torch.as_tensor(init_std) > 0).all()):
            raise ValueError(f"init_std must be > 0, got {init_std}")
        self.init_mean, self.init_std = init_mean, init_std

    def initial_state(
        self, model, shape, *, std: float, alpha: float, prior_std: float, device, generator
    ) -> Tensor:
        """x at the top level, where the marginal is alpha·x_0 + std·z and the prior
        N(0, prior_std² I)."""
        if self.init_mean is not None or self.init_std is not None:
            mean = 0.0 if self.init_mean is None else self.init_mean
            sd = prior_std if self.init_std is None else self.init_std
            self.started_from = {"kind": "given", "mean": _summary(mean), "std": _summary(sd)}
            return gaussian_start(shape, mean, sd, device=device, generator=generator)
        if self.init == "uniform":
            return self.start(shape, prior_std, device, generator)
        moments = _data_moments(model) if self.init != "prior" else None
        if moments is None and self.init == "moments":
            raise ValueError(
                f"sampler {self.name} has init='moments', but this model does not know its "
                "data's mean and variance (a checkpoint saved before they were, or a converted "
                "one); use init=auto or init=prior"
            )
        if moments is None:
            return self.start(shape, prior_std, device, generator)
        mean, sd = moments.marginal(std, alpha)
        self.started_from = {
            "kind": "moments",
            "distribution": "N(alpha * data_mean, alpha^2 * data_var + std^2) per coordinate",
            "alpha": float(alpha),
            "std": float(std),
            **moments.describe(),
        }
        return gaussian_start(
            shape, mean.to(device), sd.to(device), device=device, generator=generator
        )


class LangevinDriver(_Driver):
    """Plain Langevin dynamics at one noise level (default: the smallest)."""

    name = "langevin"

    def __init__(
        self, n_steps: int = 1000, step_size: float = 1e-4, sigma: float | None = None, **init
    ):
        super().__init__(**{"init": "uniform", **init})
        _need_int("n_steps", n_steps, hint=" (Langevin steps)")
        _need_positive("step_size", step_size, " (the Langevin step; 1e-4 is the default)")
        _need_positive("sigma", sigma, " (the model's smallest level)", nullable=True)
        self.n_steps, self.step_size, self.sigma = n_steps, step_size, sigma

    def __call__(self, model, shape, *, device="cpu", generator=None, progress=False):
        from scorelab.sampling.langevin import langevin

        sigma = self.sigma if self.sigma is not None else model.noise.sigma_range()[0]
        x = self.start(shape, model.noise.sigma_range()[1], device, generator)
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


# The official NCSN runner steps x + step·s + √(2 step) z with step = step_lr = 2e-5 at
# σ_L = 0.01: in the paper's notation ε = 2·step_lr = 4e-5 = 0.4 σ_L². The same ratio suits any
# σ_L. (The paper's text reads ε = 2e-5, i.e. 0.2 σ_L²: half the step the published samples used.)
DEFAULT_EPS_OVER_SIGMA_MIN_SQ = 0.4
# On SDE models the smallest level is this fraction of the data's scale (the RMS per-coordinate
# std), never below the SDE's own σ(eps). At σ(1e-5) (1e-6 on sub-VP) the last levels' steps are
# too small to move anything and the samples keep the spread of the level where they froze.
# NCSN's σ_L = 0.01 for pixels in [0, 1] (std ≈ 0.25–0.3) is 0.03–0.04 of the data's scale; 0.02
# measured best on mixtures with 20–100 steps per level (docs/samplers.md).
SIGMA_MIN_OVER_DATA_STD = 0.02


class AnnealedLangevinDriver(_Driver):
    """NCSN's annealed Langevin dynamics (Algorithm 1), optionally with NCSNv2's denoising.

    On discrete models the σ levels are the model's. On SDE models ``num_scales`` geometric
    levels run from the SDE's σ(T) down to ``sigma_min``; null takes it from the data's scale,
    ``max(σ(1e-5), 0.02 · data std)``, when the model knows its data's moments (σ(1e-5)
    otherwise). Give at most one of ``eps`` (paper) and ``step_lr`` (official code, = ε/2);
    with neither, ε = 0.4 σ_L² (the official NCSN runner's step).
    """

    name = "ald"

    def __init__(
        self,
        n_steps_each: int = 100,
        eps: float | None = None,
        step_lr: float | None = None,
        final_denoise: bool = False,
        num_scales: int = 100,
        sigma_min: float | None = None,
        **init,
    ):
        super().__init__(**{"init": "uniform", **init})
        if sigma_min is not None and not sigma_min > 0:
            raise ValueError(f"sigma_min must be > 0 or null (from the data), got {sigma_min}")
        _need_int("n_steps_each", n_steps_each, hint=" (Langevin steps per level; NCSN uses 100)")
        _need_int("num_scales", num_scales, 2, " (levels on SDE models; 100 is the default)")
        _need_positive("eps", eps, " (the paper's step ε)", nullable=True)
        _need_positive("step_lr", step_lr, " (the official code's step, = ε/2)", nullable=True)
        if eps is not None and step_lr is not None:
            raise ValueError(
                f"eps={eps} and step_lr={step_lr} both set the Langevin step (step_lr = eps/2); "
                "give one and set the other to null"
            )
        self.n_steps_each, self.eps, self.step_lr = n_steps_each, eps, step_lr
        self.final_denoise, self.num_scales, self.sigma_min = final_denoise, num_scales, sigma_min
        self.sigma_min_used: float | None = None

    def check(self, model) -> None:
        if self.sigma_min is not None:
            model.noise.annealing_sigmas(self.num_scales, self.sigma_min)

    def sigmas(self, model) -> Tensor:
        """The model's own levels (discrete), else geometric levels from σ(T) down."""
        data_min, moments = None, _data_moments(model)
        if moments is not None:
            lo, hi = model.noise.sigma_range()
            data_min = min(max(lo, SIGMA_MIN_OVER_DATA_STD * moments.data_std()), hi / 2)
        return model.noise.annealing_sigmas(self.num_scales, self.sigma_min, default_min=data_min)

    def __call__(self, model, shape, *, device="cpu", generator=None, progress=False):
        from scorelab.sampling.langevin import annealed_langevin

        sigmas = self.sigmas(model).to(device)
        self.sigma_min_used = float(sigmas[-1])
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
    reverse-diffusion and ancestral sampling are this driver with no corrector. They start from
    the prior N(0, prior_std² I), or with ``init="uniform"`` uniformly on
    ``[init_low, init_high]``: their noise corrects a start that differs from p_T.
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
        _need_positive("eps", eps, " (the smallest time; null: 1e-5 VE, 1e-3 VP)", nullable=True)
        self.predictor, self.corrector = predictor, corrector
        self.n_steps, self.eps, self.denoise, self.name = n_steps, eps, denoise, name

    def check(self, model) -> None:
        sde = _sde_of(model, self.name)
        _check_eps_below_T(self.eps, sde)
        # the step objects validate their knobs (snr, n_steps ...) when built: build them now
        for part in ("predictor", "corrector"):
            step = getattr(self, part)
            if step is None:
                continue
            try:
                step(sde, model.time_score())
            except ValueError as err:
                raise ValueError(f"sampler.{part}: {err}") from None

    def __call__(
        self, model, shape, *, device="cpu", generator=None, progress=False, sample=None, **given
    ):
        """Draw ``shape``; ``sample`` (default :func:`~scorelab.sampling.pc.pc_sampler`) may be a
        conditional sampler with pc_sampler's keywords, ``given`` its own (known, mask, grey)."""
        from scorelab.sampling.pc import NoneCorrector, pc_sampler

        self.check(model)
        sample = sample or pc_sampler
        sde = model.noise
        if self.init == "uniform":  # uniform on [init_low, init_high]
            x = self.start(shape, sde.prior_std, device, generator)
        else:
            x = sde.prior_sampling(shape, generator=generator, device=device)
            self.started_from = {"kind": "prior", "mean": 0.0, "std": float(sde.prior_std)}
        n = self.n_steps or sde.N
        with _progress(n, self.name, progress) as cb:
            return sample(
                model.time_score(),
                x,
                sde,
                **given,
                predictor=self.predictor,
                corrector=self.corrector or NoneCorrector,
                n_steps=n,
                eps=self.eps,
                denoise=self.denoise,
                callback=cb,
                generator=generator,
            )


class ODEDriver(_DeterministicDriver):
    """The probability-flow ODE, adaptive (dopri5/rk45) or fixed-step (euler, heun).

    Starts at t = T from the Gaussian with the marginal's moments, N(alpha(T)·mean,
    alpha(T)²·var + std(T)²), when the model knows its data's moments (``init="auto"``, see
    :class:`_DeterministicDriver`), else from the SDE's prior.
    """

    name = "ode"

    def __init__(
        self,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        eps: float | None = None,
        n_steps: int = 100,
        **init,
    ):
        super().__init__(**init)
        from scorelab.sampling.ode import ADAPTIVE_METHODS, FIXED_METHODS

        if method not in (*ADAPTIVE_METHODS, *FIXED_METHODS):
            raise ValueError(
                f"method={method!r} is not an ODE solver; use one of "
                f"{', '.join((*ADAPTIVE_METHODS, *FIXED_METHODS))}"
            )
        _need_positive("rtol", rtol, " (the adaptive solver's tolerance; 1e-5 is the default)")
        _need_positive("atol", atol, " (the adaptive solver's tolerance; 1e-5 is the default)")
        _need_int("n_steps", n_steps, hint=" (steps of the fixed-step methods)")
        _need_positive("eps", eps, " (the smallest time)", nullable=True)
        self.method, self.rtol, self.atol, self.eps, self.n_steps = method, rtol, atol, eps, n_steps

    def check(self, model) -> None:
        _check_eps_below_T(self.eps, _sde_of(model, self.name))

    def __call__(self, model, shape, *, device="cpu", generator=None, progress=False):
        from scorelab.sampling.ode import ode_sampler

        sde = _sde_of(model, self.name)
        alpha, std = sde.marginal_coeffs(torch.tensor([sde.T], dtype=torch.float64))
        x = self.initial_state(
            model,
            shape,
            std=float(std),
            alpha=float(alpha),
            prior_std=float(sde.prior_std),
            device=device,
            generator=generator,
        )
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


# EDM's σ range (Karras et al. 2022). A VP or sub-VP SDE spans σ(1e-5)…σ(1) ≈ 1e-3 (VP) or 1e-6
# (sub-VP) … 152: Karras steps crowd into the levels below 0.002 and spend the 18-step budget
# where nothing changes, so the model's range is clamped to this one unless given.
EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0


class EDMHeunDriver(_DeterministicDriver):
    """EDM's 2nd-order Heun sampler on the Karras σ schedule (18 steps = 35 NFE).

    The σ range is ``[sigma_min, sigma_max]`` where given; a null end is the model's own,
    clamped to ``[clamp_sigma_min, clamp_sigma_max]`` (EDM's [0.002, 80] by default; null turns
    that end's clamp off). The sampler works in VE coordinates, on VP models too, so it starts
    from N(mean, var + σ_0²) when the model knows its data's moments (``init="auto"``, see
    :class:`_DeterministicDriver`), else from N(0, σ_0² I).
    """

    name = "heun"

    def __init__(
        self,
        num_steps: int = 18,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        rho: float = 7.0,
        s_churn: float = 0.0,
        clamp_sigma_min: float | None = EDM_SIGMA_MIN,
        clamp_sigma_max: float | None = EDM_SIGMA_MAX,
        **init,
    ):
        super().__init__(**init)
        for key, v in (("clamp_sigma_min", clamp_sigma_min), ("clamp_sigma_max", clamp_sigma_max)):
            if v is not None and not v > 0:
                raise ValueError(f"{key} must be > 0 or null (no clamp), got {v}")
        if None not in (clamp_sigma_min, clamp_sigma_max) and not clamp_sigma_max > clamp_sigma_min:
            raise ValueError(
                f"clamp_sigma_max must be > clamp_sigma_min = {clamp_sigma_min}, got "
                f"{clamp_sigma_max}"
            )
        _need_int("num_steps", num_steps, hint=" (EDM uses 18)")
        _need_positive("rho", rho, " (the Karras schedule's exponent; EDM uses 7)")
        if not (isinstance(s_churn, int | float) and 0 <= s_churn < float("inf")):
            raise ValueError(f"s_churn={s_churn!r} must be >= 0 (0: deterministic; EDM's 40-80)")
        for key, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
            _need_positive(key, v, " (null: the model's own, clamped)", nullable=True)
        if None not in (sigma_min, sigma_max) and not sigma_max > sigma_min:
            raise ValueError(
                f"sigma_max must be > sigma_min = {sigma_min}, got sigma_max = {sigma_max}; "
                "swap them"
            )
        self.num_steps, self.sigma_min, self.sigma_max = num_steps, sigma_min, sigma_max
        self.rho, self.s_churn = rho, s_churn
        self.clamp_sigma_min, self.clamp_sigma_max = clamp_sigma_min, clamp_sigma_max

    def sigma_range(self, model) -> tuple[float, float]:
        """(σ_min, σ_max) of the Karras schedule for ``model``."""
        lo, hi = model.noise.sigma_range()
        if self.sigma_min is not None:
            lo = self.sigma_min
        elif self.clamp_sigma_min is not None:
            lo = max(lo, self.clamp_sigma_min)
        if self.sigma_max is not None:
            hi = self.sigma_max
        elif self.clamp_sigma_max is not None:
            hi = min(hi, self.clamp_sigma_max)
        return lo, hi

    def check(self, model) -> None:
        lo, hi = self.sigma_range(model)
        if not hi > lo:
            raise ValueError(
                f"sampler=heun's sigma range [{lo:.4g}, {hi:.4g}] is empty for this model; set "
                "sampler.sigma_min < sampler.sigma_max"
            )

    def sigmas(self, model) -> Tensor:
        lo, hi = self.sigma_range(model)
        s = karras_sigmas(self.num_steps, lo, hi, self.rho)
        return torch.cat([s, s.new_zeros(1)])

    def __call__(self, model, shape, *, device="cpu", generator=None, progress=False):
        sigmas = self.sigmas(model).to(device)
        sigma0 = float(sigmas[0])
        x = self.initial_state(
            model,
            shape,
            std=sigma0,
            alpha=1.0,
            prior_std=sigma0,
            device=device,
            generator=generator,
        )
        # On SDE models the sampler runs in VE-equivalent coordinates y = x / alpha(t); its
        # last level is σ = 0, where alpha = 1, so the result needs no rescaling.
        with _progress(self.num_steps, self.name, progress) as cb:
            return self.solve(model.sigma_score(), x, sigmas, callback=cb, generator=generator)

    def solve(self, score, x, sigmas, *, callback, generator):
        """The sampling function on the σ schedule (EDM-Heun here)."""
        from scorelab.sampling.edm import edm_heun

        return edm_heun(
            score, x, sigmas, s_churn=self.s_churn, callback=callback, generator=generator
        )


class DPMSolverDriver(EDMHeunDriver):
    """DPM-Solver++ multistep (2M or 3M) on the same Karras σ schedule and start as
    ``sampler=heun``: one score evaluation per level, so ``num_steps`` levels cost ``num_steps``
    NFE. ``form``: ``dpm-solver`` (the published updates) or ``taylor`` (see
    :func:`scorelab.sampling.dpm_solver.dpmpp_multistep`)."""

    name = "dpmpp"

    def __init__(self, num_steps: int = 20, order: int = 2, form: str = "dpm-solver", **kw):
        from scorelab.sampling.dpm_solver import check_order_form

        check_order_form(order, form)
        if kw.get("s_churn", 0.0) != 0.0:
            raise ValueError(
                f"sampler.s_churn={kw['s_churn']} has no meaning for the deterministic "
                "DPM-Solver++; drop it, or use sampler=heun for EDM's stochastic sampler"
            )
        super().__init__(num_steps=num_steps, **kw)
        self.order, self.form = order, form

    def solve(self, score, x, sigmas, *, callback, generator):
        from scorelab.sampling.dpm_solver import dpmpp_multistep

        return dpmpp_multistep(
            score, x, sigmas, order=self.order, form=self.form, callback=callback
        )
