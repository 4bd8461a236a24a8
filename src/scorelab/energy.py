"""Energy parametrisation of a score: s(x, c) = -∇ₓ E_θ(x, c).

The score of the unnormalised density exp(-E) needs no partition function. :class:`EnergyScore`
makes a drop-in score of an energy network: while gradients are tracked (training, or ISM/SSM
differentiating the score again) with ``create_graph=True``; under ``torch.no_grad()``
(sampling) inside :func:`torch.enable_grad`, without a graph, detached.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from scorelab.nets.conditioning import cond_input
from scorelab.nets.noise_embedding import check_positive_ints
from scorelab.nets.precond import ScoreModel
from scorelab.sde import NoiseProcess

ENERGY_FORMS = ("residual", "scalar")


class EnergyScore(nn.Module):
    """Score −∇ₓE(x, cond) of a scalar energy network.

    Args:
        energy_net: module called as ``energy_net(x, cond)`` with x (B, ...) and cond (B,),
            returning the energy of each sample, (B,).

    Calling ``EnergyScore(net)(x, cond)`` returns a tensor shaped like ``x``.
    """

    def __init__(self, energy_net: nn.Module) -> None:
        super().__init__()
        self.energy_net = energy_net
        # what the energy network is fed (σ, t, ...), so parametrisations can check it
        self.cond_input = cond_input(energy_net)

    def cond_features(self, cond: Tensor | None) -> Tensor | None:
        """The energy network's features of the noise level (see nets/conditioning.py)."""
        return self.energy_net.cond_features(cond)

    def energy(self, x: Tensor, cond: Tensor) -> Tensor:
        """E(x, cond), (B,)."""
        e = self.energy_net(x, cond)
        if e.shape != (x.shape[0],):
            raise ValueError(
                f"energy_net must return one energy per sample, shape ({x.shape[0]},); "
                f"got {tuple(e.shape)}"
            )
        return e

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        track = torch.is_grad_enabled()
        with torch.enable_grad():
            # Differentiate with respect to x itself when it is already part of a graph (a loss
            # taking a second derivative needs that); otherwise through a fresh leaf.
            x_in = x if x.requires_grad else x.detach().requires_grad_(True)
            e = self.energy(x_in, cond)
            (grad,) = torch.autograd.grad(e.sum(), x_in, create_graph=track)
        return -grad if track else -grad.detach()


class MLPEnergy(nn.Module):
    """A small smooth energy network for toys and tests: ``n_layers`` softplus layers of width
    ``hidden`` (softplus keeps the second derivatives ISM and SSM need), then one energy.

    Inputs (B, ...) are flattened to (B, dim); with ``conditional`` cond (B,) is appended as one
    more feature, else ignored. ``forward(x, cond)`` returns the energies, (B,).
    """

    def __init__(
        self, dim: int, hidden: int = 128, n_layers: int = 3, conditional: bool = False
    ) -> None:
        super().__init__()
        check_positive_ints(dim=dim, hidden=hidden, n_layers=n_layers)
        self.dim, self.conditional = dim, bool(conditional)
        layers: list[nn.Module] = []
        width = dim + int(self.conditional)
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.Softplus()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = x.reshape(x.shape[0], -1)
        if h.shape[1] != self.dim:
            raise ValueError(f"x must have {self.dim} elements per sample, got {h.shape[1]}")
        if self.conditional:
            if cond is None:
                raise ValueError("cond is required when conditional=True")
            h = torch.cat([h, cond.reshape(-1, 1).to(h.dtype)], dim=1)
        return self.net(h).squeeze(1)


class ResidualEnergy(nn.Module):
    """E(x, cond) = ½‖x − g(x, cond)‖² of a network g whose output is shaped like x.

    Any score network of the package becomes an energy network this way (the form Salimans & Ho
    2021 found to train as well as the score itself); its gradient x − g − J_gᵀ(x − g) is the
    energy view's score up to sign.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.cond_input = cond_input(net)

    def cond_features(self, cond: Tensor | None) -> Tensor | None:
        return self.net.cond_features(cond)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        r = (x - self.net(x, cond)).reshape(x.shape[0], -1)
        return 0.5 * (r * r).sum(dim=1)


class EnergyScoreModel(ScoreModel):
    """The energy parametrisation as a model config: the score is −∇ₓE_θ(x, c), mapped to the
    score like :class:`~scorelab.nets.precond.ScoreModel`'s output (``"scaled"``: divided by the
    marginal std, so E is dimensionless in units of the noise).

    Args:
        net: ``form="residual"``: a network shaped like x, used as g in E = ½‖x − g(x, c)‖²;
            ``form="scalar"``: a network returning one energy per sample, (B,).
        noise, net_cond, output (keywords): as for ScoreModel.
        form: ``"residual"`` or ``"scalar"``.

    The raw energy of a batch is :meth:`energy` (for plots of the learnt landscape).
    """

    def __init__(self, net: nn.Module, noise: NoiseProcess, *, form: str = "residual", **kw):
        if form not in ENERGY_FORMS:
            raise ValueError(
                f"form must be one of {ENERGY_FORMS}, got {form!r}: residual for a network "
                "shaped like x (E = ½‖x − g‖²), scalar for one returning an energy per sample"
            )
        energy_net = ResidualEnergy(net) if form == "residual" else net
        super().__init__(EnergyScore(energy_net), noise, **kw)
        self.form = form

    def energy(self, x: Tensor, noise: Tensor) -> Tensor:
        """E_θ(x, c), (B,), for the caller's noise argument (σ if discrete, else t)."""
        return self.net.energy(x, self.net_input(noise))
