"""Analytic Gaussian mixtures: exact scores, sampling, normalisation, and input checks."""

from __future__ import annotations

import math

import pytest
import torch

from scorelab.sde import VESDE, VPSDE, subVPSDE
from scorelab.toy import (
    TOY_SETS,
    GaussianMixture,
    checkerboard,
    ncsn_toy_mixture,
    oracle_sigma_score,
    oracle_time_score,
    rings,
)

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


MIX = GaussianMixture(
    [0.3, 0.5, 0.2], [[-2.0, 1.0], [1.0, 0.0], [0.5, 3.0]], [[0.5, 1.0], [0.7, 0.7], [1.3, 0.4]]
)


def autograd_score(log_prob, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(log_prob(x).sum(), x)
    return g


def test_exact_score_equals_autograd_of_log_prob() -> None:
    x = 2 * torch.randn(16, 2, generator=gen(0), dtype=F64)
    assert torch.allclose(MIX.score(x), autograd_score(MIX.log_prob, x), rtol=1e-10, atol=1e-12)
    sigma = torch.rand(16, generator=gen(1), dtype=F64) * 3
    assert torch.allclose(
        MIX.score_sigma(x, sigma),
        autograd_score(lambda y: MIX.log_prob_perturbed(y, 1.0, sigma), x),
        rtol=1e-10,
        atol=1e-12,
    )
    t = torch.rand(16, generator=gen(2), dtype=F64)
    for sde in (VESDE(0.01, 10.0), VPSDE(), subVPSDE()):
        assert torch.allclose(
            MIX.score_t(x, t, sde),
            autograd_score(lambda y, s=sde: MIX.log_prob_perturbed(y, *s.marginal_coeffs(t)), x),
            rtol=1e-10,
            atol=1e-12,
        )


def test_oracles_accept_image_shaped_points() -> None:
    mix = GaussianMixture([0.5, 0.5], [[0.0] * 4, [1.0] * 4], 0.5)
    x = torch.randn(3, 1, 2, 2, generator=gen(3), dtype=F64)
    sigma = torch.full((3,), 0.3, dtype=F64)
    s = oracle_sigma_score(mix)(x, sigma)
    assert s.shape == x.shape
    assert torch.allclose(s.reshape(3, 4), mix.score_sigma(x.reshape(3, 4), sigma))
    sde = VPSDE()
    t = torch.full((3,), 0.4, dtype=F64)
    assert oracle_time_score(mix, sde)(x, t).shape == x.shape


def test_samples_have_the_mixture_weights_and_moments() -> None:
    """NCSN toy mixture, 20k samples; modes split by the sign of x_1 + x_2 (they are 14 std
    apart). Weight and mean errors within 5 standard errors."""
    mix = ncsn_toy_mixture()
    n = 20_000
    x = mix.sample(n, generator=gen(4), dtype=F64)
    assert x.shape == (n, 2) and x.dtype == F64
    low = x.sum(1) < 0
    frac = low.double().mean().item()
    assert abs(frac - 0.2) < 5 * math.sqrt(0.2 * 0.8 / n)
    for mask, mean in ((low, -5.0), (~low, 5.0)):
        part = x[mask]
        assert ((part.mean(0) - mean).abs() < 5 / math.sqrt(part.shape[0])).all()
        assert ((part.std(0) - 1).abs() < 5 / math.sqrt(2 * part.shape[0])).all()


@pytest.mark.parametrize(
    "alpha, std", [(1.0, 0.0), (1.0, 0.5), (0.6, 0.8), (0.05, 1.0)], ids=["data", "ve", "vp", "T"]
)
def test_perturbed_density_integrates_to_one_in_1d(alpha: float, std: float) -> None:
    """Trapezoid rule on [-12, 12] with 24001 nodes: mass 1 and mean alpha E[x_0], to 1e-8."""
    mix = GaussianMixture([0.25, 0.75], [[-2.0], [1.5]], [0.4, 1.0])
    grid = torch.linspace(-12, 12, 24_001, dtype=F64)[:, None]
    p = mix.log_prob_perturbed(grid, alpha, std).exp()
    assert math.isclose(torch.trapezoid(p, grid[:, 0]).item(), 1.0, abs_tol=1e-8)
    mean = torch.trapezoid(p * grid[:, 0], grid[:, 0]).item()
    assert math.isclose(mean, alpha * (0.25 * -2.0 + 0.75 * 1.5), abs_tol=1e-8)


def test_moments_are_the_mixture_mean_and_variance() -> None:
    # NCSN's mixture by hand: mean 0.2·(-5) + 0.8·5 = 3, variance 1 + 25 - 9 = 17 per coordinate
    mean, var = ncsn_toy_mixture().moments()
    expected = torch.tensor([3.0, 3.0], dtype=F64)
    assert torch.allclose(mean, expected) and torch.allclose(var, expected * 17 / 3)
    # a 1-D mixture with unequal stds against the trapezoid rule on its density
    mix = GaussianMixture([0.25, 0.75], [[-2.0], [1.5]], [0.4, 1.0])
    grid = torch.linspace(-12, 12, 24_001, dtype=F64)
    p = mix.log_prob(grid[:, None]).exp()
    m = torch.trapezoid(p * grid, grid)
    v = torch.trapezoid(p * (grid - m) ** 2, grid)
    mean, var = mix.moments()
    assert math.isclose(mean.item(), m.item(), abs_tol=1e-8)
    assert math.isclose(var.item(), v.item(), abs_tol=1e-8)


def test_toy_sets_are_seeded_2d_float32() -> None:
    for name, make in TOY_SETS.items():
        a, b = make(500, generator=gen(5)), make(500, generator=gen(5))
        assert a.shape == (500, 2) and a.dtype == torch.float32, name
        assert torch.equal(a, b) and torch.isfinite(a).all(), name
    board = checkerboard(2000, generator=gen(6)).double()
    assert ((board >= -2) & (board <= 2)).all()
    assert (torch.floor(board).sum(1) % 2 == 0).all()  # dark squares only
    r = rings(2000, radii=(1.0, 2.0), noise=0.0, generator=gen(7)).double().norm(dim=1)
    assert (torch.minimum((r - 1).abs(), (r - 2).abs()) < 1e-6).all()  # float32 points


BAD = [
    (lambda: GaussianMixture([0.5, 0.4], [[0.0], [1.0]]), "weights must be >= 0 and sum to 1"),
    (lambda: GaussianMixture([1.5, -0.5], [[0.0], [1.0]]), "weights must be >= 0 and sum to 1"),
    (lambda: GaussianMixture([], [[0.0]]), "weights must be a non-empty 1-D list"),
    (lambda: GaussianMixture([0.5, 0.5], [[0.0, 1.0]]), r"means must have shape \(K, D\)"),
    (lambda: GaussianMixture([1.0], [0.0, 1.0]), r"means must have shape \(K, D\)"),
    (lambda: GaussianMixture([0.5, 0.5], [[0.0], [1.0]], [1.0, 2.0, 3.0]), "stds must have K"),
    (lambda: GaussianMixture([1.0], [[0.0, 0.0]], [[1.0, 1.0, 1.0]]), "stds must be a scalar"),
    (lambda: GaussianMixture([0.5, 0.5], [[0.0], [1.0]], [1.0, -1.0]), "stds must all be > 0"),
    (lambda: GaussianMixture([1.0], [[0.0]], 0.0), "stds must all be > 0"),
    (lambda: GaussianMixture(["a"], [[0.0]]), "weights must be numeric"),
    (lambda: MIX.score(torch.zeros(4, 3)), r"x must have shape \(B, 2\)"),
]


@pytest.mark.parametrize("make, match", BAD, ids=[m for _, m in BAD])
def test_bad_mixture_inputs_raise_value_error(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_one_level_batches_take_the_matrix_path_with_the_same_values():
    """A batch at one level is scored by (B, D) x (D, K) products; it must give what the
    per-sample formula gives (forced here by a second level in one extra row)."""
    g = torch.Generator().manual_seed(0)
    mix = GaussianMixture(
        [0.2, 0.3, 0.5], torch.randn(3, 16, generator=g), 0.5 + torch.rand(3, 16, generator=g)
    )
    x = 3 * torch.randn(257, 16, generator=g, dtype=torch.float64)
    for alpha, std in ((1.0, 0.0), (1.0, 0.3), (0.6, 0.8), (0.05, 1.0)):
        a = torch.full((257,), alpha, dtype=torch.float64)
        s = torch.full((257,), std, dtype=torch.float64)
        s2 = torch.cat([s[:-1], s[-1:] + 1.0])  # two levels: the general path
        fast, slow = mix.score_perturbed(x, a, s), mix.score_perturbed(x, a, s2)
        torch.testing.assert_close(fast[:-1], slow[:-1], rtol=1e-10, atol=1e-10)
        lp_fast, lp_slow = mix.log_prob_perturbed(x, a, s), mix.log_prob_perturbed(x, a, s2)
        torch.testing.assert_close(lp_fast[:-1], lp_slow[:-1], rtol=1e-10, atol=1e-10)
