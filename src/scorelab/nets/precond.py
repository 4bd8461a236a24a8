"""Parametrisations: turn a raw network ``net(x, cond)`` into a score function.

A raw network never knows about σ scaling, the VP ε convention or EDM's preconditioning; these
small classes do, one per formulation, each in one place:

- :class:`ScoreModel`: the score-SDE / NCSN family. Its ``output`` says how the network output
  becomes the score: ``"score"`` (as is), ``"scaled"`` (score = out / std: NCSNv2's s(x)/σ and
  NCSN++'s scale_by_sigma) or ``"eps"`` (score = −out/std, DDPM's ε); std is the marginal std of
  the SDE at t, or σ for discrete levels.

Both speak the caller's *noise domain*: σ for discrete :class:`~scorelab.schedules.NoiseLevels`
(NCSN, NCSNv2), time t for an :class:`~scorelab.sde.SDE`. What they feed the network as ``cond``
is their ``net_cond``, a kind of :mod:`scorelab.nets.conditioning` (σ, EDM's c_noise, t, 999·t,
the level index or nothing); a network that expects another kind (its ``cond_input``) is
refused at construction, so the noise level is never scaled twice.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from scorelab.nets.conditioning import STEP_SCALE, check_cond_input, check_kind
from scorelab.schedules import NoiseLevels
from scorelab.sde import SDE, sigma_score_from_time_score
from scorelab.utils import append_dims

_OUTPUTS = ("score", "scaled", "eps")


class _Parametrization(nn.Module):
    """What every parametrisation shares: the noise, the cond it feeds, the samplers' views."""

    net: nn.Module
    noise: NoiseLevels | SDE
    net_cond: str

    @property
    def is_discrete(self) -> bool:
        return isinstance(self.noise, NoiseLevels)

    def _cond_from(self, noise: Tensor, sigma: Tensor) -> Tensor:
        """``cond`` of kind ``net_cond`` for the caller's ``noise`` (B,) at VE level σ (B,)."""
        kind = self.net_cond
        if kind == "sigma":
            return sigma
        if kind == "c_noise":
            return 0.25 * torch.log(sigma)
        if kind == "time":
            return noise
        if kind == "step":
            return STEP_SCALE * noise
        if kind == "index":
            return self.noise.index_of(noise)
        return torch.zeros_like(noise)

    def sigma_score(self) -> Callable[[Tensor, Tensor], Tensor]:
        """σ-conditioned score ``fn(x, sigma)`` (VE-equivalent), for Langevin-type samplers."""
        if self.is_discrete:
            return self
        return sigma_score_from_time_score(self.noise, self)

    def time_score(self) -> Callable[[Tensor, Tensor], Tensor]:
        """Time-conditioned score ``fn(x, t)``, for SDE samplers; needs an SDE."""
        if self.is_discrete:
            raise ValueError(
                "this model was trained on discrete noise levels (sde=ncsn); SDE samplers "
                "(pc, em, reverse_diffusion, ancestral, ode) need an SDE model: use sampler=ald, "
                "langevin or heun"
            )
        return self


class ScoreModel(_Parametrization):
    """Score s_θ(x, noise) from a raw network.

    Args:
        net: raw network, ``net(x, cond) -> Tensor`` shaped like x.
        noise: a :class:`NoiseLevels` (callers pass σ) or an :class:`SDE` (callers pass t).
        net_cond: what the network is fed (:mod:`scorelab.nets.conditioning`): ``"sigma"`` (σ),
            ``"c_noise"`` (¼ ln σ), ``"time"`` (t), ``"step"`` (999·t, DDPM's scale),
            ``"index"`` (the nearest discrete level) or ``"none"``; it must be the network's
            ``cond_input``.
        output: how the network output maps to the score (see the module docstring).
    """

    def __init__(
        self,
        net: nn.Module,
        noise: NoiseLevels | SDE,
        *,
        net_cond: str = "sigma",
        output: str = "scaled",
    ) -> None:
        super().__init__()
        check_kind("net_cond", net_cond)
        check_kind("output", output, _OUTPUTS)
        if net_cond == "index" and not isinstance(noise, NoiseLevels):
            raise ValueError(
                "net_cond='index' needs discrete noise levels (sde=ncsn); for an SDE use "
                "net_cond='sigma' or 'time'"
            )
        if net_cond in ("time", "step") and isinstance(noise, NoiseLevels):
            raise ValueError(
                f"net_cond={net_cond!r} needs an SDE; with sde=ncsn use 'sigma' or 'index'"
            )
        check_cond_input(net, net_cond, "ScoreModel")
        self.net = net
        self.noise = noise
        self.net_cond = net_cond
        self.output = output

    def _sigma_std(self, noise: Tensor) -> tuple[Tensor, Tensor]:
        """(VE-equivalent σ, marginal std) for the caller's noise argument."""
        if self.is_discrete:
            return noise, noise
        _, std = self.noise.marginal_coeffs(noise)
        return self.noise.sigma(noise), std

    def net_input(self, noise: Tensor) -> Tensor:
        """The ``cond`` (B,) the network is fed for ``noise`` (B,): σ if discrete, else t."""
        return self._cond_from(noise, self._sigma_std(noise)[0])

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        """Score at ``x`` (B, ...) for ``noise`` (B,): σ if discrete, else t."""
        sigma, std = self._sigma_std(noise)
        out = self.net(x, self._cond_from(noise, sigma))
        if self.output == "score":
            return out
        scale = append_dims(std.to(out.dtype), out.ndim)
        return out / scale if self.output == "scaled" else -out / scale


class OracleScoreModel(nn.Module):
    """The exact score of a Gaussian mixture, with the same interface as :class:`ScoreModel`."""

    def __init__(self, mixture, noise: NoiseLevels | SDE) -> None:
        super().__init__()
        from scorelab.toy import oracle_sigma_score, oracle_time_score

        self.mixture = mixture
        self.noise = noise
        self._sigma = oracle_sigma_score(mixture)
        self._time = None if isinstance(noise, NoiseLevels) else oracle_time_score(mixture, noise)
        # A parameter-free module still needs a device anchor.
        self.register_buffer("_anchor", torch.zeros(()))

    @property
    def is_discrete(self) -> bool:
        return isinstance(self.noise, NoiseLevels)

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        return self._sigma(x, noise) if self.is_discrete else self._time(x, noise)

    def sigma_score(self) -> callable:
        return self._sigma

    def time_score(self) -> callable:
        if self._time is None:
            raise ValueError("the oracle was built on discrete levels; use sde=ve, vp or subvp")
        return self._time
