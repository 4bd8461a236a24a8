"""NFE counting, the update rules on one step, reproducibility and argument checks."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from scorelab import schedules, toy
from scorelab.sampling.api import (
    AncestralSamplingPredictor,
    AnnealedLangevinCorrector,
    EulerMaruyamaPredictor,
    LangevinCorrector,
    NoneCorrector,
    NonePredictor,
    ReverseDiffusionPredictor,
    ancestral_sampler,
    edm_heun,
    ode_sampler,
    pc_sampler,
)
from scorelab.sde import VESDE, VPSDE, subVPSDE

MIX = toy.ncsn_toy_mixture()


def _x(sde, n=16, seed=0, shape=(2,)):
    return sde.prior_sampling((n, *shape), generator=torch.Generator().manual_seed(seed))


def test_pc_nfe_is_2n_with_one_corrector_step():
    sde = VESDE(0.01, 50.0, 25)
    out = pc_sampler(toy.oracle_time_score(MIX, sde), _x(sde), sde, corrector=LangevinCorrector)
    assert out.nfe == 50 and out.net_calls == 50


def test_pc_nfe_with_two_corrector_steps_and_no_predictor():
    sde = VPSDE(N=10)
    score = toy.oracle_time_score(MIX, sde)
    corr = functools.partial(LangevinCorrector, snr=0.1, n_steps=2)
    assert pc_sampler(score, _x(sde), sde, corrector=corr).nfe == 30
    out = pc_sampler(score, _x(sde), sde, predictor=NonePredictor, corrector=corr)
    assert out.nfe == 20


def test_n_steps_rediscretises_the_sde():
    sde = VESDE(0.01, 50.0, 1000)
    seen = []
    out = pc_sampler(toy.oracle_time_score(MIX, sde), _x(sde), sde, n_steps=7, callback=seen.append)
    assert out.nfe == 7 and len(seen) == 7
    assert seen[0]["t"][0].item() == 1.0
    assert seen[-1]["t"][0].item() == pytest.approx(1e-5)


def test_edm_heun_18_steps_is_35_nfe_and_appends_zero():
    score = toy.oracle_sigma_score(MIX)
    sig = schedules.karras_sigmas(18)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0)) * 80
    seen = []
    out = edm_heun(score, x, sig, callback=seen.append)
    assert out.nfe == 35 and out.net_calls == 35 and len(seen) == 18
    assert seen[-1]["sigma"][0].item() == 0.0
    out0 = edm_heun(score, x, torch.cat([sig, sig.new_zeros(1)]))
    torch.testing.assert_close(out.x, out0.x)


def test_edm_churn_uses_the_generator():
    score = toy.oracle_sigma_score(MIX)
    sig = schedules.karras_sigmas(6)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0)) * 80
    a = edm_heun(score, x, sig, s_churn=10.0, generator=torch.Generator().manual_seed(3))
    b = edm_heun(score, x, sig, s_churn=10.0, generator=torch.Generator().manual_seed(3))
    c = edm_heun(score, x, sig, s_churn=0.0)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)


def test_ode_heun_is_second_order():
    """Probability-flow ODE of one Gaussian: halving h cuts the Heun error ~4x, Euler ~2x."""
    single = toy.GaussianMixture([1.0], [[2.0, -1.0]], 0.5)
    sde = VPSDE(N=10)
    score = toy.oracle_time_score(single, sde)
    x = _x(sde, n=8).double()
    ref = ode_sampler(score, x, sde, method="dopri5", rtol=1e-10, atol=1e-10, denoise=False).x
    errs = [
        (ode_sampler(score, x, sde, method="heun", n_steps=n, denoise=False).x - ref).abs().max()
        for n in (20, 40)
    ]
    assert 3.0 < (errs[0] / errs[1]).item() < 5.0
    eul = [
        (ode_sampler(score, x, sde, method="euler", n_steps=n, denoise=False).x - ref).abs().max()
        for n in (20, 40)
    ]
    assert 1.6 < (eul[0] / eul[1]).item() < 2.5


def test_reproducible_with_generator_and_any_shape():
    sde = VESDE(0.01, 10.0, 5)
    single = toy.GaussianMixture([1.0], [[0.0] * 12], 1.0)
    score = toy.oracle_time_score(single, sde)
    x = _x(sde, n=3, shape=(3, 2, 2))
    kw = dict(corrector=LangevinCorrector)
    a = pc_sampler(score, x, sde, generator=torch.Generator().manual_seed(1), **kw)
    b = pc_sampler(score, x, sde, generator=torch.Generator().manual_seed(1), **kw)
    assert a.x.shape == (3, 3, 2, 2) and torch.equal(a.x, b.x)
    assert torch.equal(a.x, a.x_mean)  # denoise=True returns the mean


def test_langevin_corrector_step_size_rule():
    """ε = 2 α (r ‖z‖/‖s‖)² with batch-mean norms; x_mean = x + ε s, x = x_mean + √(2ε) z."""
    sde = VPSDE(N=100)
    score = toy.oracle_time_score(MIX, sde)
    x = _x(sde, n=32).double()
    t = torch.full((32,), 0.5, dtype=torch.float64)
    corr = LangevinCorrector(sde, score, snr=0.2, generator=torch.Generator().manual_seed(0))
    x_new, x_mean = corr.step(x, t)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    s = score(x, t)
    alpha = sde.alphas[sde.timestep_index(t)][0].item()
    eps = 2 * alpha * (0.2 * z.norm(dim=1).mean() / s.norm(dim=1).mean()) ** 2
    torch.testing.assert_close(x_mean, x + eps * s)
    torch.testing.assert_close(x_new, x + eps * s + torch.sqrt(2 * eps) * z)


def test_ancestral_ve_step_matches_smld():
    sde = VESDE(0.1, 10.0, 5)
    score = toy.oracle_time_score(MIX, sde)
    x = _x(sde, n=4).double()
    t = torch.full((4,), 0.75, dtype=torch.float64)  # index 3
    pred = AncestralSamplingPredictor(sde, score, generator=torch.Generator().manual_seed(0))
    _, x_mean = pred.step(x, t)
    s3, s2 = sde.discrete_sigmas[3].item(), sde.discrete_sigmas[2].item()
    torch.testing.assert_close(x_mean, x + (s3**2 - s2**2) * score(x, t))


def test_em_probability_flow_has_no_noise():
    sde = VESDE(0.01, 10.0, 5)
    score = toy.oracle_time_score(MIX, sde)
    pred = functools.partial(EulerMaruyamaPredictor, probability_flow=True)
    a = pc_sampler(score, _x(sde), sde, predictor=pred, generator=torch.Generator().manual_seed(0))
    b = pc_sampler(score, _x(sde), sde, predictor=pred, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.x, b.x)


def test_annealed_langevin_corrector_runs():
    sde = VESDE(0.01, 10.0, 5)
    score = toy.oracle_time_score(MIX, sde)
    corr = functools.partial(AnnealedLangevinCorrector, snr=0.1, n_steps=2)
    out = pc_sampler(score, _x(sde), sde, corrector=corr)
    assert out.nfe == 15 and torch.isfinite(out.x).all()


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("snr", [0.0, -0.1, math.nan])
def test_snr_must_be_positive(snr):
    sde = VESDE(N=5)
    with pytest.raises(ValueError, match="snr"):
        LangevinCorrector(sde, toy.oracle_time_score(MIX, sde), snr=snr)


@pytest.mark.parametrize("n_steps", [0, -1, 1.5, True])
def test_corrector_n_steps_must_be_a_positive_integer(n_steps):
    sde = VESDE(N=5)
    with pytest.raises(ValueError, match="n_steps"):
        AnnealedLangevinCorrector(sde, toy.oracle_time_score(MIX, sde), n_steps=n_steps)


def test_ancestral_refuses_subvp():
    sde = subVPSDE(N=5)
    score = toy.oracle_time_score(MIX, sde)
    with pytest.raises(ValueError, match="sde.*subVPSDE"):
        ancestral_sampler(score, _x(sde), sde)
    with pytest.raises(ValueError, match="sde"):
        AncestralSamplingPredictor(sde, score)


def test_sampler_argument_checks():
    sde = VESDE(N=5)
    score = toy.oracle_time_score(MIX, sde)
    with pytest.raises(ValueError, match="n_steps"):
        pc_sampler(score, _x(sde), sde, n_steps=0)
    with pytest.raises(ValueError, match="eps"):
        pc_sampler(score, _x(sde), sde, eps=1.5)
    with pytest.raises(ValueError, match="predictor"):
        pc_sampler(score, _x(sde), sde, predictor=ReverseDiffusionPredictor(sde, score))
    with pytest.raises(ValueError, match="x must"):
        pc_sampler(score, torch.zeros(()), sde)
    with pytest.raises(ValueError, match="sde"):
        pc_sampler(score, _x(sde), "ve")
    with pytest.raises(ValueError, match="method"):
        ode_sampler(score, _x(sde), sde, method="rk4")
    with pytest.raises(ValueError, match="n_steps"):
        ode_sampler(score, _x(sde), sde, method="euler", n_steps=0)
    with pytest.raises(ValueError, match="sigmas"):
        edm_heun(toy.oracle_sigma_score(MIX), _x(sde), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="s_churn"):
        edm_heun(toy.oracle_sigma_score(MIX), _x(sde), torch.tensor([2.0, 1.0]), s_churn=-1)
    assert NoneCorrector(sde, score).step(_x(sde), torch.ones(16))[0].shape == (16, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_with_a_cuda_generator():
    sde = VPSDE(N=20)
    score = toy.oracle_time_score(MIX, sde)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = sde.prior_sampling((64, 2), generator=g, device="cuda")
    out = pc_sampler(score, x, sde, corrector=LangevinCorrector, generator=g)
    assert out.x.device.type == "cuda" and out.nfe == 40
    assert ode_sampler(score, x, sde).x.device.type == "cuda"
