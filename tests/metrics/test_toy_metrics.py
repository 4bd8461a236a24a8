"""Toy metrics against known answers."""

from __future__ import annotations

import math

import pytest
import torch

from scorelab.metrics.toy import (
    exact_nll,
    mmd_rbf,
    mode_weight_error,
    mode_weights,
    sliced_wasserstein,
    wasserstein_1d,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_sw_of_a_set_with_itself_is_zero():
    x = torch.randn(300, 3, generator=_gen(0))
    assert sliced_wasserstein(x, x, generator=_gen(1)).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_sw_of_a_translate_in_1d_is_the_shift(p):
    # In 1-D, W_p(x, x + c) = |c| for every p.
    x = torch.randn(500, 1, generator=_gen(0), dtype=torch.float64)
    sw = sliced_wasserstein(x, x + 1.5, n_projections=4, p=p, generator=_gen(1))
    assert sw.item() == pytest.approx(1.5, rel=1e-9)


def test_sw2_of_a_translate_in_2d_matches_the_projected_shift():
    # SW_2² = E_θ (θ·s)² = ‖s‖² / D for θ uniform on the sphere.
    x = torch.randn(400, 2, generator=_gen(0), dtype=torch.float64)
    s = torch.tensor([3.0, 4.0], dtype=torch.float64)
    sw = sliced_wasserstein(x, x + s, n_projections=4000, p=2, generator=_gen(1))
    assert sw.item() == pytest.approx(5.0 / math.sqrt(2.0), rel=0.03)


def test_sw2_of_gaussians_matches_the_1d_closed_form():
    # W_2(N(m1, s1²), N(m2, s2²)) = sqrt((m1 - m2)² + (s1 - s2)²); unequal sample counts.
    x = torch.randn(20000, 1, generator=_gen(0), dtype=torch.float64)
    y = 1.0 + 2.0 * torch.randn(15000, 1, generator=_gen(1), dtype=torch.float64)
    sw = sliced_wasserstein(x, y, n_projections=1, generator=_gen(2))
    assert sw.item() == pytest.approx(math.sqrt(2.0), abs=0.04)


def test_sw_is_small_for_two_samples_of_one_gaussian_and_grows_with_a_shift():
    x = torch.randn(2000, 2, generator=_gen(0))
    y = torch.randn(2000, 2, generator=_gen(1))
    base = sliced_wasserstein(x, y, generator=_gen(2)).item()
    shifted = [sliced_wasserstein(x, y + d, generator=_gen(2)).item() for d in (0.5, 1.0, 2.0)]
    assert base < 0.1
    assert base < shifted[0] < shifted[1] < shifted[2]


def test_wasserstein_1d_unequal_counts_is_exact():
    # u = {0, 1}, v = {0, 0.5, 1}: quantiles differ by 0.5 on (1/3, 1/2] and (1/2, 2/3].
    u = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    v = torch.tensor([[0.0], [0.5], [1.0]], dtype=torch.float64)
    assert wasserstein_1d(u, v, p=1).item() == pytest.approx(0.5 / 3)
    assert wasserstein_1d(u, v, p=2).item() == pytest.approx(math.sqrt(0.25 / 3))


def test_mmd_is_near_zero_for_one_distribution_and_positive_when_shifted():
    x = torch.randn(500, 2, generator=_gen(0), dtype=torch.float64)
    y = torch.randn(500, 2, generator=_gen(1), dtype=torch.float64)
    same = mmd_rbf(x, y).item()
    shifted = mmd_rbf(x, y + 1.0).item()
    assert abs(same) < 5e-3
    assert shifted > 0.05
    assert mmd_rbf(x, y + 1.0, bandwidths=[0.5, 1.0, 2.0]).item() > 0.05


def test_mmd_of_identical_pairs_has_the_closed_form():
    # Two points each, x = y = {0, 1}, one bandwidth h: MMD² = 2k(0,1) - 2(2 + 2k(0,1))/4.
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    k01 = math.exp(-1 / 2)
    expected = 2 * k01 - 2 * (2 + 2 * k01) / 4
    assert mmd_rbf(x, x.clone(), bandwidths=[1.0]).item() == pytest.approx(expected)


def test_mode_weights_on_constructed_data():
    means = torch.tensor([[-5.0, -5.0], [5.0, 5.0]])
    noise = 0.1 * torch.randn(100, 2, generator=_gen(0))
    x = torch.cat([means[0] + noise[:20], means[1] + noise[20:]])
    assert torch.equal(mode_weights(x, means), torch.tensor([20.0, 80.0]) / 100)
    assert mode_weight_error(x, means, [0.25, 0.75]).item() == pytest.approx(0.05)
    assert mode_weight_error(x, means, torch.tensor([0.2, 0.8])).item() == pytest.approx(0.0)


def test_exact_nll_of_a_standard_normal():
    x = torch.zeros(4, 2)
    dist = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
    assert exact_nll(x, dist.log_prob).item() == pytest.approx(math.log(2 * math.pi))


def test_bad_inputs_raise():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="shape \\(N, D\\)"):
        sliced_wasserstein(torch.randn(10), x)
    with pytest.raises(ValueError, match="same dimension"):
        mmd_rbf(x, torch.randn(10, 3))
    with pytest.raises(ValueError, match="n_projections"):
        sliced_wasserstein(x, x, n_projections=0)
    with pytest.raises(ValueError, match="bandwidths"):
        mmd_rbf(x, x, bandwidths=[0.0])
    with pytest.raises(ValueError, match="weights must have shape"):
        mode_weight_error(x, torch.zeros(3, 2), [0.5, 0.5])
