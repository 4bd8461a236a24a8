"""The energy parametrisation s = -∇ₓE against hand-derived gradients and closed-form losses."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from scorelab.energy import EnergyScore, MLPEnergy
from scorelab.losses import DiscreteDSMLoss, ImplicitScoreMatchingLoss, SlicedScoreMatchingLoss
from scorelab.toy import GaussianMixture

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


A = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 0.7]], dtype=F64)
M_ = torch.tensor([1.0, -0.5, 0.25], dtype=F64)
WV = torch.tensor([0.3, -1.2, 0.8], dtype=F64)


class Quadratic(nn.Module):
    """E(x, c) = ½ (x - m)ᵀA(x - m) + wᵀ sin(x) + ½ c ‖x‖², per sample (B,)."""

    def __init__(self, A: Tensor, m: Tensor, w: Tensor | None = None) -> None:
        super().__init__()
        self.A, self.m = nn.Parameter(A.clone()), m
        self.w = torch.zeros_like(m) if w is None else w

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        d = x - self.m
        return 0.5 * ((d @ self.A) * d).sum(1) + torch.sin(x) @ self.w + 0.5 * c * (x**2).sum(1)


def test_score_is_minus_the_hand_derived_gradient() -> None:
    """∇E = A(x - m) + w ∘ cos(x) + c x for symmetric A."""
    x = torch.randn(10, 3, generator=gen(0), dtype=F64)
    c = torch.rand(10, generator=gen(1), dtype=F64)
    s = EnergyScore(Quadratic(A, M_, WV))(x, c)
    expected = -((x - M_) @ A + WV * torch.cos(x) + c[:, None] * x)
    assert torch.allclose(s, expected, rtol=1e-12, atol=1e-12)


def test_mlp_energy_gradient_matches_chain_rule() -> None:
    """One hidden layer: E = w2ᵀ softplus(W1 x + b1) + b2, so ∇E = W1ᵀ (w2 ∘ sigmoid(W1 x + b1))."""
    torch.manual_seed(2)
    net = MLPEnergy(4, hidden=6, n_layers=1).double()
    lin1, lin2 = net.net[0], net.net[2]
    x = torch.randn(7, 4, generator=gen(3), dtype=F64)
    pre = x @ lin1.weight.T + lin1.bias
    expected = -(torch.sigmoid(pre) * lin2.weight[0]) @ lin1.weight
    s = EnergyScore(net)(x, torch.zeros(7, dtype=F64))
    assert torch.allclose(s, expected, rtol=1e-12, atol=1e-12)


def test_image_shaped_input_and_conditioning() -> None:
    torch.manual_seed(4)
    net = MLPEnergy(12, hidden=8, n_layers=2, conditional=True).double()
    x = torch.randn(5, 3, 2, 2, generator=gen(5), dtype=F64)
    sigma = torch.full((5,), 0.5, dtype=F64)
    s = EnergyScore(net)(x, sigma)
    assert s.shape == x.shape
    flat = EnergyScore(net)(x.reshape(5, 12), sigma)
    assert torch.allclose(s.reshape(5, 12), flat)
    assert not torch.allclose(s, EnergyScore(net)(x, 2 * sigma))


def test_no_graph_under_no_grad_and_a_graph_in_training() -> None:
    score = EnergyScore(Quadratic(A, M_))
    x = torch.randn(4, 3, generator=gen(6), dtype=F64)
    c = torch.zeros(4, dtype=F64)
    with torch.no_grad():
        s_eval = score(x, c)
    assert not s_eval.requires_grad and s_eval.grad_fn is None
    s_train = score(x, c)
    assert s_train.requires_grad  # through the parameter A
    assert torch.allclose(s_eval, s_train.detach())
    # The graph reaches x: div s = -tr A at every point (a second derivative of E).
    xr = x.clone().requires_grad_(True)
    s = score(xr, c)
    div = sum(torch.autograd.grad(s[:, d].sum(), xr, retain_graph=True)[0][:, d] for d in range(3))
    assert torch.allclose(div, torch.full((4,), -torch.trace(A).item(), dtype=F64))


def test_energy_net_must_return_one_value_per_sample() -> None:
    bad = EnergyScore(lambda x, c: x.sum())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one energy per sample"):
        bad(torch.zeros(3, 2), torch.zeros(3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dim": 0}, "dim=0 must be a positive integer"),
        ({"dim": 2, "hidden": 0}, "hidden=0 must be a positive integer"),
        ({"dim": 2, "n_layers": 0}, "n_layers=0 must be a positive integer"),
    ],
)
def test_mlp_energy_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MLPEnergy(**kwargs)


# ---------------------------------------------------------------------------------------------
# ISM / SSM through the energy: the quadratic energy gives the linear score s = -A(x - m).
# ---------------------------------------------------------------------------------------------

MU = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
S = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
GAUSS = GaussianMixture([1.0], MU[None], S[None])


def ism_closed_quadratic() -> Tensor:
    """ISM of s = -A(x - m) under N(MU, diag S²): -tr A + ½(‖A(MU - m)‖² + tr(A Σ A))."""
    r = A @ (MU - M_)
    return -torch.trace(A) + 0.5 * (r @ r + torch.trace(A @ torch.diag(S**2) @ A))


def test_ism_with_energy_score_matches_closed_form_and_esm_minus_constant() -> None:
    x = GAUSS.sample(10_000, generator=gen(7), dtype=F64)
    per = ImplicitScoreMatchingLoss()(EnergyScore(Quadratic(A, M_)), x).per_sample.detach()
    se = per.std() / math.sqrt(per.numel())
    assert (per.mean() - ism_closed_quadratic()).abs() < 5 * se
    # ESM closed form: s - ∇log p = (P - A) x + A m - P MU with P = diag(1/S²).
    P = torch.diag(1 / S**2)
    Q, q = P - A, A @ M_ - P @ MU
    esm = 0.5 * ((Q @ MU + q) @ (Q @ MU + q) + torch.trace(Q @ torch.diag(S**2) @ Q.T))
    assert torch.allclose(ism_closed_quadratic(), esm - 0.5 * (1 / S**2).sum(), rtol=1e-12)


@pytest.mark.parametrize("variance_reduced", [False, True], ids=["plain", "vr"])
@pytest.mark.parametrize("projection", ["gaussian", "rademacher"])
def test_ssm_with_energy_score_is_unbiased(projection: str, variance_reduced: bool) -> None:
    """Per point, E_v[SSM] = ISM = -tr A + ½‖A(x - m)‖² exactly (5 SE over 5k projections)."""
    score = EnergyScore(Quadratic(A, M_))
    x = torch.randn(3, 3, generator=gen(8), dtype=F64)
    exact = -torch.trace(A) + 0.5 * (((x - M_) @ A) ** 2).sum(1)
    M = 5_000
    ssm = SlicedScoreMatchingLoss(projection=projection, variance_reduced=variance_reduced)
    per = ssm(score, x.repeat(M, 1), generator=gen(9)).per_sample.detach().reshape(M, 3)
    se = per.std(0) / math.sqrt(M)
    assert ((per.mean(0) - exact).abs() < 5 * se).all()


def test_energy_score_trains_with_denoising_score_matching() -> None:
    """A σ-conditioned energy is a drop-in score for DSM: gradients reach every weight."""
    torch.manual_seed(10)
    net = MLPEnergy(2, hidden=8, n_layers=2, conditional=True)
    x = torch.randn(32, 2, generator=gen(11))
    out = DiscreteDSMLoss([1.0, 0.5, 0.1])(EnergyScore(net), x, generator=gen(12))
    out.loss.backward()
    *inner, last_bias = [p.grad for p in net.parameters()]
    assert last_bias is None  # an energy offset leaves the score unchanged
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in inner)
