"""Classifier-free guidance against exact answers on a Gaussian mixture.

The mixture 0.3 N((-4, 0), 0.6² I) + 0.7 N((4, 1), I) with its components as classes: the exact
conditional score of class k is component k's perturbed score, that of ∅ the mixture's. Sampled
with the reverse-diffusion sampler of a VE SDE (σ from 0.01 to 20, 500 steps, float64), the
conditional score must reproduce component k and the unconditional one the mixture weights.
Every expected number comes from the mixture's parameters.
"""

from __future__ import annotations

import math

import pytest
import torch

from run_helpers import TOY_FAST, compose_cfg
from scorelab.guidance import GuidanceError, GuidedScore, MixtureClassOracle, guided
from scorelab.sampling import reverse_diffusion_sampler
from scorelab.sde import VESDE
from scorelab.toy import GaussianMixture

WEIGHTS = [0.3, 0.7]
MEANS = [[-4.0, 0.0], [4.0, 1.0]]
STDS = [0.6, 1.0]
N = 4000  # samples per run
Z = 4.0  # tolerance in standard errors


def mixture() -> GaussianMixture:
    return GaussianMixture(WEIGHTS, MEANS, STDS)


def oracle() -> MixtureClassOracle:
    return MixtureClassOracle(mixture(), VESDE(sigma_min=0.01, sigma_max=20.0, N=500))


def draw(score, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = 20.0 * torch.randn(N, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        return reverse_diffusion_sampler(score, x, score.noise, generator=g).x


def side(x: torch.Tensor) -> torch.Tensor:
    """Component 0 lies left of x₀ = 0, component 1 right of it."""
    return (x[:, 0] > 0).long()


def p_wrong_side(k: int) -> float:
    """P(a point of component k falls on the other side of x₀ = 0) = Φ(−|μ_k0| / s_k)."""
    return 0.5 * math.erfc(abs(MEANS[k][0]) / STDS[k] / math.sqrt(2))


# ------------------------------------------------------------------ the guided score itself
def hand_scores(x: torch.Tensor, sigma: float):
    """Component scores (K, B, D) and the mixture score (B, D) of the mixture convolved with
    N(0, σ² I), written out from its parameters."""
    comp, logp = [], []
    for w, mu, s in zip(WEIGHTS, MEANS, STDS):
        var = s**2 + sigma**2
        d = x - torch.tensor(mu, dtype=x.dtype)
        comp.append(-d / var)
        logp.append(math.log(w) - 0.5 * (d**2).sum(1) / var - math.log(2 * math.pi * var))
    resp = torch.softmax(torch.stack(logp, 1), 1)  # (B, K)
    comp = torch.stack(comp)  # (K, B, D)
    mix = (resp.T[..., None] * comp).sum(0)
    return comp, mix


@pytest.mark.parametrize("weight", [0.0, 0.5, 3.0])
@pytest.mark.parametrize("label", [0, 1])
def test_guided_score_is_the_cfg_combination(label, weight):
    model = oracle()
    sde = model.noise
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    t = torch.full((64,), 0.4, dtype=torch.float64)
    sigma = float(sde.marginal_coeffs(t)[1][0])
    comp, mix = hand_scores(x, sigma)
    want = (1 + weight) * comp[label] - weight * mix
    got = GuidedScore(model, label, weight)(x, t)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # the σ view the Langevin samplers use is the same combination
    torch.testing.assert_close(
        GuidedScore(model, label, weight).sigma_score()(
            x, torch.full((64,), sigma, dtype=torch.float64)
        ),
        want,
        rtol=1e-10,
        atol=1e-12,
    )
    # the null label and label=None both give the mixture's score
    null = torch.full((64,), 2)
    torch.testing.assert_close(model(x, t, label=null), mix, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model(x, t), mix, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ sampling
@pytest.mark.parametrize("label", [0, 1])
def test_weight_zero_samples_the_component(label):
    x = draw(GuidedScore(oracle(), label, 0.0), seed=label)
    frac = (side(x) == label).double().mean().item()
    # expected 1 − Φ(−|μ|/s) ≈ 1 − 1e-11; the bar 0.97 leaves room only for sampling noise
    assert 1 - p_wrong_side(label) > 0.999 and frac >= 0.97
    mu, s = torch.tensor(MEANS[label], dtype=torch.float64), STDS[label]
    se_mean, se_std = s / math.sqrt(N), s / math.sqrt(2 * (N - 1))
    assert (x.mean(0) - mu).abs().max().item() < Z * se_mean, x.mean(0)
    assert (x.std(0) - s).abs().max().item() < Z * se_std, x.std(0)


def test_unconditional_score_mixes_back_to_the_weights():
    model = oracle()
    x = draw(model, seed=7)  # the class oracle with no label: the mixture's score
    frac0 = (side(x) == 0).double().mean().item()
    # expected weight of the left side: w_0 (1 − p_0) + w_1 p_1
    want = WEIGHTS[0] * (1 - p_wrong_side(0)) + WEIGHTS[1] * p_wrong_side(1)
    assert abs(frac0 - want) <= 0.03  # ±0.03 = 4.1 binomial standard errors at N = 4000


@pytest.mark.parametrize("label", [0, 1])
def test_guidance_lands_on_the_component(label):
    """With w = 2 the guided score is not a score of any mixture, but near component k it
    equals component k's (the mixture's responsibility of k is ≈ 1 there), and it pushes away
    from the other component everywhere: every sample lands on component k's side."""
    x = draw(GuidedScore(oracle(), label, 2.0), seed=10 + label)
    frac = (side(x) == label).double().mean().item()
    assert frac >= 0.97
    mu = torch.tensor(MEANS[label], dtype=torch.float64)
    assert (x.mean(0) - mu).norm().item() < STDS[label]  # within one std of its mean


# ------------------------------------------------------------------ the command line
def test_sample_cli_with_the_oracle(tmp_path):
    """python -m scorelab.sample model=oracle data=gmm sde=ve sampler=pc guidance.label=0: the
    NCSN mixture's component 0, N((-5, -5), I) of weight 0.2, only."""
    import numpy as np

    from scorelab.sample import sample

    cfg = compose_cfg(
        "sample",
        ["model=oracle", "data=gmm", "sde=ve", "sde.sigma_max=20.0", "sampler=pc",
         "schedule.n_steps=200", "n_samples=500",
         "guidance.label=0", "guidance.weight=1.0"],
        tmp_path,
    )  # fmt: skip
    info = sample(cfg)
    assert info["guidance"] == {"label": 0, "weight": 1.0, "num_labels": 2}
    x = np.load(tmp_path / "samples.npz")["samples"]
    assert x.shape == (500, 2) and (x.sum(1) < 0).mean() >= 0.97


# ------------------------------------------------------------------ bad input
def test_bad_guidance_refused(tmp_path):
    model = oracle()
    with pytest.raises(GuidanceError, match=r"guidance\.label=2 must be an integer in \[0, 2\)"):
        GuidedScore(model, 2, 1.0)
    with pytest.raises(GuidanceError, match=r"guidance\.label=-1 must be an integer in \[0, 2\)"):
        guided(model, {"label": -1, "weight": 1.0})
    with pytest.raises(GuidanceError, match=r"guidance\.weight=-0\.5 must be a finite number >= 0"):
        GuidedScore(model, 0, -0.5)
    with pytest.raises(GuidanceError, match=r"guidance\.weight=2\.0 needs a class"):
        guided(model, {"label": None, "weight": 2.0})
    assert guided(model, {"label": None, "weight": 0.0}) is model
    # an unconditional trained model (no label embedding)
    from scorelab.lit.build import build_module

    cfg = compose_cfg("train", [*TOY_FAST, "sde.sigma_max=20.0"], tmp_path)
    plain = build_module(cfg).ema_model()
    with pytest.raises(GuidanceError, match=r"trained without labels.*data\.labels=true"):
        guided(plain, {"label": 0, "weight": 1.0})


def test_guidance_on_a_network_is_one_call_and_the_same_combination(tmp_path):
    """A class-conditional MLP from the real config: the guided score evaluates the network once
    (conditional and null labels in one doubled batch) and equals the combination of two
    separate calls."""
    from scorelab.lit.build import build_module

    cfg = compose_cfg(
        "train",
        [*TOY_FAST, "data=gmm", "data.labels=true", "model.net.num_labels=2", "sde.sigma_max=20"],
        tmp_path,
    )
    model = build_module(cfg).model.double()
    calls = []
    model.net.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.full((16,), 0.3, dtype=torch.float64)
    with torch.no_grad():
        got = GuidedScore(model, 1, 2.0)(x, t)
        assert len(calls) == 1
        cond = model(x, t, label=torch.full((16,), 1))
        uncond = model(x, t, label=torch.full((16,), 2))
    torch.testing.assert_close(got, 3.0 * cond - 2.0 * uncond, rtol=1e-10, atol=1e-12)
