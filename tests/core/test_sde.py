"""VE, VP and sub-VP SDEs: marginals against simulation and ODEs, discretisations, reverse
processes, priors, and the σ ↔ t conversions, on tiny float64 tensors."""

from __future__ import annotations

import math

import pytest
import torch

from scorelab.sde import (
    VESDE,
    VPSDE,
    sigma_score_from_time_score,
    subVPSDE,
)
from scorelab.toy import GaussianMixture, oracle_sigma_score, oracle_time_score

F64 = torch.float64
SDES = [VESDE(0.01, 5.0), VPSDE(), subVPSDE()]
IDS = ["VE", "VP", "subVP"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tvec(*ts: float) -> torch.Tensor:
    return torch.tensor(ts, dtype=F64)


# ---------------------------------------------------------------------------------------------
# Marginals
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginal_prob_matches_euler_maruyama(sde) -> None:
    """10k 1-D paths from x_0 = 2, 2000 Euler–Maruyama steps on [0, 1].

    All three SDEs are linear, dx = a(t) x dt + g(t) dw, so the Euler–Maruyama iterates
    x_{k+1} = (1 + a_k dt) x_k + g_k √dt z_k are summed in closed form,
    x_m = P_m (x_0 + Σ_{k<m} g_k √dt z_k / P_{k+1}) with P_m = Π_{j<m} (1 + a_j dt),
    which gives the same values as the step-by-step loop at a fraction of the cost.

    Tolerances: mean within 5 SE + 1% of |mean| (Euler's O(dt) bias is ~0.5% for VP),
    std within 2.5% (its SE is 0.7%). For VE the marginal std(t) = σ(t) includes the σ_min of
    t = 0, so the paths start from x_0 + σ_min z.
    """
    n, steps, x0 = 10_000, 2000, 2.0
    g = gen(0)
    dt = sde.T / steps
    t_grid = torch.arange(steps, dtype=F64) * dt
    ones = torch.ones(steps, 1, dtype=F64)
    drift, diffusion = sde.sde(ones, t_grid)
    assert torch.allclose(sde.sde(2 * ones, t_grid)[0], 2 * drift)  # linear drift
    P = torch.cat([torch.ones(1, dtype=F64), torch.cumprod(1 + drift[:, 0] * dt, 0)])
    u = diffusion * math.sqrt(dt) / P[1:]  # weight of z_k before the factor P_m, (steps,)
    _, std0 = sde.marginal_coeffs(tvec(0.0))
    acc = x0 + std0 * torch.randn(n, generator=g, dtype=F64)
    checks = {500: 0.25, 1000: 0.5, 2000: 1.0}
    for k0 in range(0, steps, 250):  # the noise of 250 steps at a time
        acc = acc + u[k0 : k0 + 250] @ torch.randn(250, n, generator=g, dtype=F64)
        m = k0 + 250
        if m not in checks:
            continue
        x = P[m] * acc
        t_check = checks[m]
        mean, std = sde.marginal_prob(torch.full((1, 1), x0, dtype=F64), tvec(t_check))
        m_exact, s_exact = mean.item(), std.item()
        m_emp, s_emp = x.mean().item(), x.std().item()
        assert abs(m_emp - m_exact) < 5 * s_exact / math.sqrt(n) + 0.01 * abs(m_exact)
        assert abs(s_emp / s_exact - 1) < 0.025


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginal_coeffs_solve_the_moment_odes(sde) -> None:
    """For dx = a(t) x dt + g(t) dw: dα/dt = a α and d(std²)/dt = 2 a std² + g²."""
    t = tvec(0.1, 0.3, 0.6, 0.9)
    h = 1e-6
    a_p, s_p = sde.marginal_coeffs(t + h)
    a_m, s_m = sde.marginal_coeffs(t - h)
    alpha, std = sde.marginal_coeffs(t)
    drift, g = sde.sde(torch.ones(4, 1, dtype=F64), t)
    a = drift[:, 0]  # drift at x = 1 is the coefficient a(t)
    assert torch.allclose((a_p - a_m) / (2 * h), a * alpha, rtol=1e-6, atol=1e-9)
    assert torch.allclose((s_p**2 - s_m**2) / (2 * h), 2 * a * std**2 + g**2, rtol=1e-6)


def test_marginal_prob_shapes_for_images() -> None:
    x = torch.randn(3, 2, 4, 4, generator=gen(1), dtype=F64)
    mean, std = VPSDE().marginal_prob(x, tvec(0.2, 0.5, 1.0))
    alpha, _ = VPSDE().marginal_coeffs(tvec(0.2, 0.5, 1.0))
    assert mean.shape == x.shape and std.shape == (3,)
    assert torch.allclose(mean, alpha[:, None, None, None] * x)


# ---------------------------------------------------------------------------------------------
# Discretisations
# ---------------------------------------------------------------------------------------------


def grid_times(sde) -> torch.Tensor:
    return torch.arange(sde.N, dtype=F64) * sde.T / (sde.N - 1)


def test_ve_discretize_is_smld() -> None:
    """G_i² = σ_i² - σ_{i-1}² with σ_{-1} = 0, so the steps compose to x_i = x_0 + σ_i z."""
    sde = VESDE(0.01, 50.0, N=10)
    t = grid_times(sde)
    x = torch.randn(10, 3, generator=gen(2), dtype=F64)
    f, G = sde.discretize(x, t)
    assert torch.equal(f, torch.zeros_like(x))
    sig = sde.discrete_sigmas.double()
    assert torch.allclose(sig, sde.sigma(t), rtol=1e-6)
    assert torch.allclose(sig[0], torch.tensor(0.01, dtype=F64)) and math.isclose(
        sig[-1].item(), 50.0, rel_tol=1e-6
    )
    assert torch.allclose(torch.cumsum(G**2, 0), sig**2, rtol=1e-5)


def test_vp_discretize_is_ddpm() -> None:
    """x_i = √(1-β_i) x_{i-1} + √β_i z with β_i = β(t_i)/N; composed: mean √ᾱ_i, var 1 - ᾱ_i."""
    sde = VPSDE(0.1, 20.0, N=50)
    t = grid_times(sde)
    x = torch.randn(50, 2, generator=gen(3), dtype=F64)
    f, G = sde.discretize(x, t)
    beta = sde.beta(t) / sde.N
    assert torch.allclose(sde.discrete_betas.double(), beta, rtol=1e-5)
    assert torch.allclose(f + x, torch.sqrt(1 - beta)[:, None] * x, rtol=1e-5)
    assert torch.allclose(G, beta.sqrt(), rtol=1e-5)
    mean, var = 1.0, 0.0
    alphas_cumprod = torch.cumprod(sde.alphas, 0)
    for i in range(sde.N):
        mean = mean * math.sqrt(1 - beta[i].item())
        var = (1 - beta[i].item()) * var + beta[i].item()
        abar = alphas_cumprod[i].item()
        # alphas_cumprod is float32: 1 - ᾱ loses digits to cancellation near i = 0.
        assert math.isclose(mean, math.sqrt(abar), rel_tol=1e-5)
        assert math.isclose(var, 1 - abar, rel_tol=1e-4)


def test_subvp_discretize_is_euler_maruyama() -> None:
    sde = subVPSDE(N=100)
    t = tvec(0.0, 0.37, 1.0)
    x = torch.randn(3, 4, generator=gen(4), dtype=F64)
    f, G = sde.discretize(x, t)
    drift, g = sde.sde(x, t)
    assert torch.allclose(f, drift / sde.N) and torch.allclose(G, g * math.sqrt(1 / sde.N))


def test_timestep_index_maps_grid_times_to_their_index() -> None:
    sde = VPSDE(N=1000)
    i = torch.arange(sde.N)
    assert torch.equal(sde.timestep_index(i.double() / (sde.N - 1)), i)


# ---------------------------------------------------------------------------------------------
# Reverse processes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_reverse_drift_formulas(sde) -> None:
    """Reverse SDE: f - g² s with diffusion g; probability flow: f - ½ g² s with none."""
    mix = GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [2.0, 0.0]], [0.5, 1.5])
    score = oracle_time_score(mix, sde)
    x = torch.randn(5, 2, generator=gen(5), dtype=F64)
    t = tvec(0.05, 0.2, 0.5, 0.8, 1.0)
    f, g = sde.sde(x, t)
    s = score(x, t)
    rev, ode = sde.reverse(score), sde.reverse(score, probability_flow=True)
    drift, diff = rev.sde(x, t)
    assert torch.allclose(drift, f - g[:, None] ** 2 * s) and torch.equal(diff, g)
    drift, diff = ode.sde(x, t)
    assert torch.allclose(drift, f - 0.5 * g[:, None] ** 2 * s) and (diff == 0).all()
    fd, G = sde.discretize(x, t)
    rf, rG = rev.discretize(x, t)
    assert torch.allclose(rf, fd - G[:, None] ** 2 * s) and torch.equal(rG, G)
    rf, rG = ode.discretize(x, t)
    assert torch.allclose(rf, fd - 0.5 * G[:, None] ** 2 * s) and (rG == 0).all()


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_probability_flow_transports_the_gaussian_marginal(sde) -> None:
    """Data N(0, s²): p_t = N(0, v(t)), v = α² s² + std². The flow's drift is c(t) x and must
    give dv/dt = 2 c v; the reverse SDE's drift c_r x must give dv/dt = 2 c_r v - g²."""
    s0 = 0.7
    mix = GaussianMixture([1.0], [[0.0]], s0)
    score = oracle_time_score(mix, sde)
    t = tvec(0.1, 0.4, 0.7, 0.95)
    ones = torch.ones(4, 1, dtype=F64)

    def v(tt):
        alpha, std = sde.marginal_coeffs(tt)
        return alpha**2 * s0**2 + std**2

    h = 1e-6
    dv = (v(t + h) - v(t - h)) / (2 * h)
    c_ode = sde.reverse(score, probability_flow=True).sde(ones, t)[0][:, 0]
    c_rev = sde.reverse(score).sde(ones, t)[0][:, 0]
    _, g = sde.sde(ones, t)
    assert torch.allclose(dv, 2 * c_ode * v(t), rtol=1e-6)
    assert torch.allclose(dv, 2 * c_rev * v(t) - g**2, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Prior, σ(t) and score conversions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_prior_logp_equals_torch_distributions(sde) -> None:
    z = sde.prior_sampling((4, 3, 2, 2), generator=gen(6), dtype=F64)
    prior = torch.distributions.Normal(torch.tensor(0.0, dtype=F64), float(sde.prior_std))
    ref = prior.log_prob(z).sum(dim=(1, 2, 3))
    assert torch.allclose(sde.prior_logp(z), ref, rtol=1e-12)
    big = sde.prior_sampling((20_000, 1), generator=gen(7), dtype=F64)
    assert abs(big.std().item() / sde.prior_std - 1) < 0.03  # SE 0.5%


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_sigma_and_t_from_sigma_round_trip(sde) -> None:
    t = torch.linspace(1e-3, 1.0, 50, dtype=F64)
    sigma = sde.sigma(t)
    alpha, std = sde.marginal_coeffs(t)
    assert torch.allclose(sigma, std / alpha)
    assert (sigma[1:] > sigma[:-1]).all()
    assert torch.allclose(sde.t_from_sigma(sigma), t, rtol=1e-8, atol=1e-10)


def _exact_sigma(sde, t: torch.Tensor) -> torch.Tensor:
    """σ(t) = std/alpha in float64 from log alpha = -(β1-β0) t²/4 - β0 t/2, written out here:
    VP: σ = sqrt(alpha⁻² - 1); sub-VP: σ = (1 - alpha²)/alpha = 2 sinh(-log alpha)."""
    log_alpha = -0.25 * t**2 * (sde.beta_1 - sde.beta_0) - 0.5 * t * sde.beta_0
    if isinstance(sde, subVPSDE):
        return 2 * torch.sinh(-log_alpha)
    return torch.sqrt(torch.expm1(-2 * log_alpha))


@pytest.mark.parametrize("sde", [VPSDE(), subVPSDE()], ids=["VP", "subVP"])
def test_t_from_sigma_keeps_float32_precision_at_small_t(sde) -> None:
    # σ is well conditioned in t here (σ ∝ t for sub-VP, ∝ √t for VP at small t), so a float32
    # σ must give t back to a few float32 ulps: the former sub-VP form lost 5% at t = 1e-5.
    t = tvec(1e-5, 1e-4, 1e-3, 0.1, 1.0)
    sigma32 = _exact_sigma(sde, t).float()
    t32 = sde.t_from_sigma(sigma32)
    assert t32.dtype == torch.float32
    rel = ((t32.double() - t) / t).abs()
    assert rel.max() < 1e-5, f"relative error {rel.tolist()}"


def test_ve_sigma_endpoints() -> None:
    sde = VESDE(0.01, 50.0)
    assert torch.allclose(sde.sigma(tvec(0.0, 1.0)), tvec(0.01, 50.0))


@pytest.mark.parametrize("sde", [VESDE(0.01, 10.0), VPSDE(), subVPSDE()], ids=IDS)
def test_score_conversions_agree_with_the_oracle(sde) -> None:
    mix = GaussianMixture([0.25, 0.75], [[-2.0, 1.0], [1.5, -0.5]], [[0.4, 0.8], [1.0, 0.3]])
    y = 2 * torch.randn(6, 2, generator=gen(8), dtype=F64)
    sigma = tvec(0.05, 0.2, 0.7, 1.5, 3.0, 8.0)
    from_t = sigma_score_from_time_score(sde, oracle_time_score(mix, sde))
    assert torch.allclose(from_t(y, sigma), mix.score_sigma(y, sigma), rtol=1e-7, atol=1e-9)
    t = tvec(0.01, 0.1, 0.3, 0.5, 0.8, 1.0)
    from_sigma = sde.from_sigma_score(oracle_sigma_score(mix))
    assert torch.allclose(from_sigma(y, t), mix.score_t(y, t, sde), rtol=1e-7, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# Bad arguments
# ---------------------------------------------------------------------------------------------

BAD = [
    (lambda: VESDE(sigma_min=0.0), "sigma_min must be > 0"),
    (lambda: VESDE(sigma_min=1.0, sigma_max=0.5), "sigma_max must be > sigma_min"),
    (lambda: VESDE(sigma_min=1.0, sigma_max=1.0), "sigma_max must be > sigma_min"),
    (lambda: VESDE(N=0), "N must be an integer >= 1"),
    (lambda: VPSDE(N=2.5), "N must be an integer >= 1"),
    (lambda: VPSDE(beta_min=0.0), "beta_min must be > 0"),
    (lambda: subVPSDE(beta_min=-0.1), "beta_min must be > 0"),
    (lambda: VPSDE(beta_min=1.0, beta_max=0.5), "beta_max must be >= beta_min"),
]


@pytest.mark.parametrize("make, match", BAD, ids=[m for _, m in BAD])
def test_bad_arguments_raise_value_error(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()
