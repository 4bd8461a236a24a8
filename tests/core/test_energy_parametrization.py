"""model/parametrization=energy: the score −∇ₓE/std of E = ½‖x − g(x, c)‖², checked against a
hand-derived gradient, against finite differences of E through the real config, and trained and
sampled through the training entry point's builder."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from run_helpers import TOY_FAST, bare_trainer, compose_cfg
from scorelab.energy import EnergyScoreModel
from scorelab.lit.build import (
    ConfigError,
    build_datamodule,
    build_module,
    build_noise,
    build_score_model,
)
from scorelab.sde import VESDE


class Linear(nn.Module):
    """g(x, c) = A x: E = ½‖(I − A) x‖², so −∇ₓE = −(I − A)ᵀ(I − A) x."""

    def __init__(self, A: Tensor) -> None:
        super().__init__()
        self.A = nn.Parameter(A)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return x @ self.A.T


def test_residual_energy_score_is_the_hand_derived_gradient_over_std():
    torch.manual_seed(0)
    A = torch.randn(3, 3, dtype=torch.float64) * 0.5
    sde = VESDE(sigma_min=0.1, sigma_max=10.0)
    model = EnergyScoreModel(Linear(A.clone()), sde, net_cond="none").double()
    x = torch.randn(5, 3, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64) * 0.9 + 0.05
    std = 0.1 * (10.0 / 0.1) ** t  # VE: σ(t) = σ_min (σ_max/σ_min)^t
    M = torch.eye(3, dtype=torch.float64) - A
    want = -(x @ M.T @ M) / std[:, None]
    with torch.no_grad():  # sampling: the gradient is still taken, and the result detached
        got = model(x, t)
    assert not got.requires_grad
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(model.energy(x, t), 0.5 * ((x @ M.T) ** 2).sum(1))


def test_config_energy_matches_finite_differences(tmp_path):
    cfg = compose_cfg("train", ["experiment=toy_gmm_energy", *TOY_FAST], tmp_path)
    noise = build_noise(cfg)
    model = build_score_model(cfg, noise).double()
    assert isinstance(model, EnergyScoreModel) and model.form == "residual"
    g = model.net.energy_net.net  # the configured MLP, g(x, σ)
    x = torch.randn(4, 2, dtype=torch.float64)
    t = torch.tensor([0.05, 0.3, 0.6, 0.95], dtype=torch.float64)
    sigma = noise.sigma(t)

    def energy(y: Tensor) -> Tensor:  # written out here: ½‖y − g(y, σ)‖²
        return 0.5 * ((y - g(y, sigma)) ** 2).sum(1)

    h = 1e-6
    fd = torch.stack(
        [(energy(x + h * e) - energy(x - h * e)) / (2 * h) for e in torch.eye(2).double()], 1
    )
    _, std = noise.marginal_coeffs(t)
    with torch.no_grad():
        got = model(x, t)
    torch.testing.assert_close(got, -fd.detach() / std[:, None], rtol=1e-5, atol=1e-7)


def test_trains_and_samples_through_the_builder(tmp_path):
    cfg = compose_cfg(
        "train",
        ["experiment=toy_gmm_energy", *TOY_FAST, "schedule.num_scales=5", "sampler.n_steps_each=2"],
        tmp_path,
    )
    module, dm = build_module(cfg), build_datamodule(cfg)
    before = [p.detach().clone() for p in module.model.parameters()]
    bare_trainer(4).fit(module, datamodule=dm)
    moved = [not torch.equal(a, b) for a, b in zip(before, module.model.parameters())]
    assert all(moved)  # the double backward reaches every weight of g
    module.eval()
    with torch.no_grad():
        res = module.sampler(
            module.ema_model(), (64, 2), generator=torch.Generator().manual_seed(0)
        )
    x = res.x
    assert x.shape == (64, 2) and torch.isfinite(x).all()


def test_unknown_form_is_refused(tmp_path):
    cfg = compose_cfg(
        "train",
        ["experiment=toy_gmm_energy", *TOY_FAST, "model.parametrization.form=sum"],
        tmp_path,
    )
    with pytest.raises(
        ConfigError, match=r"form must be one of \('residual', 'scalar'\), got 'sum'"
    ):
        build_module(cfg)
