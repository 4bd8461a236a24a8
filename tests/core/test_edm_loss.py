"""EDM's loss: its σ distribution, its weighting, and its value at the optimum (closed forms)."""

from __future__ import annotations

import pytest
import torch

from scorelab.losses import EDMLoss
from scorelab.nets.precond import EDMPrecond
from scorelab.nets.unet_small import UNetSmall
from scorelab.sde import VESDE, VPSDE

EDM_SDE = VESDE(0.002, 80.0)


def test_log_sigma_is_normal_with_edm_moments():
    """ln σ ~ N(-1.2, 1.2²): mean, std, skewness and excess kurtosis of 200k draws."""
    loss = EDMLoss(EDM_SDE, p_mean=-1.2, p_std=1.2)
    seen = []

    def score_fn(x, t):
        seen.append(t)
        return torch.zeros_like(x)

    n = 200_000
    out = loss(
        score_fn, torch.zeros(n, 1, dtype=torch.float64), generator=torch.Generator().manual_seed(0)
    )
    log_sigma = torch.log(EDM_SDE.sigma(seen[0]))
    torch.testing.assert_close(out.noise, seen[0])
    m, s = log_sigma.mean().item(), log_sigma.std().item()
    z = (log_sigma - m) / s
    # Standard errors at n = 200k: mean 0.0027, std 0.0019, skew 0.0055, kurtosis 0.011.
    assert abs(m + 1.2) < 0.01 and abs(s - 1.2) < 0.01
    assert abs(z.pow(3).mean().item()) < 0.03 and abs(z.pow(4).mean().item() - 3) < 0.06


@pytest.mark.parametrize("sigma_data", [0.5, 1.3])
def test_weighting_with_a_zero_score(sigma_data):
    """With s = 0, D = y and D - x = σ n: E[loss | σ] = λ(σ) σ² = (σ² + σ_d²)/σ_d²."""
    loss = EDMLoss(EDM_SDE, sigma_data=sigma_data, reduce="mean")
    x = torch.zeros(4000, 256, dtype=torch.float64)
    out = loss(lambda y, t: torch.zeros_like(y), x, generator=torch.Generator().manual_seed(1))
    sigma = EDM_SDE.sigma(out.noise)
    expected = (sigma**2 + sigma_data**2) / sigma_data**2
    ratio = out.per_sample / expected  # mean of 256 χ²₁ / 256 per sample: 1 ± 0.088
    assert abs(ratio.mean().item() - 1) < 0.01
    assert 0.5 < ratio.min().item() and ratio.max().item() < 1.5


@pytest.mark.parametrize("sde", [EDM_SDE, VPSDE(0.1, 20.0, 1000)], ids=["ve", "vp"])
def test_the_optimal_denoiser_scores_exactly_one_per_dimension_when_sigma_data_is_the_data_std(sde):
    """Gaussian data N(μ, s² I): E|D* - x|² = σ² s²/(s² + σ²) per dim, times λ(σ) with σ_d = s
    gives 1 at every σ. The score is the exact one of the SDE's marginal at t."""
    mu, s, dim = 0.4, 0.8, 64
    loss = EDMLoss(sde, sigma_data=s, reduce="mean")

    def exact_time_score(x, t):
        alpha, std = sde.marginal_coeffs(t)
        a, var = alpha[:, None], (alpha**2 * s**2 + std**2)[:, None]
        return -(x - a * mu) / var

    g = torch.Generator().manual_seed(2)
    x = mu + s * torch.randn(20_000, dim, generator=g, dtype=torch.float64)
    out = loss(exact_time_score, x, generator=g)
    # Each per-sample loss is a mean of 64 χ²₁-like terms: 1 ± 0.18; over 20k: ± 0.0013.
    assert abs(out.loss.item() - 1.0) < 0.01
    sigma = sde.sigma(out.noise)
    for lo, hi in [(0.0, 0.1), (0.1, 1.0), (1.0, 100.0)]:
        sel = (sigma >= lo) & (sigma < hi)
        assert sel.sum() > 1000
        assert abs(out.per_sample[sel].mean().item() - 1.0) < 0.02, (lo, hi)


def test_loss_of_edm_precond_is_edms_formula():
    """λ(σ) |D(x + σ n, σ) - x|² with D from EDMPrecond, recomputed from the same draws."""
    torch.manual_seed(0)
    net = UNetSmall(channels=1, image_size=28, ch=8, embedding="c_noise")
    model = EDMPrecond(net, EDM_SDE, sigma_data=0.5)
    loss = EDMLoss(EDM_SDE, sigma_data=0.5, reduce="sum")
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        out = loss(model, x, generator=torch.Generator().manual_seed(3))
        g = torch.Generator().manual_seed(3)
        sigma = torch.exp(-1.2 + 1.2 * torch.randn(8, generator=g))
        n = torch.randn(x.shape, generator=g)
        denoised = model.denoise(x + sigma[:, None, None, None] * n, sigma)
        weight = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
        expected = weight * (denoised - x).square().sum(dim=(1, 2, 3))
    torch.testing.assert_close(out.per_sample, expected, rtol=2e-4, atol=1e-4)


def test_bad_arguments_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"p_std=0.0 must be > 0"):
        EDMLoss(EDM_SDE, p_std=0.0)
    with pytest.raises(ValueError, match=r"sigma_data=-1.0 must be > 0"):
        EDMLoss(EDM_SDE, sigma_data=-1.0)
    with pytest.raises(ValueError, match=r"reduce must be one of"):
        EDMLoss(EDM_SDE, reduce="max")
