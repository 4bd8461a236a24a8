"""The moment-matched start of the deterministic samplers (EDM-Heun, probability-flow ODE).

Started from N(0, σ_max² I), a deterministic sampler carries the data mean's offset into the
result: on NCSN's 0.2·N((−5,−5), I) + 0.8·N((5,5), I) at σ_max = 20 the 0.2 mode gets 0.254 of
the samples (the analytic prediction below). Started from N(μ_data, σ_max² I + diag(var_data))
it gets 0.196.
"""

from __future__ import annotations

import math

import pytest
import torch

from run_helpers import sampler_of
from scorelab import schedules, toy
from scorelab.metrics.toy import mode_weights
from scorelab.nets.precond import OracleScoreModel
from scorelab.sampling.start import Start
from scorelab.sde import VESDE, VPSDE

N = 20_000  # binomial std of a mode weight near 0.2: 0.003
SIGMA_MAX = 20.0
# The samplers' 35 steps and the binomial noise: measured within 0.006 of the prediction.
TOL = 0.01


def predicted_small_mode_weight(start_mean: torch.Tensor, start_std: torch.Tensor) -> float:
    """Share of the 0.2 mode when the exact probability-flow ODE starts from N(mean, diag(std²)).

    Along v = (x₁ + x₂)/√2 the data are 0.2·N(−5√2, 1) + 0.8·N(5√2, 1); the orthogonal
    coordinate has the same law N(0, 1) in both modes, so its flow is linear and independent of
    v, and the flow of v depends on v alone. A 1-D flow is monotone: the points that end in the
    small mode are those that start below c, the 0.2-quantile of p_T = 0.2·N(−5√2, 1 + σ_max²)
    + 0.8·N(5√2, 1 + σ_max²). The weight is therefore P_start(v < c)."""
    a, s_t = 5 * math.sqrt(2), math.sqrt(1 + SIGMA_MAX**2)
    ndtr = lambda z: 0.5 * math.erfc(-z / math.sqrt(2))

    def cdf_t(c: float) -> float:
        return 0.2 * ndtr((c + a) / s_t) + 0.8 * ndtr((c - a) / s_t)

    lo, hi = -10 * s_t, 10 * s_t
    for _ in range(200):  # bisection for cdf_t(c) = 0.2
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf_t(mid) < 0.2 else (lo, mid)
    m = float(start_mean[0] + start_mean[1]) / math.sqrt(2)
    s = math.sqrt(float(start_std[0] ** 2 + start_std[1] ** 2) / 2)
    return ndtr((lo - m) / s)


PRIOR = (torch.zeros(2), torch.full((2,), SIGMA_MAX))


@pytest.fixture(scope="module")
def setup():
    mix = toy.ncsn_toy_mixture()
    data = mix.sample(10_000, generator=torch.Generator().manual_seed(1)).float()
    model = OracleScoreModel(mix, VESDE(0.01, SIGMA_MAX, 1000))
    return mix, data, model


def small_mode_weight(driver, mix, model) -> tuple[float, int]:
    res = driver(model, (N, 2), generator=torch.Generator().manual_seed(0))
    return float(mode_weights(res.x, mix.means)[0]), res.nfe


def heun(*overrides: str, start: Start | None = None):
    """EDM-Heun on [0.002, SIGMA_MAX]; ``start`` replaces the configured start."""
    drv = sampler_of(
        "heun", "schedule.sigma_min=0.002", f"schedule.sigma_max={SIGMA_MAX}", *overrides
    )
    drv.start = start or drv.start
    return drv


def ode(*overrides: str, start: Start | None = None):
    """The probability-flow ODE with 17 Heun steps (35 NFE)."""
    drv = sampler_of("ode", "sampler.method=heun", "schedule.n_steps=17", *overrides)
    drv.start = start or drv.start
    return drv


def test_the_prediction_itself():
    """The exact mixture at σ_max as the start gives the true 0.2; the prior start 0.254, the
    exact first two moments of p_T 0.2 within 0.01 (p_T is nearly Gaussian at σ_max = 20)."""
    assert predicted_small_mode_weight(*PRIOR) == pytest.approx(0.2540, abs=1e-3)
    # Moments of p_T along each coordinate: mean 3, variance 1 + 16 + 400.
    matched = predicted_small_mode_weight(torch.full((2,), 3.0), torch.full((2,), 417**0.5))
    assert matched == pytest.approx(0.196, abs=1e-3)


def test_helper_gives_the_moments_of_the_noised_data():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(50_000, 3, generator=g, dtype=torch.float64) * torch.tensor(
        [1.0, 2.0, 0.5], dtype=torch.float64
    ) + torch.tensor([3.0, -1.0, 0.0], dtype=torch.float64)
    mean, std = schedules.moment_matched_start(data, 20.0)
    assert mean.shape == std.shape == (3,) and mean.dtype == torch.float64
    torch.testing.assert_close(mean, data.mean(0))
    torch.testing.assert_close(std, (data.var(0) + 400.0).sqrt())
    # a VP marginal alpha·x_0 + sigma·z
    mean, std = schedules.moment_matched_start(data, 0.6, alpha=0.8)
    torch.testing.assert_close(mean, 0.8 * data.mean(0))
    torch.testing.assert_close(std, (0.64 * data.var(0) + 0.36).sqrt())
    with pytest.raises(ValueError, match="N >= 2"):
        schedules.moment_matched_start(data[:1], 1.0)
    with pytest.raises(ValueError, match="sigma"):
        schedules.moment_matched_start(data, 0.0)


def test_edm_heun_small_mode_weight(setup):
    mix, data, model = setup
    mean, std = schedules.moment_matched_start(data, SIGMA_MAX)
    old = heun("init=prior")
    w0, nfe = small_mode_weight(old, mix, model)
    assert nfe == 35
    assert w0 == pytest.approx(predicted_small_mode_weight(*PRIOR), abs=TOL)  # the offset bias
    drv = heun(start=Start("auto", mean=mean, std=std))
    w1, nfe = small_mode_weight(drv, mix, model)
    assert nfe == 35
    assert w1 == pytest.approx(predicted_small_mode_weight(mean, std), abs=TOL)
    assert abs(w1 - 0.2) < abs(w0 - 0.2) - 0.03


def test_ve_ode_small_mode_weight(setup):
    mix, data, model = setup
    mean, std = schedules.moment_matched_start(data, SIGMA_MAX)
    w0, nfe = small_mode_weight(ode("init=prior"), mix, model)
    assert nfe == 35
    assert w0 == pytest.approx(predicted_small_mode_weight(*PRIOR), abs=TOL)
    drv = ode(start=Start("auto", mean=mean, std=std))
    w1, _ = small_mode_weight(drv, mix, model)
    assert w1 == pytest.approx(predicted_small_mode_weight(mean, std), abs=TOL)
    assert abs(w1 - 0.2) < abs(w0 - 0.2) - 0.03


def test_init_prior_keeps_the_old_start(setup):
    mix, _, model = setup
    old = heun("init=prior")
    g = torch.Generator().manual_seed(3)
    x_old = old(model, (64, 2), generator=g).x
    # init_std = σ_max and init_mean = 0 draw the same start from the same generator
    same = heun(start=Start("auto", mean=0.0, std=SIGMA_MAX))
    x_same = same(model, (64, 2), generator=torch.Generator().manual_seed(3)).x
    torch.testing.assert_close(x_old, x_same)
    start = sampler_of("ode").start
    assert start.kind == "auto" and start.mean is None and start.std is None


def test_a_shifted_mean_alone_keeps_the_prior_std():
    model = OracleScoreModel(toy.ncsn_toy_mixture(), VPSDE(0.1, 20.0, 1000))
    exact, seen = model._score, []

    def spy(x, t):
        if not seen:
            seen.append(x.clone())
        return exact(x, t)

    model._score = spy
    drv = sampler_of("ode", "sampler.method=euler", "schedule.n_steps=1", "init.mean=[1.0,-2.0]")
    drv(model, (20_000, 2), generator=torch.Generator().manual_seed(0))
    x0 = seen[0]  # the VP prior N(0, I), shifted
    torch.testing.assert_close(x0.mean(0), torch.tensor([1.0, -2.0]), atol=0.03, rtol=0)
    torch.testing.assert_close(x0.std(0), torch.ones(2), atol=0.03, rtol=0)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="need init=prior or auto"):
        Start("uniform", mean=0.0)
    with pytest.raises(ValueError, match="is not a start"):
        Start("data")
    with pytest.raises(ValueError, match=r"init: std=\[1.0, 0.0\] must be > 0"):
        sampler_of("ode", "init.std=[1.0,0.0]")
