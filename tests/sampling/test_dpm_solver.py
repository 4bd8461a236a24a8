"""DPM-Solver++ multistep (1M/2M/3M) against exact answers: polynomial denoisers integrated
exactly (Taylor form), the closed-form flow of Gaussian data at the method's order, and the
mixture weights of an oracle score on VE and VP."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

from scorelab import schedules
from scorelab.sampling.dpm_solver import dpmpp_2m, dpmpp_3m, dpmpp_multistep, dpmpp_step
from scorelab.sde import VPSDE, sigma_score_from_time_score
from scorelab.toy import GaussianMixture, oracle_sigma_score, oracle_time_score

F64 = torch.float64


@pytest.mark.parametrize("order", [1, 2, 3])
def test_polynomial_denoiser_is_integrated_exactly_up_to_the_order(order: int) -> None:
    """Taylor form: a denoiser that is a polynomial of degree order-1 in λ = -log σ is
    integrated to rounding error on uneven steps; one degree more is not (so a lower-order
    update cannot pass). The published form of 2M and 3M is exact one degree lower."""
    sigma, h, h0, h1 = 0.7, 0.5, 0.3, 0.6  # current level, step, and the two earlier steps
    lam = -math.log(sigma)
    sigma_next = sigma * math.exp(-h)
    prev_sigma = [sigma * math.exp(h0 + h1), sigma * math.exp(h0)]
    for degree, exact_expected in ((order - 1, True), (order, False)):
        coeffs = [0.3, -0.8, 0.45, 0.2][: degree + 1]

        def d_of(lmb: float, coeffs=coeffs) -> float:
            return sum(c * lmb**k for k, c in enumerate(coeffs))

        y = torch.tensor([1.0], dtype=F64)
        prev_d = [torch.tensor([d_of(-math.log(p))], dtype=F64) for p in prev_sigma]
        d = torch.tensor([d_of(lam)], dtype=F64)
        step = (y, d, sigma, sigma_next, prev_d, prev_sigma, order)
        # y(σ') = (σ'/σ) y + σ' ∫_λ^{λ'} e^l D(l) dl
        integral, _ = quad(lambda lmb: math.exp(lmb) * d_of(lmb), lam, lam + h)
        exact = sigma_next / sigma + sigma_next * integral
        err = abs(dpmpp_step(*step, "taylor").item() - exact)
        if exact_expected:
            assert err < 1e-12, (order, degree, err)
        else:
            assert err > 1e-5, (order, degree, err)
        published = abs(dpmpp_step(*step, "dpm-solver").item() - exact)
        assert (published < 1e-12) == (exact_expected and degree == 0), (order, degree, published)


def _gaussian():
    mu = torch.tensor([1.5, -0.7], dtype=F64)
    s = torch.tensor([0.5, 1.3], dtype=F64)

    def score(y, sig):
        sig = sig[:, None]
        return (mu + s**2 / (s**2 + sig**2) * (y - mu) - y) / sig**2

    return mu, s, score


@pytest.mark.parametrize(
    ("order", "form", "min_rate"),
    [
        (1, "taylor", 0.9),
        (2, "taylor", 1.8),
        (3, "taylor", 2.8),
        (2, "dpm-solver", 1.8),
        (3, "dpm-solver", 1.8),
    ],  # fmt: skip
)
def test_error_against_the_closed_form_flow_shrinks_at_the_order(order, form, min_rate) -> None:
    """Gaussian data N(μ, diag s²): y(σ) = μ + √((s²+σ²)/(s²+σ₀²)) (y₀ - μ). The solver runs
    from σ₀ = 80 to 0.002 on log-uniform steps (then one step to 0: the denoiser); the error
    against the exact end point shrinks by 2^order as the steps double (the published 3M: at
    least 2^2)."""
    mu, s, score = _gaussian()
    smax, smin = 80.0, 0.002
    y0 = mu + smax * torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    y_end = mu + torch.sqrt((s**2 + smin**2) / (s**2 + smax**2)) * (y0 - mu)
    d_end = mu + s**2 / (s**2 + smin**2) * (y_end - mu)  # the last step returns D(y, σ_min)
    errs = []
    for n in (20, 40, 80):
        sig = torch.exp(torch.linspace(math.log(smax), math.log(smin), n, dtype=F64))
        res = dpmpp_multistep(score, y0.clone(), sig, order=order, form=form)
        assert res.nfe == n  # one score evaluation per level
        errs.append((res.x - d_end).abs().max().item())
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert min(rates) > min_rate, (errs, rates)


@pytest.mark.parametrize("form", ["dpm-solver", "taylor"])
def test_higher_order_is_more_accurate(form: str) -> None:
    mu, s, score = _gaussian()
    y0 = mu + 80 * torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    exact = mu + s / torch.sqrt(s**2 + 80.0**2) * (y0 - mu)  # the flow's end at σ = 0
    sig = schedules.karras_sigmas(25).double()
    e = [(f(score, y0.clone(), sig, form=form).x - exact).abs().max().item() for f in (
        lambda *a, **k: dpmpp_multistep(*a, order=1, **k), dpmpp_2m, dpmpp_3m)]  # fmt: skip
    assert e[0] > 2 * e[1] > 4 * e[2], e


def _mode_weight(x: torch.Tensor) -> float:
    return (x[:, 0] < 0).double().mean().item()  # component 0 sits at x₀ = -3


@pytest.mark.parametrize("process", ["ve", "vp"])
@pytest.mark.parametrize(
    ("solver", "form", "nfe"),
    [
        (dpmpp_2m, "dpm-solver", 20),
        (dpmpp_3m, "dpm-solver", 20),
        (dpmpp_2m, "taylor", 25),
        (dpmpp_3m, "taylor", 25),
    ],  # fmt: skip
)
def test_oracle_mixture_weights_and_means(process: str, solver, form: str, nfe: int) -> None:
    """An oracle mixture the other sampler tests don't use, from the moment-matched start on
    EDM's schedule: mode weights within ±0.03 and per-mode means within 0.1 std at 20 score
    evaluations (published form) or 25 (Taylor form: at 20 its means are 0.11-0.13 std off on
    this mixture, where D changes fast in λ and the higher extrapolation weight overshoots)."""
    mix = GaussianMixture([0.35, 0.65], [[-3.0, 1.0], [2.5, -1.5]], [0.6, 0.8])
    g = torch.Generator().manual_seed(5)
    data = mix.sample(20000, generator=g)
    sig = schedules.karras_sigmas(nfe, 0.002, 80.0)
    if process == "ve":
        score = oracle_sigma_score(mix)
    else:  # the VP process's time score, seen in σ = std/α (the VE-equivalent view)
        sde = VPSDE()
        score = sigma_score_from_time_score(sde, oracle_time_score(mix, sde))
    mean, std = schedules.moment_matched_start(data, float(sig[0]))
    x0 = mean + std * torch.randn(4000, 2, generator=g)
    res = solver(score, x0, sig, form=form)
    assert res.nfe == nfe
    x = res.x
    assert torch.isfinite(x).all()
    assert abs(_mode_weight(x) - 0.35) < 0.03
    left, right = x[x[:, 0] < 0], x[x[:, 0] >= 0]
    assert (left.mean(0) - torch.tensor([-3.0, 1.0])).abs().max() < 0.1 * 0.6
    assert (right.mean(0) - torch.tensor([2.5, -1.5])).abs().max() < 0.1 * 0.8


def test_bad_order_is_refused_in_one_line() -> None:
    _, _, score = _gaussian()
    x = torch.zeros(2, 2, dtype=F64)
    for bad in (0, 4):
        with pytest.raises(ValueError, match=f"order must be .*got {bad}"):
            dpmpp_multistep(score, x, schedules.karras_sigmas(5).double(), order=bad)
    with pytest.raises(ValueError, match="form must be one of"):
        dpmpp_2m(score, x, schedules.karras_sigmas(5).double(), form="heun")
