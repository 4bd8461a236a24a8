"""Conditional samplers against exact posteriors of Gaussian mixtures, with the oracle score.

Imputation. For Σ_k w_k N(μ_k, diag(s_k²)) in 2-D and x₀ = y observed, x₁ | y is the mixture
Σ_k π_k N(μ_k1, s_k1²) with π_k ∝ w_k N(y; μ_k0, s_k0²) (the components are diagonal, so within
one the coordinates are independent). The paper's replacement sampler approximates
∇ log p_t(x₁ | y) by the joint score next to a noisy copy of y; that is close only where the
modes of x₁ settle at noise levels well below the spread s_k0 of the observed coordinate (here
x₁'s modes are 2 apart, s_k0 = 3–4). ``docs/controllable.md`` measures the bias where not.

Class conditioning. With the exact noise-conditional classifier and scale 1, score + ∇ log p_t(k|x)
is the score of component k alone, so the samples are N(μ_k, diag(s_k²)).

Every expected number is computed here from the mixture's parameters.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from scorelab import toy
from scorelab.sampling.conditional import classifier_guided_score, pc_impute
from scorelab.sampling.pc import LangevinCorrector, pc_sampler
from scorelab.sde import VESDE, VPSDE

STEPS = 200
PC = {"corrector": functools.partial(LangevinCorrector, snr=0.16)}


def _sdes(sigma_max: float) -> dict:
    return {
        "ve": lambda: VESDE(0.01, sigma_max, STEPS),
        "vp": lambda: VPSDE(0.1, 20.0, STEPS),
    }


# ----------------------------------------------------------------------------------------------
# Imputation: x₁ given x₀ = Y
# ----------------------------------------------------------------------------------------------

W = [0.3, 0.7]
MU = [[-4.0, -1.0], [2.0, 1.0]]
S = [[4.0, 0.1], [3.0, 0.1]]
Y = 0.0
MIX = toy.GaussianMixture(W, MU, S)
N_IMPUTE = 10_000


def _exact_posterior_weights() -> list[float]:
    """π_k ∝ w_k N(Y; μ_k0, s_k0²)."""
    lik = [
        w * math.exp(-0.5 * ((Y - m[0]) / s[0]) ** 2) / (s[0] * math.sqrt(2 * math.pi))
        for w, m, s in zip(W, MU, S, strict=True)
    ]
    return [v / sum(lik) for v in lik]


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_imputation_matches_the_exact_conditional_mixture(sde_name):
    sde = _sdes(20.0)[sde_name]()
    g = torch.Generator().manual_seed(11 if sde_name == "ve" else 12)
    x = sde.prior_sampling((N_IMPUTE, 2), generator=g, dtype=torch.float64)
    known = torch.tensor([Y, 123.0], dtype=torch.float64)  # x₁'s entry is never read
    out = pc_impute(
        toy.oracle_time_score(MIX, sde), x, sde, known=known, mask=[1, 0], generator=g, **PC
    )
    assert torch.isfinite(out.x).all()
    assert (out.x[:, 0] == Y).all(), "the known coordinate must come back as given"
    assert out.nfe == 2 * STEPS
    x1 = out.x[:, 1]
    # the modes of x₁ are 2 apart with std 0.1: the nearer mean names the component
    k = (x1[:, None] - torch.tensor([m[1] for m in MU], dtype=torch.float64)).abs().argmin(1)
    for j, pi in enumerate(_exact_posterior_weights()):
        sel = x1[k == j]
        frac = len(sel) / N_IMPUTE
        # π = (0.196, 0.804); the sampling std of a fraction at n = 10⁴ is 0.004
        assert abs(frac - pi) < 0.03, f"component {j}: fraction {frac:.3f}, exact {pi:.3f}"
        mean, sd = MU[j][1], S[j][1]
        se = sd / math.sqrt(len(sel))
        assert abs(sel.mean().item() - mean) < 4 * se + 0.002, (j, sel.mean().item(), mean)
        # std: sampling error sd/√(2n) ≈ 0.002 on 0.1, plus the 200-step discretisation
        assert abs(sel.std().item() / sd - 1) < 0.06, (j, sel.std().item(), sd)


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_imputation_holds_the_known_coordinate_at_the_forward_marginal(sde_name):
    """At every step the known coordinate is a fresh draw of N(alpha(t) y, std(t)²): the
    paper's p_0t(x(t) | x(0) = y), written out here from the processes' formulas."""
    sde = _sdes(20.0)[sde_name]()
    y = 1.5

    def coeffs(t: float) -> tuple[float, float]:
        if sde_name == "ve":
            return 1.0, 0.01 * (20.0 / 0.01) ** t
        log_alpha = -0.25 * t**2 * (20.0 - 0.1) - 0.5 * t * 0.1
        return math.exp(log_alpha), math.sqrt(1 - math.exp(2 * log_alpha))

    seen = {}

    def callback(info):
        if info["i"] in (10, 100):
            seen[info["i"]] = info["x"][:, 0].clone()

    n = 4000
    g = torch.Generator().manual_seed(3)
    x = sde.prior_sampling((n, 2), generator=g, dtype=torch.float64)
    pc_impute(
        toy.oracle_time_score(MIX, sde),
        x,
        sde,
        known=torch.tensor([y, 0.0], dtype=torch.float64),
        mask=torch.tensor([True, False]),
        callback=callback,
        generator=g,
    )
    grid = torch.linspace(1.0, sde.sampling_eps, STEPS, dtype=torch.float64)
    for i, v in seen.items():
        alpha, std = coeffs(float(grid[i + 1]))  # the state after step i is at t_{i+1}
        assert abs(v.mean().item() - alpha * y) < 4 * std / math.sqrt(n), (i, v.mean(), alpha)
        assert abs(v.std().item() / std - 1) < 4 / math.sqrt(2 * n), (i, v.std(), std)


def test_imputation_with_everything_known_returns_the_observation():
    sde = VESDE(0.01, 20.0, 20)
    known = torch.tensor([[0.5, -2.0], [3.0, 1.0]], dtype=torch.float64)
    x = sde.prior_sampling((2, 2), generator=torch.Generator().manual_seed(0))
    out = pc_impute(toy.oracle_time_score(MIX, sde), x.double(), sde, known=known, mask=[1, 1])
    assert torch.equal(out.x, known)


# ----------------------------------------------------------------------------------------------
# Class-conditional sampling with the exact classifier
# ----------------------------------------------------------------------------------------------

CW = [0.5, 0.3, 0.2]
CMU = [[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]]
CMIX = toy.GaussianMixture(CW, CMU, 1.0)
N_CLASS = 4000


def test_exact_classifier_is_the_component_posterior():
    """log p_t(k | x) = log w_k N(x; alpha μ_k, (alpha² + std²) I) - log Σ_j (...)."""
    sde = VPSDE(0.1, 20.0, 100)
    t = torch.tensor([0.3, 0.3], dtype=torch.float64)
    x = torch.tensor([[0.5, 1.0], [-2.0, 3.0]], dtype=torch.float64)
    log_alpha = -0.25 * 0.3**2 * 19.9 - 0.5 * 0.3 * 0.1
    a, var = math.exp(log_alpha), 1.0  # alpha² · 1 + std² = 1 on VP
    for b in range(2):
        logs = [
            math.log(w) - sum((x[b, d].item() - a * m[d]) ** 2 for d in range(2)) / (2 * var)
            for w, m in zip(CW, CMU, strict=True)
        ]
        top = max(logs)
        norm = top + math.log(sum(math.exp(v - top) for v in logs))
        got = toy.oracle_classifier(CMIX, sde)(x, t)[b]
        for k in range(3):
            assert got[k].item() == pytest.approx(logs[k] - norm, abs=1e-10)


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_guidance_with_the_exact_classifier_samples_one_component(sde_name):
    label = 2  # the smallest component, weight 0.2
    sde = _sdes(15.0)[sde_name]()
    g = torch.Generator().manual_seed(21 if sde_name == "ve" else 22)
    x = sde.prior_sampling((N_CLASS, 2), generator=g, dtype=torch.float64)
    score = classifier_guided_score(
        toy.oracle_time_score(CMIX, sde), toy.oracle_classifier(CMIX, sde), label, 1.0
    )
    with torch.no_grad():  # as the entry point draws: the guidance takes its own gradient
        out = pc_sampler(score, x, sde, generator=g, **PC).x
    assert torch.isfinite(out).all()
    # Exact samples of N((0, 4), I) lie nearer (0, 4) than (±3, 0) unless a standard normal
    # exceeds 2.5 along one of the two directions: probability ≤ 2 Φ(-2.5) = 0.012.
    near = (out[:, None, :] - torch.tensor(CMU, dtype=torch.float64)).norm(dim=-1).argmin(1)
    frac = (near == label).double().mean().item()
    bound = 1 - 2 * 0.5 * math.erfc(2.5 / math.sqrt(2))
    assert frac >= 0.97, f"fraction near component {label}: {frac:.3f} (exact ≥ {bound:.3f})"
    se = 1 / math.sqrt(N_CLASS)
    for d in range(2):
        assert abs(out[:, d].mean().item() - CMU[label][d]) < 4 * se + 0.01, out.mean(0)
        assert abs(out[:, d].std().item() - 1.0) < 0.05, out.std(0)


def test_guidance_scale_zero_is_the_unconditional_score():
    sde = VESDE(0.01, 15.0, 10)
    base = toy.oracle_time_score(CMIX, sde)
    guided = classifier_guided_score(base, toy.oracle_classifier(CMIX, sde), 1, 0.0)
    x = torch.randn(5, 2, dtype=torch.float64)
    t = torch.full((5,), 0.4, dtype=torch.float64)
    assert torch.equal(guided(x, t), base(x, t))


def test_guidance_gradient_is_component_score_minus_mixture_score():
    """∇ log p_t(k|x) = ∇ log N_k - ∇ log p_t: the guided score at scale 1 is component k's."""
    sde = VESDE(0.01, 15.0, 10)
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.full((6,), 0.3, dtype=torch.float64)
    sigma = 0.01 * (15.0 / 0.01) ** 0.3
    guided = classifier_guided_score(
        toy.oracle_time_score(CMIX, sde), toy.oracle_classifier(CMIX, sde), 0, 1.0
    )
    expected = (torch.tensor(CMU[0], dtype=torch.float64) - x) / (1.0 + sigma**2)
    torch.testing.assert_close(guided(x, t), expected, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Refusals
# ----------------------------------------------------------------------------------------------


def test_conditional_inputs_are_refused_in_one_line():
    sde = VESDE(0.01, 20.0, 10)
    score = toy.oracle_time_score(MIX, sde)
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"mask has shape \(3,\).*\(2,\)"):
        pc_impute(score, x, sde, known=torch.zeros(2), mask=torch.ones(3))
    with pytest.raises(ValueError, match="mask values must be 0 or 1"):
        pc_impute(score, x, sde, known=torch.zeros(2), mask=torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"known has shape \(5,\)"):
        pc_impute(score, x, sde, known=torch.zeros(5), mask=torch.ones(2))
    guided = classifier_guided_score(score, toy.oracle_classifier(MIX, sde), 7)
    with pytest.raises(ValueError, match=r"label 7 is outside .*\[0, 2\)"):
        guided(x, torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="scale must be"):
        classifier_guided_score(score, toy.oracle_classifier(MIX, sde), 0, -1.0)
