"""The papers' sampler settings, the way the official code runs them: NCSN's Langevin step, EDM's
σ range for Heun on VP and sub-VP, and annealed Langevin's smallest level on SDE models."""

from __future__ import annotations

import math

import pytest
import torch

from run_helpers import compose_cfg, sampler_of
from scorelab import toy
from scorelab.lit.build import build_noise, build_sampler
from scorelab.nets.precond import OracleScoreModel
from scorelab.sde import VESDE, VPSDE, NoiseLevels, subVPSDE

# 0.3 N((2, 10), diag(1, 0.49)) + 0.7 N((10, 4), diag(1.44, 1))
MIX = toy.GaussianMixture([0.3, 0.7], [[2.0, 10.0], [10.0, 4.0]], [[1.0, 0.7], [1.2, 1.0]])


class GaussianScoreModel:
    """The exact σ-score of N(0, v I) blurred by σ, on the model's noise levels."""

    def __init__(self, noise, v: float = 0.25) -> None:
        self.noise, self.v = noise, v

    def sigma_score(self):
        return lambda x, sigma: -x / (self.v + sigma.view(-1, *[1] * (x.ndim - 1)) ** 2)


def official_ald(model, sigmas, shape, step_lr, n_steps_each, seed):
    """ermongroup/ncsn's anneal_Langevin_dynamics: step = step_lr (σ_i/σ_L)², then
    x ← x + step·s + √(2·step)·z, from x ~ U[0, 1) (its MNIST/CIFAR-10 start)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    score = model.sigma_score()
    for sigma in sigmas.tolist():
        step = step_lr * (sigma / sigmas[-1].item()) ** 2
        for _ in range(n_steps_each):
            z = torch.randn(shape, generator=g)
            x = x + step * score(x, torch.full((shape[0],), sigma)) + math.sqrt(2 * step) * z
    return x


@pytest.mark.parametrize("name", ["ncsn_mnist", "ncsn_cifar10"])
def test_ncsn_experiments_take_the_official_runners_step(name, tmp_path):
    cfg = compose_cfg("train", [f"experiment={name}", "sampler.n_steps_each=3"], tmp_path)
    assert cfg.sampler.step_lr == 2e-5 and cfg.sampler.eps is None
    model = GaussianScoreModel(build_noise(cfg))
    shape = (4, 1, 3, 3)
    x = build_sampler(cfg)(model, shape, generator=torch.Generator().manual_seed(0)).x
    ref = official_ald(model, model.noise.sigmas, shape, 2e-5, 3, seed=0)
    torch.testing.assert_close(x, ref, rtol=1e-5, atol=1e-6)
    # the paper's ε = 2e-5 (the documented alternative) is half that step
    cfg = compose_cfg(
        "train",
        [
            f"experiment={name}",
            "sampler.n_steps_each=3",
            "sampler.eps=2e-5",
            "sampler.step_lr=null",
        ],
        tmp_path,
    )
    x = build_sampler(cfg)(model, shape, generator=torch.Generator().manual_seed(0)).x
    ref = official_ald(model, model.noise.sigmas, shape, 1e-5, 3, seed=0)
    torch.testing.assert_close(x, ref, rtol=1e-5, atol=1e-6)


def test_default_step_on_sde_models_is_the_official_ratio():
    """Neither eps nor step_lr: the official 2e-5 at σ_L = 0.01 scaled to σ_L, step = 0.2 σ_L²."""
    model = GaussianScoreModel(VESDE(0.1, 2.0, 100))
    drv = sampler_of(
        "ald", "sampler.n_steps_each=2", "schedule.num_scales=4", "init.low=0", "init.high=1"
    )
    x = drv(model, (5, 2), generator=torch.Generator().manual_seed(1)).x
    sigmas = drv.schedule(model).kwargs["sigmas"]
    ref = official_ald(model, sigmas, (5, 2), 0.2 * sigmas[-1].item() ** 2, 2, seed=1)
    torch.testing.assert_close(x, ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- EDM-Heun σ range
def _heun_sigmas(model, *overrides: str) -> torch.Tensor:
    return sampler_of("heun", *overrides).schedule(model).kwargs["sigmas"]


def _sigma_at(sde, t: float) -> float:
    """σ(t) = std/alpha written out: VP sqrt(e^{-2 log α} - 1), sub-VP 2 sinh(-log α)."""
    log_alpha = -0.25 * t**2 * (sde.beta_1 - sde.beta_0) - 0.5 * t * sde.beta_0
    if isinstance(sde, subVPSDE):
        return 2 * math.sinh(-log_alpha)
    return math.sqrt(math.expm1(-2 * log_alpha))


@pytest.mark.parametrize("sde", [VPSDE(), subVPSDE()], ids=["VP", "subVP"])
def test_heun_on_vp_and_subvp_runs_over_edms_range(sde):
    model = OracleScoreModel(MIX, sde)
    s = sampler_of("heun").schedule(model).kwargs["sigmas"]
    assert s[0].item() == pytest.approx(80.0) and s[-2].item() == pytest.approx(0.002)
    assert s[-1] == 0 and len(s) == 19
    # each end is configurable: a clamp turned off gives the SDE's own end, a value is used as is
    s = _heun_sigmas(model, "schedule.clamp_sigma_min=null", "schedule.clamp_sigma_max=null")
    assert s[0].item() == pytest.approx(_sigma_at(sde, 1.0), rel=1e-5)  # 152.4
    assert s[-2].item() == pytest.approx(_sigma_at(sde, 1e-5), rel=1e-4)  # 1e-3 (VP), 1e-6
    s = _heun_sigmas(model, "schedule.sigma_min=0.01", "schedule.clamp_sigma_max=100")
    assert s[0].item() == pytest.approx(100.0) and s[-2].item() == pytest.approx(0.01)


def test_heun_keeps_a_ve_range_inside_edms():
    s = _heun_sigmas(OracleScoreModel(MIX, VESDE(0.01, 20.0, 1000)))
    assert s[0].item() == pytest.approx(20.0) and s[-2].item() == pytest.approx(0.01, rel=1e-3)


def _spread(x: torch.Tensor) -> torch.Tensor:
    """Within-mode std over the mode's std, (modes, D); modes split by the nearer mean."""
    x = x.double()
    k = ((x[:, None] - MIX.means[None]) ** 2).sum(-1).argmin(1)
    return torch.stack([x[k == j].std(0) / MIX.stds[j] for j in range(2)])


def test_heun_on_subvp_is_narrower_with_edms_range():
    """Over σ(1e-5) = 1e-6 … 152 five of 18 levels fall below 0.025 and the samples come out
    wider (measured 1.067 against 1.040 within-mode spread, n = 20 000: std error 0.005)."""
    model = OracleScoreModel(MIX, subVPSDE())
    runs = {}
    off = ("schedule.clamp_sigma_min=null", "schedule.clamp_sigma_max=null")
    for label, kw in (("edm", ()), ("sde", off)):
        x = sampler_of("heun", *kw)(
            model, (20_000, 2), generator=torch.Generator().manual_seed(0)
        ).x
        runs[label] = _spread(x).mean().item()
    assert runs["sde"] > runs["edm"] + 0.015, runs


def test_heun_refuses_an_empty_range():
    model = OracleScoreModel(MIX, VPSDE())
    with pytest.raises(ValueError, match="σ range"):
        sampler_of("heun", "schedule.sigma_min=100").check(model)
    with pytest.raises(ValueError, match="clamp_sigma_min=0.0 must be a number > 0"):
        sampler_of("heun", "schedule.clamp_sigma_min=0.0")


# ---------------------------------------------------- annealed Langevin's smallest level on SDEs
SDES = {"ve": lambda: VESDE(0.01, 16.46, 1000), "vp": VPSDE, "subvp": subVPSDE}


@pytest.mark.parametrize("name", list(SDES))
def test_ald_takes_its_smallest_level_from_the_data_scale(name):
    model = OracleScoreModel(MIX, SDES[name]())
    # the mixture's per-coordinate variances by hand: E[x²] - E[x]²
    var = [
        0.3 * (1 + 4) + 0.7 * (1.44 + 100) - (0.3 * 2 + 0.7 * 10) ** 2,
        0.3 * (0.49 + 100) + 0.7 * (1 + 16) - (0.3 * 10 + 0.7 * 4) ** 2,
    ]
    sigmas = sampler_of("ald", "schedule.num_scales=50").schedule(model).kwargs["sigmas"]
    assert sigmas[-1].item() == pytest.approx(0.02 * math.sqrt(sum(var) / 2), rel=1e-5)
    assert sigmas[0].item() == pytest.approx(model.noise.sigma(torch.tensor([1.0])).item())


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_ald_on_sde_models_reaches_the_within_mode_spread(name):
    """toy_gmm's sampler (50 levels, 20 steps each) with the exact score: each mode's spread
    within 0.05 of its std, 0.03 on average (n = 8000: std error 0.015 per mode and coordinate).
    Down to σ(1e-5) with half the official step it was 1.06-1.15 on VP and sub-VP."""
    model = OracleScoreModel(MIX, SDES[name]())
    kw = ("sampler.n_steps_each=20", "schedule.num_scales=50", "init.low=-4", "init.high=16")
    x = sampler_of("ald", *kw)(model, (8000, 2), generator=torch.Generator().manual_seed(3))
    spread = _spread(x.x)
    assert (spread - 1).abs().max() < 0.05, spread
    assert abs(spread.mean().item() - 1) < 0.03, spread
    if name != "ve":  # the former levels and step, for contrast
        lo = model.noise.sigma(torch.tensor([1e-5], dtype=torch.float64)).item()
        old = sampler_of("ald", *kw, f"schedule.sigma_min={lo}", f"sampler.eps={0.2 * lo**2}")
        x = old(model, (8000, 2), generator=torch.Generator().manual_seed(3))
        assert _spread(x.x).max() > 1.05


def test_ald_sigma_min_is_checked_against_the_model():
    with pytest.raises(ValueError, match=r"must lie in the model's range"):
        sampler_of("ald", "schedule.sigma_min=500").check(OracleScoreModel(MIX, VPSDE()))
    with pytest.raises(ValueError, match="sigma_min=null"):  # NCSN's discrete levels
        sampler_of("ald", "schedule.sigma_min=0.1").check(
            GaussianScoreModel(NoiseLevels(1.0, 0.01, 10))
        )
    with pytest.raises(ValueError, match="sigma_min=0.0 must be a number > 0"):
        sampler_of("ald", "schedule.sigma_min=0.0")
