"""Probability-flow ODE log-likelihood against the exact density of a 2-D Gaussian mixture.

With the exact score, the ODE gives log p_eps(x) exactly except for (a) the solver tolerance and
(b) the prior mismatch log N(z; 0, prior_std² I) - log p_T(z). (b) is removed by swapping in the
exact log p_T(z); then the exact-divergence error is below 5e-3 nats at rtol = atol = 1e-5.
Without the swap, VE needs a σ_max well above the data spread (100 here, not 20).
"""

from __future__ import annotations

import math

import pytest
import torch

from scorelab import toy
from scorelab.likelihood import bits_per_dim, dequantize, ode_likelihood
from scorelab.sde import VESDE, VPSDE
from thread_helpers import one_thread  # noqa: F401

MIX = toy.ncsn_toy_mixture()
B = 32
EPS = 1e-5


def _data() -> torch.Tensor:
    return MIX.sample(B, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _truth(x: torch.Tensor, sde) -> torch.Tensor:
    t = torch.full((x.shape[0],), EPS, dtype=torch.float64)
    return MIX.log_prob_perturbed(x, *sde.marginal_coeffs(t))


SDES = {"ve": lambda: VESDE(0.01, 100.0), "vp": lambda: VPSDE()}


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_exact_divergence_matches_the_mixture_density(sde_name):
    sde = SDES[sde_name]()
    x = _data()
    out = ode_likelihood(toy.oracle_time_score(MIX, sde), x, sde, divergence="exact", eps=EPS)
    truth = _truth(x, sde)
    # Prior mismatch only: at σ_max = 100 (VE) and T = 1 (VP) it stays below 0.1 nats.
    assert (out.logp - truth).abs().max() < 0.1
    # With the exact log p_T(z) in place of the prior, only the solver error remains.
    t_end = torch.ones(B, dtype=torch.float64)
    exact_end = MIX.log_prob_perturbed(out.z, *sde.marginal_coeffs(t_end))
    assert (exact_end + out.delta_logp - truth).abs().max() < 5e-3
    torch.testing.assert_close(out.logp, out.prior_logp + out.delta_logp)
    assert out.net_calls == out.nfe > 0


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
@pytest.mark.parametrize("kind", ["hutchinson_rademacher", "hutchinson_gaussian"])
def test_hutchinson_is_unbiased(sde_name, kind):
    """16 probes per point, solved together: the mean error over all 512 estimates is within
    4 standard errors of the exact-divergence answer."""
    sde = SDES[sde_name]()
    x = _data()
    R = 16
    score = toy.oracle_time_score(MIX, sde)
    g = torch.Generator().manual_seed(1)
    out = ode_likelihood(score, x.repeat(R, 1), sde, divergence=kind, eps=EPS, generator=g)
    ref = ode_likelihood(score, x, sde, divergence="exact", eps=EPS).logp
    err = out.logp.reshape(R, B) - ref
    se = err.std() / math.sqrt(err.numel())
    assert err.mean().abs() < 4 * se + 1e-3
    assert out.net_calls == out.nfe  # one score evaluation per ODE evaluation


def test_single_forward_pass_per_evaluation():
    sde = VPSDE()
    calls = {"n": 0}
    base = toy.oracle_time_score(MIX, sde)

    def score(x, t):
        calls["n"] += 1
        return base(x, t)

    out = ode_likelihood(score, _data(), sde, generator=torch.Generator().manual_seed(0))
    assert calls["n"] == out.nfe == out.net_calls


def test_exact_refuses_high_dimension_and_bad_arguments():
    sde = VPSDE()
    single = toy.GaussianMixture([1.0], [[0.0] * 65], 1.0)
    score = toy.oracle_time_score(single, sde)
    with pytest.raises(ValueError, match="exact"):
        ode_likelihood(score, torch.zeros(2, 65), sde, divergence="exact")
    with pytest.raises(ValueError, match="divergence"):
        ode_likelihood(score, torch.zeros(2, 65), sde, divergence="hutch")
    with pytest.raises(ValueError, match="eps"):
        ode_likelihood(score, torch.zeros(2, 65), sde, eps=0.0)
    with pytest.raises(ValueError, match="rtol"):
        ode_likelihood(score, torch.zeros(2, 65), sde, rtol=0.0)


def test_image_shaped_input_and_standard_normal():
    """N(0, I) data under VP: p_t = N(0, I) for all t, so the likelihood is exact."""
    sde = VPSDE()
    single = toy.GaussianMixture([1.0], [[0.0] * 12], 1.0)
    score = toy.oracle_time_score(single, sde)
    x = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = ode_likelihood(score, x, sde, generator=torch.Generator().manual_seed(1))
    expected = -0.5 * x.flatten(1).pow(2).sum(1) - 6 * math.log(2 * math.pi)
    torch.testing.assert_close(out.logp, expected, atol=1e-4, rtol=0)
    assert out.z.shape == x.shape


def test_bits_per_dim_offsets():
    """Uniform density on the data range: 8 bits per pixel exactly, both conventions."""
    D = 3 * 32 * 32
    logp_unit = torch.zeros(2)  # uniform on [0,1]^D has density 1
    logp_pm1 = torch.full((2,), -D * math.log(2.0))  # uniform on [-1,1]^D
    torch.testing.assert_close(
        bits_per_dim(logp_unit, D, data_range="zero_one"), torch.full((2,), 8.0)
    )
    torch.testing.assert_close(bits_per_dim(logp_pm1, D), torch.full((2,), 8.0))
    assert bits_per_dim(torch.zeros(1), D).item() == pytest.approx(7.0)
    with pytest.raises(ValueError, match="data_range"):
        bits_per_dim(logp_unit, D, data_range="0-255")
    with pytest.raises(ValueError, match="dim"):
        bits_per_dim(logp_unit, 0)


def test_dequantize_stays_in_the_cell():
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, 256, (64, 3, 4, 4), generator=g, dtype=torch.uint8)
    y = dequantize(k, g)
    assert y.dtype == torch.float32
    assert ((y * 256).floor() == k.float()).all()
    y_float = dequantize(k.float() / 255, g, data_range="minus_one_one")
    assert (((y_float + 1) / 2 * 256).floor() == k.float()).all()
    with pytest.raises(ValueError, match="levels"):
        dequantize(torch.full((2,), 300), g)
