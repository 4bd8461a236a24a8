"""Score-matching losses checked against closed forms on Gaussian data and against each other.

Monte Carlo comparisons use a fixed seed and a tolerance of 5 standard errors of the observed
per-sample values (a false failure has probability < 1e-6 per check).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from scorelab.energy import EnergyScore, MLPEnergy
from scorelab.losses import (
    ContinuousDSMLoss,
    DiscreteDSMLoss,
    ImplicitScoreMatchingLoss,
    LossOutput,
    SlicedScoreMatchingLoss,
)
from scorelab.nets.precond import ScoreModel
from scorelab.schedules import geometric_sigmas
from scorelab.sde import VESDE, VPSDE, subVPSDE
from scorelab.toy import GaussianMixture, ncsn_toy_mixture, oracle_sigma_score, oracle_time_score

F64 = torch.float64
K_SE = 5.0


def assert_mc_close(values: Tensor, expected: float | Tensor, k: float = K_SE) -> None:
    """mean(values) equals ``expected`` within k standard errors of the sample mean."""
    values = values.double()
    se = values.std() / math.sqrt(values.numel())
    err = (values.mean() - torch.as_tensor(expected, dtype=F64)).abs()
    assert err <= k * se, f"|mean - expected| = {err:.3g} > {k} SE = {k * se:.3g}"


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# A diagonal Gaussian N(mu, diag(s²)) in D = 3 as a one-component mixture.
MU = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
S = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
GAUSS = GaussianMixture([1.0], MU[None], S[None])


def gauss_data(n: int, seed: int = 1) -> Tensor:
    return GAUSS.sample(n, generator=gen(seed), dtype=F64)


# ---------------------------------------------------------------------------------------------
# Denoising score matching
# ---------------------------------------------------------------------------------------------


def dsm_minimum(alpha: Tensor, std: Tensor) -> Tensor:
    """E‖std·s_t(x_t) + z‖² at the exact score for x ~ N(mu, diag s²), x_t = alpha x + std z.

    Per dim, with v = alpha² s_d²: x_t - alpha mu = alpha (x - mu) + std z and
    s_t = -(x_t - alpha mu)/(v + std²), so std s_t + z = (v z - std alpha (x - mu))/(v + std²),
    a centred Gaussian of variance (v² + std² v)/(v + std²)² = v/(v + std²).
    For VE (alpha = 1, std = σ) this is Σ_d s_d²/(s_d² + σ²).
    """
    v = alpha[:, None] ** 2 * S[None] ** 2
    return (v / (v + std[:, None] ** 2)).sum(1)


def test_discrete_dsm_minimum_matches_closed_form() -> None:
    x = gauss_data(20_000)
    sigmas = geometric_sigmas(5.0, 0.1, 6).double()
    out = DiscreteDSMLoss(sigmas)(oracle_sigma_score(GAUSS), x, generator=gen(2))
    assert isinstance(out, LossOutput)
    assert out.per_sample.shape == (x.shape[0],) and out.loss.shape == ()
    assert torch.isin(out.noise, sigmas).all()
    expected = dsm_minimum(torch.ones_like(out.noise), out.noise)
    assert_mc_close(out.per_sample - expected, 0.0)
    assert torch.allclose(out.loss, out.per_sample.mean())
    # The mean reduction divides by D = 3 with the same draws.
    mean_out = DiscreteDSMLoss(sigmas, reduce="mean")(
        oracle_sigma_score(GAUSS), x, generator=gen(2)
    )
    assert torch.allclose(mean_out.per_sample * 3, out.per_sample)


@pytest.mark.parametrize("sde", [VESDE(0.01, 10.0), VPSDE(), subVPSDE()], ids=type)
def test_continuous_dsm_minimum_matches_closed_form(sde) -> None:
    x = gauss_data(20_000)
    out = ContinuousDSMLoss(sde)(oracle_time_score(GAUSS, sde), x, generator=gen(3))
    t = out.noise
    assert ((t >= 1e-5) & (t <= sde.T)).all()
    alpha, std = sde.marginal_coeffs(t)
    assert_mc_close(out.per_sample - dsm_minimum(alpha, std), 0.0)


def test_discrete_dsm_on_mixture_is_esm_plus_constant() -> None:
    """E[DSM(s)] - E[DSM(s*)] = E[σ²‖s(x̃) - s*(x̃)‖²] for the perturbed mixture score s*.

    Both losses use the same draws (same seed); the difference minus the ESM term is a
    zero-mean cross term 2σ²(s - s*)·(s* + z/σ), by Tweedie's formula E[-z/σ | x̃] = s*(x̃).
    """
    mix = ncsn_toy_mixture()
    x = mix.sample(20_000, generator=gen(4), dtype=F64)
    sigmas = geometric_sigmas(10.0, 0.1, 10).double()
    oracle = oracle_sigma_score(mix)
    seen: dict[str, Tensor] = {}

    def model(y: Tensor, sigma: Tensor) -> Tensor:
        seen["x"], seen["sigma"] = y, sigma
        return oracle(y, sigma) + 0.3 * torch.tanh(y - 1.0)

    loss = DiscreteDSMLoss(sigmas)
    out_model = loss(model, x, generator=gen(5))
    out_oracle = loss(oracle, x, generator=gen(5))
    assert torch.equal(out_model.noise, out_oracle.noise)
    xt, sigma = seen["x"], seen["sigma"]
    esm = sigma**2 * ((model(xt, sigma) - oracle(xt, sigma)) ** 2).sum(1)
    assert_mc_close(out_model.per_sample - out_oracle.per_sample - esm, 0.0)
    assert out_model.loss > out_oracle.loss


def test_dsm_accepts_any_data_shape() -> None:
    """(B, 1, 2, 2) images give the same per-sample losses as the same points as (B, 4)."""
    mix = GaussianMixture([0.5, 0.5], [[1.0, 0, 0, -1], [0, 2, 0, 0]], 0.7)
    x = mix.sample(64, generator=gen(6), dtype=F64)
    loss = DiscreteDSMLoss([3.0, 1.0, 0.3])
    flat = loss(oracle_sigma_score(mix), x, generator=gen(7))
    img = loss(oracle_sigma_score(mix), x.reshape(64, 1, 2, 2), generator=gen(7))
    assert torch.allclose(flat.per_sample, img.per_sample)


def test_likelihood_weighting_is_g2_over_std2_times_variance_weighting() -> None:
    sde = VPSDE()
    x = gauss_data(256)
    score = oracle_time_score(GAUSS, sde)
    var = ContinuousDSMLoss(sde, "variance")(score, x, generator=gen(8))
    lik = ContinuousDSMLoss(sde, "likelihood")(score, x, generator=gen(8))
    _, std = sde.marginal_coeffs(var.noise)
    _, g = sde.sde(x, var.noise)
    assert torch.allclose(lik.per_sample, var.per_sample * g**2 / std**2)


# ---------------------------------------------------------------------------------------------
# DDPM ε-prediction
# ---------------------------------------------------------------------------------------------


class TinyEps(nn.Module):
    """An arbitrary (untrained) ε-prediction network ε(x, t) for D = 3."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)).double()

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([x, t.to(x.dtype)[:, None]], dim=1))


@pytest.mark.parametrize("sde", [VPSDE(), subVPSDE()], ids=type)
def test_variance_weighted_dsm_of_an_eps_network_is_ddpm_eps_loss(sde) -> None:
    """‖std·s + z‖² = ‖ε(x_t, t) - z‖² with s = -ε/std: DSM with λ = std² on an ε network
    (``ScoreModel(output="eps")``) is DDPM's ε-prediction loss (std² = 1 - ᾱ_t on VP)."""
    eps_net = TinyEps()
    x = gauss_data(512)
    model = ScoreModel(eps_net, sde, net_cond="time", output="eps")
    dsm = ContinuousDSMLoss(sde, "variance", reduce="mean")(model, x, generator=gen(9))
    # Replay the draws in the loss's order: the time, then the noise.
    g = gen(9)
    t = 1e-5 + (sde.T - 1e-5) * torch.rand(x.shape[0], generator=g, dtype=F64)
    z = torch.randn(x.shape, generator=g, dtype=F64)
    assert torch.equal(dsm.noise, t)
    alpha, std = sde.marginal_coeffs(t)
    x_t = alpha[:, None] * x + std[:, None] * z
    eps = eps_net(x_t, t)
    ddpm = ((eps - z) ** 2).mean(1)
    assert torch.allclose(dsm.per_sample, ddpm, rtol=1e-10, atol=1e-12)
    assert dsm.loss > 0.1  # the network is far from optimal: the check is not 0 == 0
    # The parametrisation's ε convention is the process's, and the process inverts it.
    score = model(x_t, t)
    torch.testing.assert_close(score, -eps / std[:, None], rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------------------
# ISM / SSM on Gaussian data (ESM, against the known score, as the reference) with linear scores
# ---------------------------------------------------------------------------------------------

# A non-optimal linear score s(x) = W x + b (not even symmetric).
W = torch.tensor([[-1.5, 0.3, 0.0], [0.2, -0.8, 0.1], [0.0, -0.4, -0.3]], dtype=F64)
B_ = torch.tensor([0.2, -0.5, 0.4], dtype=F64)
COV = torch.diag(S**2)
PREC = torch.diag(1 / S**2)


def linear_score(x: Tensor, sigma: Tensor) -> Tensor:
    return x @ W.T + B_


def half_expected_sq(A: Tensor, c: Tensor) -> Tensor:
    """½ E‖A x + c‖² for x ~ N(MU, COV)."""
    return 0.5 * ((A @ MU + c) @ (A @ MU + c) + torch.trace(A @ COV @ A.T))


def ism_closed(Wm: Tensor, b: Tensor) -> Tensor:
    return torch.trace(Wm) + half_expected_sq(Wm, b)


def esm_closed(Wm: Tensor, b: Tensor) -> Tensor:
    # s - ∇log p = (W + P) x + b - P mu.
    return half_expected_sq(Wm + PREC, b - PREC @ MU)


def test_closed_forms_satisfy_ism_equals_esm_minus_constant() -> None:
    """ISM = ESM - ½E‖∇log p‖², with E‖∇log p‖² = Σ 1/s_d², exactly in float64."""
    const = 0.5 * (1 / S**2).sum()
    assert torch.allclose(ism_closed(W, B_), esm_closed(W, B_) - const, rtol=1e-12)


def test_ism_and_esm_monte_carlo_match_closed_forms() -> None:
    x = gauss_data(10_000, seed=12)
    ism = ImplicitScoreMatchingLoss()(linear_score, x)
    zero = torch.zeros(x.shape[0], dtype=F64)
    # ESM: ½‖s - ∇log p‖² against the known score.
    esm = 0.5 * ((linear_score(x, zero) - oracle_sigma_score(GAUSS)(x, zero)) ** 2).sum(1)
    assert_mc_close(ism.per_sample, ism_closed(W, B_))
    assert_mc_close(esm, esm_closed(W, B_))
    # Pointwise, ISM - ESM = tr W + s·g - ½‖g‖² with g = ∇log p: mean -½Σ1/s² (5 SE).
    assert_mc_close(ism.per_sample - esm, -0.5 * (1 / S**2).sum())


@pytest.mark.parametrize("make", [ImplicitScoreMatchingLoss, SlicedScoreMatchingLoss])
def test_noise_sigma_perturbs_the_data_and_is_passed_to_the_score(make) -> None:
    """With noise_sigma = σ the score is called at x + σ z and σ, and ``noise`` reports σ."""
    x = gauss_data(128)
    seen: dict[str, Tensor] = {}

    def score(y: Tensor, sigma: Tensor) -> Tensor:
        seen["x"], seen["sigma"] = y, sigma
        return linear_score(y, sigma)

    out = make(noise_sigma=0.5)(score, x, generator=gen(13))
    assert torch.all(out.noise == 0.5) and torch.all(seen["sigma"] == 0.5)
    z = torch.randn(x.shape, generator=gen(13), dtype=F64)  # the first draw is the data noise
    assert torch.allclose(seen["x"], x + 0.5 * z)
    clean = make()(score, x, generator=gen(13))
    assert torch.all(clean.noise == 0) and torch.equal(seen["x"].detach(), x)


@pytest.mark.parametrize("projection", ["gaussian", "rademacher"])
@pytest.mark.parametrize("variance_reduced", [False, True], ids=["plain", "vr"])
def test_ssm_is_unbiased_for_ism_with_a_nonlinear_score(
    projection: str, variance_reduced: bool
) -> None:
    """At 4 fixed points, the mean of 10k single-projection SSM values converges to exact ISM."""
    torch.manual_seed(14)
    score = EnergyScore(MLPEnergy(3, hidden=16, n_layers=2).double())
    x = torch.randn(4, 3, generator=gen(15), dtype=F64)
    ism = ImplicitScoreMatchingLoss()(score, x).per_sample.detach()
    M = 10_000
    ssm = SlicedScoreMatchingLoss(projection=projection, variance_reduced=variance_reduced)
    out = ssm(score, x.repeat(M, 1), generator=gen(16)).per_sample.detach().reshape(M, 4)
    for j in range(4):
        assert_mc_close(out[:, j], ism[j])


def test_ssm_n_projections_averages_repeated_slices() -> None:
    score = EnergyScore(MLPEnergy(3, hidden=8, n_layers=1).double())
    x = torch.randn(5, 3, generator=gen(17), dtype=F64)
    many = SlicedScoreMatchingLoss(n_projections=7)(score, x, generator=gen(18))
    one = SlicedScoreMatchingLoss()(score, x.repeat(7, 1), generator=gen(18))
    assert torch.allclose(many.per_sample, one.per_sample.reshape(7, 5).mean(0))


def test_rademacher_vr_ssm_is_exact_for_a_diagonal_jacobian() -> None:
    """vᵀJv = tr J when J is diagonal and v_d = ±1, so VR-SSM equals ISM sample by sample."""
    diag = torch.tensor([-1.0, -2.0, 0.5], dtype=F64)
    score = lambda x, sigma: torch.sin(x) + diag * x  # Jacobian diag(cos x + diag)
    x = torch.randn(50, 3, generator=gen(19), dtype=F64)
    ism = ImplicitScoreMatchingLoss()(score, x)
    ssm = SlicedScoreMatchingLoss(projection="rademacher", variance_reduced=True)
    assert torch.allclose(ssm(score, x, generator=gen(20)).per_sample, ism.per_sample)
    expected = (torch.cos(x) + diag).sum(1) + 0.5 * (score(x, None) ** 2).sum(1)
    assert torch.allclose(ism.per_sample, expected)


def test_ssm_and_ism_train_through_second_derivatives() -> None:
    torch.manual_seed(21)
    net = MLPEnergy(2, hidden=8, n_layers=2)
    score = EnergyScore(net)
    x = torch.randn(16, 2, generator=gen(22))
    for loss in (SlicedScoreMatchingLoss(noise_sigma=0.01), ImplicitScoreMatchingLoss()):
        net.zero_grad()
        loss(score, x, generator=gen(23)).loss.backward()
        *inner, last_bias = [p.grad for p in net.parameters()]
        assert last_bias is None  # a constant energy offset does not change the score
        assert all(g is not None and torch.isfinite(g).all() for g in inner)
        assert all(g.abs().sum() > 0 for g in inner)


def test_ssm_and_ism_run_under_no_grad() -> None:
    x = gauss_data(8)
    with torch.no_grad():
        a = SlicedScoreMatchingLoss()(linear_score, x, generator=gen(24))
        b = ImplicitScoreMatchingLoss()(linear_score, x)
    assert not a.loss.requires_grad and not b.loss.requires_grad
    assert torch.isfinite(a.per_sample).all() and torch.isfinite(b.per_sample).all()


def test_ism_refuses_high_dimensional_data() -> None:
    with pytest.raises(ValueError, match="D = 65 > 64.*SlicedScoreMatchingLoss"):
        ImplicitScoreMatchingLoss()(linear_score, torch.zeros(2, 65))


# ---------------------------------------------------------------------------------------------
# Bad arguments
# ---------------------------------------------------------------------------------------------


BAD = [
    (lambda: DiscreteDSMLoss([1.0, 2.0]), "strictly decreasing"),
    (lambda: DiscreteDSMLoss([1.0, 1.0]), "strictly decreasing"),
    (lambda: DiscreteDSMLoss([1.0, -0.1]), "sigmas must all be > 0"),
    (lambda: DiscreteDSMLoss([]), "sigmas must hold at least one"),
    (lambda: DiscreteDSMLoss([1.0], reduce="max"), "reduce must be one of"),
    (lambda: ContinuousDSMLoss(VPSDE(), weighting="snr"), "weighting must be one of"),
    (lambda: ContinuousDSMLoss(VPSDE(), eps=0.0), r"eps .* must be in \(0, T\)"),
    (lambda: ContinuousDSMLoss(VPSDE(), eps=1.0), r"eps .* must be in \(0, T\)"),
    (lambda: ContinuousDSMLoss(VESDE(), reduce="avg"), "reduce must be one of"),
    (lambda: ContinuousDSMLoss(VPSDE(), eps=-1e-3), r"eps .* must be in \(0, T\)"),
    (lambda: SlicedScoreMatchingLoss(projection="sphere"), "projection must be one of"),
    (lambda: SlicedScoreMatchingLoss(n_projections=0), "n_projections must be an integer >= 1"),
    (lambda: SlicedScoreMatchingLoss(n_projections=1.5), "n_projections must be an integer"),
    (lambda: SlicedScoreMatchingLoss(noise_sigma=-0.1), "noise_sigma must be None or >= 0"),
    (lambda: ImplicitScoreMatchingLoss(reduce="none"), "reduce must be one of"),
    (lambda: SlicedScoreMatchingLoss(reduce="x"), "reduce must be one of"),
]


@pytest.mark.parametrize("make, match", BAD, ids=[m for _, m in BAD])
def test_bad_arguments_raise_value_error(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()
