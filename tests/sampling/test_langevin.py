"""Langevin, annealed Langevin (NCSN Fig. 3) and Tweedie denoising on exact scores."""

import pytest
import torch

from scorelab import schedules, toy
from scorelab.metrics.toy import mode_weights
from scorelab.sampling.api import annealed_langevin, langevin, tweedie_denoise

MIX = toy.ncsn_toy_mixture()
SCORE = toy.oracle_sigma_score(MIX)


def _uniform_start(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, generator=g, dtype=torch.float64) * 16 - 8


def test_ncsn_figure3_plain_langevin_keeps_the_initial_split():
    """Plain Langevin (T=1000, ε=0.1) from U[-8,8]² cannot cross between the modes, so the
    small mode keeps about the share of the square closer to it (1/2), not 1/5."""
    x0 = _uniform_start(1280, seed=0)
    g = torch.Generator().manual_seed(1)
    out = langevin(SCORE, x0, 0.0, n_steps=1000, step_size=0.1, generator=g)
    w_small = mode_weights(out.x, MIX.means)[0].item()
    assert abs(w_small - 0.2) > 0.1
    assert abs(w_small - 0.5) < 0.05
    assert out.nfe == 1000 and out.net_calls == 1000


def test_ncsn_figure3_annealed_langevin_recovers_the_weights():
    """Annealed Langevin (L=10, σ 20→1, T=100, ε=0.1) gives 0.2 / 0.8 within ±0.03."""
    x0 = _uniform_start(1280, seed=0)
    g = torch.Generator().manual_seed(2)
    sigmas = schedules.geometric_sigmas(20.0, 1.0, 10)
    out = annealed_langevin(SCORE, x0, sigmas, n_steps_each=100, eps=0.1, generator=g)
    w = mode_weights(out.x, MIX.means)
    assert abs(w[0].item() - 0.2) < 0.03
    assert out.nfe == 1000


def test_step_lr_is_half_the_paper_eps():
    x0 = _uniform_start(64, seed=3)
    sigmas = schedules.geometric_sigmas(5.0, 1.0, 3)
    a = annealed_langevin(
        SCORE, x0, sigmas, n_steps_each=4, eps=0.2, generator=torch.Generator().manual_seed(0)
    )
    b = annealed_langevin(
        SCORE, x0, sigmas, n_steps_each=4, step_lr=0.1, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)


def test_annealed_langevin_first_step_matches_the_paper_formula():
    """One step at σ_1: x + (α/2) s + √α z with α = ε σ_1²/σ_L²."""
    x0 = _uniform_start(8, seed=4)
    sigmas = torch.tensor([4.0, 2.0], dtype=torch.float64)
    seen = []
    annealed_langevin(
        SCORE,
        x0,
        sigmas,
        n_steps_each=1,
        eps=0.01,
        generator=torch.Generator().manual_seed(5),
        callback=seen.append,
    )
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    alpha = 0.01 * 4.0
    expected = x0 + alpha / 2 * SCORE(x0, torch.full((8,), 4.0, dtype=torch.float64))
    torch.testing.assert_close(seen[0]["x_mean"], expected)
    torch.testing.assert_close(seen[0]["x"], expected + alpha**0.5 * z)
    assert len(seen) == 2 and seen[1]["sigma"][0].item() == 2.0


def test_tweedie_is_the_posterior_mean_of_a_gaussian():
    """For x_0 ~ N(μ, I) and x = x_0 + σ z: E[x_0 | x] = (x + σ² μ)/(1 + σ²)."""
    single = toy.GaussianMixture([1.0], [[1.0, -2.0]], 1.0)
    score = toy.oracle_sigma_score(single)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigma = 0.7
    mu = single.means
    expected = (x + sigma**2 * mu) / (1 + sigma**2)
    torch.testing.assert_close(tweedie_denoise(score, x, sigma), expected)


def test_final_denoise_adds_one_evaluation_and_returns_the_mean():
    x0 = _uniform_start(32, seed=6)
    sigmas = schedules.geometric_sigmas(2.0, 0.5, 3)
    out = annealed_langevin(
        SCORE,
        x0,
        sigmas,
        n_steps_each=2,
        eps=0.05,
        final_denoise=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.nfe == 7
    assert torch.equal(out.x, out.x_mean)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(n_steps_each=0, eps=0.1), "n_steps_each"),
        (dict(n_steps_each=2, eps=0.1, step_lr=0.05), "step_lr"),
        (dict(n_steps_each=2, eps=-1.0), "eps"),
        (dict(n_steps_each=2, step_lr=0.0), "step_lr"),
    ],
)
def test_annealed_langevin_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        annealed_langevin(SCORE, torch.zeros(4, 2), torch.tensor([2.0, 1.0]), **kwargs)


def test_annealed_langevin_default_step_is_the_official_ratio():
    """Neither eps nor step_lr: ε = 0.4 σ_L² (the NCSN runner's step_lr 2e-5 at σ_L = 0.01)."""
    sigmas = torch.tensor([2.0, 0.5])
    runs = [
        annealed_langevin(
            SCORE,
            torch.zeros(4, 2),
            sigmas,
            n_steps_each=3,
            generator=torch.Generator().manual_seed(0),
            **kw,
        ).x
        for kw in ({}, {"eps": 0.4 * 0.5**2}, {"eps": 0.2 * 0.5**2})
    ]
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2])


def test_bad_schedule_and_state():
    with pytest.raises(ValueError, match="descending"):
        annealed_langevin(
            SCORE, torch.zeros(4, 2), torch.tensor([1.0, 2.0]), n_steps_each=1, eps=0.1
        )
    with pytest.raises(ValueError, match="sigmas"):
        annealed_langevin(SCORE, torch.zeros(4, 2), torch.tensor([[1.0]]), n_steps_each=1, eps=0.1)
    with pytest.raises(ValueError, match="x must"):
        langevin(SCORE, torch.zeros(4, 2, dtype=torch.long), 0.0, n_steps=1, step_size=0.1)
    with pytest.raises(ValueError, match="step_size"):
        langevin(SCORE, torch.zeros(4, 2), 0.0, n_steps=1, step_size=0.0)
    with pytest.raises(ValueError, match="n_steps"):
        langevin(SCORE, torch.zeros(4, 2), 0.0, n_steps=0, step_size=0.1)
    with pytest.raises(ValueError, match="sigma"):
        langevin(SCORE, torch.zeros(4, 2), -1.0, n_steps=1, step_size=0.1)
