"""EDM's preconditioning (EDMPrecond) against closed forms, and through the real configs.

For Gaussian data N(μ, s² I) the optimal denoiser is D*(y, σ) = (s² y + σ² μ)/(s² + σ²) and the
score of p_σ is -(y - μ)/(s² + σ²). A "network" that outputs the F which gives D* through
c_skip, c_out and c_in must make EDMPrecond return that score exactly; the same construction
from a mixture's exact score, wrapped by the config's parametrisation and driven by the
config's Heun sampler, must sample the mixture.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from run_helpers import compose_cfg
from scorelab import toy
from scorelab.lit.build import (
    ConfigError,
    build_module,
    build_noise,
    build_parametrization,
    build_sampler,
)
from scorelab.metrics.toy import mode_weights, sliced_wasserstein
from scorelab.nets.precond import EDMPrecond, OracleScoreModel
from scorelab.sde import VESDE, VPSDE, NoiseLevels

SIGMA_DATA = 0.5


class ExactF(nn.Module):
    """F(c_in y, c_noise) = (D(y, σ) - c_skip y)/c_out for a known denoiser ``D(y, sigma)``."""

    cond_input = "c_noise"

    def __init__(self, denoiser, sigma_data: float) -> None:
        super().__init__()
        self.denoiser, self.sigma_data = denoiser, sigma_data

    def forward(self, x_in: Tensor, c_noise: Tensor) -> Tensor:
        sigma = torch.exp(4.0 * c_noise.to(x_in.dtype))  # c_noise = ln(σ)/4
        sd2 = self.sigma_data**2
        s = sigma.reshape(-1, *([1] * (x_in.ndim - 1)))
        y = x_in * torch.sqrt(s**2 + sd2)  # c_in = 1/√(σ² + σ_d²)
        c_skip, c_out = sd2 / (s**2 + sd2), s * self.sigma_data / torch.sqrt(s**2 + sd2)
        return (self.denoiser(y, sigma) - c_skip * y) / c_out


def gaussian_denoiser(mu: Tensor, s: float):
    def fn(y: Tensor, sigma: Tensor) -> Tensor:
        s2 = sigma.reshape(-1, *([1] * (y.ndim - 1))) ** 2
        return (s**2 * y + s2 * mu) / (s**2 + s2)

    return fn


MU = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
S = 0.7


def test_coefficients_at_sigma_data_and_limits():
    model = EDMPrecond(ExactF(None, SIGMA_DATA), VESDE(0.002, 80.0), sigma_data=SIGMA_DATA)
    sigma = torch.tensor([SIGMA_DATA, 1e-4, 1e4], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = model.coefficients(sigma)
    # σ = σ_d: c_skip = 1/2, c_out = σ_d/√2, c_in = 1/(σ_d √2), c_noise = ln(σ_d)/4.
    torch.testing.assert_close(c_skip[0].item(), 0.5)
    torch.testing.assert_close(c_out[0].item(), SIGMA_DATA / math.sqrt(2))
    torch.testing.assert_close(c_in[0].item(), 1 / (SIGMA_DATA * math.sqrt(2)))
    torch.testing.assert_close(c_noise.tolist(), [math.log(v) / 4 for v in sigma.tolist()])
    # σ → 0: D → y (c_skip → 1, c_out → 0); σ → ∞: D → σ_d F (c_skip → 0, c_out → σ_d).
    assert c_skip[1] > 1 - 1e-7 and c_out[1] < 1e-4
    assert c_skip[2] < 1e-8 and abs(c_out[2] - SIGMA_DATA) < 1e-8


def test_exact_network_gives_the_exact_sigma_and_time_scores_on_ve():
    sde = VESDE(0.002, 80.0)
    model = EDMPrecond(ExactF(gaussian_denoiser(MU, S), SIGMA_DATA), sde, sigma_data=SIGMA_DATA)
    g = torch.Generator().manual_seed(0)
    sigma = torch.exp(torch.empty(64, dtype=torch.float64).uniform_(-6.2, 4.4, generator=g))
    y = (
        MU
        + torch.randn(64, 3, generator=g, dtype=torch.float64)
        * torch.sqrt(S**2 + sigma**2)[:, None]
    )
    exact = -(y - MU) / (S**2 + sigma**2)[:, None]
    torch.testing.assert_close(model.sigma_score()(y, sigma), exact, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(model.denoise(y, sigma), gaussian_denoiser(MU, S)(y, sigma))
    t = torch.rand(64, generator=g, dtype=torch.float64)
    s_t = sde.sigma(t)
    exact_t = -(y - MU) / (S**2 + s_t**2)[:, None]
    torch.testing.assert_close(model(y, t), exact_t, rtol=1e-9, atol=1e-12)


def test_exact_network_gives_the_exact_time_score_on_vp():
    """On VP, x_t = α x_0 + std z ~ N(α μ, α² s² + std²): the score is closed-form in t."""
    sde = VPSDE(0.1, 20.0, 1000)
    model = EDMPrecond(ExactF(gaussian_denoiser(MU, S), SIGMA_DATA), sde, sigma_data=SIGMA_DATA)
    g = torch.Generator().manual_seed(1)
    t = torch.empty(64, dtype=torch.float64).uniform_(1e-3, 1.0, generator=g)
    alpha, std = sde.marginal_coeffs(t)
    var = (alpha**2 * S**2 + std**2)[:, None]
    x = alpha[:, None] * MU + torch.randn(64, 3, generator=g, dtype=torch.float64) * var.sqrt()
    exact = -(x - alpha[:, None] * MU) / var
    torch.testing.assert_close(model.time_score()(x, t), exact, rtol=1e-8, atol=1e-10)


def test_bad_arguments_are_refused_in_one_line():
    net = ExactF(None, SIGMA_DATA)
    with pytest.raises(ValueError, match=r"sigma_data=0.0 must be > 0"):
        EDMPrecond(net, VESDE(0.002, 80.0), sigma_data=0.0)
    with pytest.raises(ValueError, match=r"needs an SDE \(sde=edm"):
        EDMPrecond(net, NoiseLevels(1.0, 0.01, 10))
    with pytest.raises(ValueError, match=r"net_cond='time' is not supported"):
        EDMPrecond(net, VESDE(0.002, 80.0), net_cond="time")
    with pytest.raises(ValueError, match=r"feeds net_cond='sigma'.*cond_input='c_noise'"):
        EDMPrecond(net, VESDE(0.002, 80.0), net_cond="sigma")


# ------------------------------------------------------------------ through the configs
EDM_TOY = [
    "data=gmm",
    "model=mlp",
    "model/parametrization=edm",
    "sde=edm",
    "loss=edm",
    "sampler=heun",
]


def test_exact_score_through_the_edm_config_and_heun_samples_the_mixture(tmp_path):
    cfg = compose_cfg("train", EDM_TOY, tmp_path)
    d = cfg.data
    mix = toy.GaussianMixture(list(d.weights), [list(m) for m in d.means], list(d.stds))
    sigma_score = toy.oracle_sigma_score(mix)

    def mixture_denoiser(y: Tensor, sigma: Tensor) -> Tensor:  # Tweedie
        return y + sigma[:, None] ** 2 * sigma_score(y, sigma)

    noise = build_noise(cfg)
    sigma_data = float(cfg.model.parametrization.sigma_data)
    model = build_parametrization(
        cfg.model.parametrization, ExactF(mixture_denoiser, sigma_data), noise
    )
    assert isinstance(model, EDMPrecond)
    # Both runs from the prior N(0, 80² I): the oracle knows its mixture's moments and would
    # otherwise start from the moment-matched Gaussian (init=auto), the wrapped F does not.
    cfg.init.kind = "prior"
    sampler = build_sampler(cfg)
    sampler.check(model)
    n = 4000
    x = sampler(model, (n, 2), generator=torch.Generator().manual_seed(0)).x.double()
    # The wrapper is exact: the same draws as the sampler on the mixture's own score.
    oracle = sampler(
        OracleScoreModel(mix, noise), (n, 2), generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(x, oracle.x.double(), rtol=1e-4, atol=1e-4)
    # And the mixture is sampled: mode weight, per-mode moments, sliced W2. 18 Heun steps
    # (35 NFE) from N(0, 80² I) shift the small mode's mean by about 0.09 (n = 20000; 0.03
    # with 50 steps), the exact score's own discretisation error, hence 0.15 for the means.
    g = torch.Generator().manual_seed(1)
    ref = mix.sample(n, generator=g, dtype=torch.float64)
    floor = sliced_wasserstein(ref, mix.sample(n, generator=g, dtype=torch.float64))
    assert torch.isfinite(x).all()
    weights = mode_weights(x, mix.means.double())
    assert abs(weights[0].item() - 0.2) < 0.03, weights
    nearest = torch.cdist(x, mix.means.double()).argmin(dim=1)
    for k in range(2):
        xk = x[nearest == k]
        assert (xk.mean(0) - mix.means[k].double()).abs().max() < 0.15
        assert (xk.std(0) - 1.0).abs().max() < 0.1
    assert sliced_wasserstein(x, ref) < 2 * floor


def test_the_edm_config_trains_one_step_and_refuses_a_mismatched_sigma_data(tmp_path):
    fast = ["model.net.hidden=32", "data.n_train=256", "data.batch_size=64"]
    module = build_module(compose_cfg("train", [*EDM_TOY, *fast], tmp_path))
    assert isinstance(module.model, EDMPrecond)
    x = torch.randn(64, 2)
    out = module.loss_fn(module, x, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad is not None for p in module.model.net.parameters())
    cfg = compose_cfg("train", [*EDM_TOY, "loss.sigma_data=0.6"], tmp_path)
    with pytest.raises(ConfigError, match=r"loss.sigma_data=0.6 differs from .*sigma_data=0.5"):
        build_module(cfg)
