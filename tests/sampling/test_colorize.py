"""Colorization against an exact posterior: a mixture that is diagonal in the decoupled colour
space (grey axis, two colour axes), so that, given the grey level, the colours follow a mixture
whose weights and moments are written out here from its parameters."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from scorelab import toy
from scorelab.sampling.conditional import decoupled_basis, pc_colorize
from scorelab.sampling.pc import LangevinCorrector
from scorelab.sde import VESDE, VPSDE

STEPS = 200
# In decoupled coordinates (g, c1, c2): g is observed; c1 names the component (modes 2 apart,
# std 0.1), c2 is a second colour axis. As in tests/sampling/test_conditional.py, the observed
# axis has the large spread, so the replacement sampler is close to the exact conditional.
W = [0.3, 0.7]
MU = [[-4.0, -1.0, 0.5], [2.0, 1.0, -0.5]]
S = [[4.0, 0.1, 0.2], [3.0, 0.1, 0.3]]
G = 0.0  # the observed grey axis value; the channel mean is G / √3
N = 8000


def test_decoupled_basis_is_orthogonal_with_the_grey_axis_first():
    for c in (2, 3, 4):
        m = decoupled_basis(c)
        torch.testing.assert_close(m @ m.T, torch.eye(c, dtype=torch.float64))
        torch.testing.assert_close(m[0], torch.full((c,), 1 / math.sqrt(c), dtype=torch.float64))
    m3 = decoupled_basis(3)
    torch.testing.assert_close(m3[1], torch.tensor([1.0, -1.0, 0.0]).double() / math.sqrt(2))
    torch.testing.assert_close(m3[2], torch.tensor([1.0, 1.0, -2.0]).double() / math.sqrt(6))


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_colorize_matches_the_exact_conditional(sde_name):
    sde = VESDE(0.01, 20.0, STEPS) if sde_name == "ve" else VPSDE(0.1, 20.0, STEPS)
    mix = toy.GaussianMixture(W, MU, S)  # the mixture of the decoupled coordinates
    score_y = toy.oracle_time_score(mix, sde)
    m = decoupled_basis(3)

    def score_rgb(x, t):  # the same density in the colour channels: x = mᵀ y
        return score_y(x @ m.T, t) @ m

    g = torch.Generator().manual_seed(5 if sde_name == "ve" else 6)
    x = sde.prior_sampling((N, 3), generator=g, dtype=torch.float64)
    grey = torch.tensor(G / math.sqrt(3), dtype=torch.float64)
    out = pc_colorize(
        score_rgb,
        x,
        sde,
        grey=grey.reshape(()),
        corrector=functools.partial(LangevinCorrector, snr=0.16),
        generator=g,
    )
    assert torch.isfinite(out.x).all()
    torch.testing.assert_close(out.x.mean(1), grey.expand(N), atol=1e-12, rtol=0)
    y = out.x @ m.T
    lik = [w * math.exp(-0.5 * ((G - mu[0]) / s[0]) ** 2) / s[0] for w, mu, s in zip(W, MU, S)]
    exact = [v / sum(lik) for v in lik]  # (0.196, 0.804)
    k = (y[:, 1:2] - torch.tensor([[mu[1] for mu in MU]]).double()).abs().argmin(1)
    for j, pi in enumerate(exact):
        sel = y[k == j]
        frac = len(sel) / N
        # sampling std of a fraction at n = 8000: 0.0045
        assert abs(frac - pi) < 0.03, (j, frac, pi)
        for d in (1, 2):
            mean, sd = MU[j][d], S[j][d]
            assert abs(sel[:, d].mean().item() - mean) < 4 * sd / math.sqrt(len(sel)) + 0.003
            assert abs(sel[:, d].std().item() / sd - 1) < 0.08, (j, d, sel[:, d].std().item())


def test_colorize_refuses_single_channel_and_bad_grey():
    sde = VESDE(0.01, 20.0, 10)
    score = toy.oracle_time_score(toy.GaussianMixture([1.0], [[0.0]], [[1.0]]), sde)
    with pytest.raises(ValueError, match="at least 2 channels.*single-channel data"):
        pc_colorize(score, torch.zeros(4, 1, 2, 2), sde, grey=torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"grey has shape \(3, 3\); it must be one example"):
        pc_colorize(score, torch.zeros(4, 3, 2, 2), sde, grey=torch.zeros(3, 3))
