"""The deterministic samplers on VE start, by default, from the Gaussian with the VE marginal's
first two moments at σ_max, and so carry no prior-mismatch bias into their samples.

A deterministic sampler maps its start to data through the flow: started from N(0, σ_max² I)
while the marginal at σ_max has mean E[x_0], it moves mass between modes. Here, on mixtures with
a mean far from 0 relative to σ_max (σ_max from NCSNv2's rule, as data=gmm's `auto`), the default
`sampler=ode` (dopri5) and `sampler=heun` (18 steps) with the exact score must put every mode's
weight within ±0.03 of the truth and every mode's mean within 0.1 of its std; the old start
misses the weights.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from mixture_helpers import FAR_MEAN_MIXTURES, mode_errors, ve_oracle
from run_helpers import compose_cfg, sampler_of
from scorelab import toy
from scorelab.nets.precond import OracleScoreModel
from scorelab.sample import sample
from scorelab.sde import VESDE

N = 10_000  # binomial std of a weight near 0.3: 0.0046, so ±0.03 is 6.5 std
MIXTURES = FAR_MEAN_MIXTURES
DRIVERS = ("ode", "heun")


@pytest.mark.parametrize("sampler", DRIVERS)
@pytest.mark.parametrize("name", list(MIXTURES))
def test_default_ve_deterministic_samplers_hit_the_mode_weights_and_means(name, sampler):
    mix = MIXTURES[name]
    model = ve_oracle(mix)
    driver = sampler_of(sampler)  # the defaults of conf/sampler/{ode,heun}.yaml
    x = driver(model, (N, mix.dim), generator=torch.Generator().manual_seed(1)).x
    assert torch.isfinite(x).all()
    err = mode_errors(mix, x)
    weight_err, mean_err = err["weight"], err["mean"]
    assert weight_err < 0.03, f"mode weights off by {weight_err:.3f}"
    assert mean_err < 0.1, f"a mode's mean is off by {mean_err:.3f} of its std"
    assert driver.describe()["start"]["kind"] == "moments"
    # the same sampler from the old start N(0, σ_max² I) carries the prior mismatch
    old = sampler_of(sampler, "init=prior")
    x_old = old(model, (N, mix.dim), generator=torch.Generator().manual_seed(1)).x
    old_weight_err = mode_errors(mix, x_old)["weight"]
    assert old_weight_err > 0.035, f"old start: mode weights off by only {old_weight_err:.3f}"
    start = old.describe()["start"]
    assert start["kind"] == "prior" and start["mean"] == 0.0
    assert start["std"] == pytest.approx(model.noise.sigma_max)


def test_the_start_has_the_ve_marginal_moments():
    """The first state is N(E[x_0], Var[x_0] + σ_max²) per coordinate; E and Var by hand for
    0.3 N((2, 10), diag(1, 0.49)) + 0.7 N((10, 4), diag(1.44, 1))."""
    mix = MIXTURES["2d-two-modes"]
    sde = VESDE(0.01, 15.0, 1000)
    mean = torch.tensor([0.3 * 2 + 0.7 * 10, 0.3 * 10 + 0.7 * 4], dtype=torch.float64)
    second = torch.tensor(
        [0.3 * (1 + 4) + 0.7 * (1.44 + 100), 0.3 * (0.49 + 100) + 0.7 * (1 + 16)],
        dtype=torch.float64,
    )
    std = (second - mean**2 + 15.0**2).sqrt()
    seen = []

    def score(x, t):
        if not seen:
            seen.append(x.clone())
        return toy.oracle_time_score(mix, sde)(x, t)

    model = OracleScoreModel(mix, sde)
    model._score = score
    sampler_of("ode", "sampler.method=euler", "schedule.n_steps=1")(
        model, (200_000, 2), generator=torch.Generator().manual_seed(0)
    )
    x0 = seen[0].double()
    se = std / math.sqrt(x0.shape[0])
    assert ((x0.mean(0) - mean).abs() < 5 * se).all(), (x0.mean(0), mean)
    assert ((x0.std(0) - std).abs() < 5 * std / math.sqrt(2 * x0.shape[0])).all()


def test_init_moments_needs_a_model_that_knows_its_data():
    class NoMoments:  # a trained model whose checkpoint predates the saved moments
        noise = VESDE(0.01, 20.0, 10)
        data_moments = None

    with pytest.raises(ValueError, match="init=auto or init=prior"):
        drv = sampler_of("ode", "init=moments", "sampler.method=euler", "schedule.n_steps=1")
        drv(NoMoments(), (4, 2))


def test_sample_info_reports_the_start(tmp_path):
    """`python -m scorelab.sample model=oracle sampler=ode|pc` writes where sampling started."""
    starts = {}
    for sampler in ("ode", "pc"):
        out = tmp_path / sampler
        overrides = [f"sampler={sampler}", "n_samples=16", "sde.sigma_max=20", "sde.N=10"]
        sample(compose_cfg("sample", overrides, out))
        starts[sampler] = json.loads((out / "sample_info.json").read_text())["sampler"]["start"]
    # NCSN's mixture (data=gmm): mean (3, 3), variance 17 per coordinate, known exactly
    assert starts["ode"]["kind"] == "moments" and starts["ode"]["source"] == "exact (analytic)"
    assert starts["ode"]["std"] == pytest.approx(20.0)
    assert starts["ode"]["mean_norm"] == pytest.approx(math.sqrt(18))
    assert starts["ode"]["data_std"] == pytest.approx(math.sqrt(17))
    # the stochastic samplers keep the prior
    assert starts["pc"] == {"kind": "prior", "mean": 0.0, "std": 20.0}
