"""Every sampler, fed the exact score of 0.2·N((-5,-5), I) + 0.8·N((5,5), I), lands near true
samples: sliced W2 within twice the noise floor (SW between two independent true sets of the same
size) and the small mode's weight within ±0.04 of 0.2 (its sampling std at n = 2000 is 0.009).

VE uses σ_max = 100 so that the prior mismatch N(0, σ_max² I) vs the blurred mixture is small
(at σ_max = 20 the probability-flow ODE puts ≈ 0.25 of its samples in the small mode).
"""

from __future__ import annotations

import functools
import zlib

import pytest
import torch

from scorelab import schedules, toy
from scorelab.metrics.toy import mode_weights, sliced_wasserstein
from scorelab.sampling.api import (
    LangevinCorrector,
    ancestral_sampler,
    annealed_langevin,
    edm_heun,
    em_sampler,
    ode_sampler,
    pc_sampler,
    reverse_diffusion_sampler,
)
from scorelab.sde import VESDE, VPSDE, sigma_score_from_time_score

N = 2000
STEPS = 200
MIX = toy.ncsn_toy_mixture()
SDES = {"ve": lambda: VESDE(0.01, 100.0, STEPS), "vp": lambda: VPSDE(0.1, 20.0, STEPS)}


def _sw(x: torch.Tensor, y: torch.Tensor) -> float:
    return sliced_wasserstein(x, y, n_projections=128, generator=torch.Generator().manual_seed(7))


@functools.cache
def _reference() -> tuple[torch.Tensor, float]:
    g = torch.Generator().manual_seed(1234)
    ref = MIX.sample(N, generator=g, dtype=torch.float64)
    floors = [_sw(ref, MIX.sample(N, generator=g, dtype=torch.float64)).item() for _ in range(4)]
    return ref, sum(floors) / len(floors)


def _check(x: torch.Tensor) -> None:
    ref, floor = _reference()
    assert torch.isfinite(x).all()
    sw = _sw(x.double(), ref).item()
    w_small = mode_weights(x.double(), MIX.means)[0].item()
    assert sw < 2 * floor, f"sliced W2 {sw:.3f} vs noise floor {floor:.3f}"
    assert abs(w_small - 0.2) < 0.04, f"weight of the 0.2 mode: {w_small:.3f}"


SDE_SAMPLERS = {
    "pc_langevin": (
        functools.partial(pc_sampler, corrector=functools.partial(LangevinCorrector, snr=0.16)),
        2 * STEPS,
    ),
    "em": (em_sampler, STEPS),
    "reverse_diffusion": (reverse_diffusion_sampler, STEPS),
    "ancestral": (ancestral_sampler, STEPS),
    "ode_dopri5": (functools.partial(ode_sampler, method="dopri5"), None),
    "ode_euler": (functools.partial(ode_sampler, method="euler"), STEPS + 1),
    "ode_heun": (functools.partial(ode_sampler, method="heun", n_steps=50), 101),
}


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
@pytest.mark.parametrize("name", list(SDE_SAMPLERS))
def test_sde_samplers_match_true_samples(name, sde_name):
    sde = SDES[sde_name]()
    fn, nfe = SDE_SAMPLERS[name]
    g = torch.Generator().manual_seed(zlib.crc32(f"{name}-{sde_name}".encode()))
    x = sde.prior_sampling((N, 2), generator=g, dtype=torch.float64)
    out = fn(toy.oracle_time_score(MIX, sde), x, sde, generator=g)
    if nfe is not None:
        assert out.nfe == nfe
    assert out.net_calls == out.nfe
    _check(out.x)


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_edm_heun_matches_true_samples(sde_name):
    sde = SDES[sde_name]()
    score = sigma_score_from_time_score(sde, toy.oracle_time_score(MIX, sde))
    sigmas = schedules.karras_sigmas(18, 0.002, 80.0).double()
    g = torch.Generator().manual_seed(11)
    x = torch.randn(N, 2, generator=g, dtype=torch.float64) * sigmas[0]
    out = edm_heun(score, x, sigmas, generator=g)
    assert out.nfe == 35
    _check(out.x)


def test_annealed_langevin_matches_true_samples():
    """ALD with the NCSN toy settings, from N(0, σ_1² I), ending with the Tweedie step."""
    score = toy.oracle_sigma_score(MIX)
    sigmas = schedules.geometric_sigmas(20.0, 0.1, 10).double()
    g = torch.Generator().manual_seed(12)
    x = torch.randn(N, 2, generator=g, dtype=torch.float64) * 20
    out = annealed_langevin(
        score, x, sigmas, n_steps_each=50, eps=0.01, final_denoise=True, generator=g
    )
    _check(out.x)
