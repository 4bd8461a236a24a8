"""The moment-matched start of the deterministic samplers (EDM-Heun, probability-flow ODE).

Started from N(0, σ_max² I), a deterministic sampler carries the data mean's offset into the
result: on NCSN's 0.2·N((−5,−5), I) + 0.8·N((5,5), I) at σ_max = 20 and 35 NFE the 0.2 mode gets
about 0.26 of the samples. Started from N(μ_data, σ_max² I + diag(var_data)) it gets 0.2.
"""

from __future__ import annotations

import pytest
import torch

from scorelab import schedules, toy
from scorelab.generate import EDMHeunDriver, ODEDriver
from scorelab.metrics.toy import mode_weights
from scorelab.nets.precond import OracleScoreModel
from scorelab.sde import VESDE, VPSDE

N = 20_000  # binomial std of a mode weight near 0.2: 0.003
SIGMA_MAX = 20.0


@pytest.fixture(scope="module")
def setup():
    mix = toy.ncsn_toy_mixture()
    data = mix.sample(10_000, generator=torch.Generator().manual_seed(1)).float()
    model = OracleScoreModel(mix, VESDE(0.01, SIGMA_MAX, 1000))
    return mix, data, model


def small_mode_weight(driver, mix, model) -> tuple[float, int]:
    res = driver(model, (N, 2), generator=torch.Generator().manual_seed(0))
    return float(mode_weights(res.x, mix.means)[0]), res.nfe


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
    old = EDMHeunDriver(sigma_min=0.002, sigma_max=SIGMA_MAX, init="prior")
    w0, nfe = small_mode_weight(old, mix, model)
    assert nfe == 35
    assert w0 == pytest.approx(0.26, abs=0.01)  # the prior-offset bias (measured 0.2599)
    drv = EDMHeunDriver(sigma_min=0.002, sigma_max=SIGMA_MAX, init_mean=mean, init_std=std)
    w1, nfe = small_mode_weight(drv, mix, model)
    assert nfe == 35
    assert w1 == pytest.approx(0.2, abs=0.01)  # measured 0.1997


def test_ve_ode_small_mode_weight(setup):
    mix, data, model = setup
    mean, std = schedules.moment_matched_start(data, SIGMA_MAX)
    w0, nfe = small_mode_weight(ODEDriver(method="heun", n_steps=17, init="prior"), mix, model)
    assert nfe == 35
    assert w0 > 0.24  # measured 0.2535
    drv = ODEDriver(method="heun", n_steps=17, init_mean=mean, init_std=std)
    w1, _ = small_mode_weight(drv, mix, model)
    assert w1 == pytest.approx(0.2, abs=0.01)  # measured 0.1947


def test_init_prior_keeps_the_old_start(setup):
    mix, _, model = setup
    old = EDMHeunDriver(sigma_min=0.002, sigma_max=SIGMA_MAX, init="prior")
    g = torch.Generator().manual_seed(3)
    x_old = old(model, (64, 2), generator=g).x
    # init_std = σ_max and init_mean = 0 draw the same start from the same generator
    same = EDMHeunDriver(sigma_min=0.002, sigma_max=SIGMA_MAX, init_mean=0.0, init_std=SIGMA_MAX)
    x_same = same(model, (64, 2), generator=torch.Generator().manual_seed(3)).x
    torch.testing.assert_close(x_old, x_same)
    ode = ODEDriver(method="heun", n_steps=5)
    assert ode.init == "auto" and ode.init_mean is None and ode.init_std is None


def test_a_shifted_mean_alone_keeps_the_prior_std(monkeypatch):
    import scorelab.sampling.ode as ode_mod

    model = OracleScoreModel(toy.ncsn_toy_mixture(), VPSDE(0.1, 20.0, 1000))
    real, seen = ode_mod.ode_sampler, []

    def spy(score, x, sde, **kw):
        seen.append(x.clone())
        return real(score, x, sde, **kw)

    monkeypatch.setattr(ode_mod, "ode_sampler", spy)
    drv = ODEDriver(method="euler", n_steps=1, init_mean=[1.0, -2.0])
    drv(model, (20_000, 2), generator=torch.Generator().manual_seed(0))
    x0 = seen[0]  # the VP prior N(0, I), shifted
    torch.testing.assert_close(x0.mean(0), torch.tensor([1.0, -2.0]), atol=0.03, rtol=0)
    torch.testing.assert_close(x0.std(0), torch.ones(2), atol=0.03, rtol=0)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="init='prior'"):
        EDMHeunDriver(init="uniform", init_mean=0.0)
    with pytest.raises(ValueError, match="init must be one of"):
        ODEDriver(init="data")
    with pytest.raises(ValueError, match="init_std must be > 0"):
        ODEDriver(init_std=[1.0, 0.0])
