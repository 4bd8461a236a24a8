"""Parametrisations: turn a raw network ``net(x, cond)`` into a score function.

A raw network never knows about σ scaling or the VP ε convention; this wrapper does, in one
place. It is configured by three choices:

- the *noise domain* the caller speaks: σ for a discrete :class:`~scorelab.schedules.NoiseLevels`
  (NCSN, NCSNv2), time t for an :class:`~scorelab.sde.SDE`;
- ``net_cond``: what the network is fed: ``"sigma"`` (σ, networks embed log σ themselves),
  ``"time"`` (t·``time_scale``; DDPM++ uses 999), ``"index"`` (the nearest discrete level), or
  ``"none"`` (unconditional, as NCSNv2);
- ``output``: ``"score"`` (the network's output is the score), ``"scaled"`` (score = out / std,
  NCSNv2's s(x)/σ and NCSN++'s scale_by_sigma) or ``"eps"`` (score = −out/std, DDPM's ε).

Here std is the marginal std of the SDE at t, or σ for discrete levels.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from scorelab.schedules import NoiseLevels
from scorelab.sde import SDE, sigma_score_from_time_score
from scorelab.utils import append_dims

NetCond = Literal["sigma", "time", "index", "none"]
Output = Literal["score", "scaled", "eps"]
_NET_CONDS = ("sigma", "time", "index", "none")
_OUTPUTS = ("score", "scaled", "eps")


class ScoreModel(nn.Module):
    """Score s_θ(x, noise) from a raw network.

    Args:
        net: raw network, ``net(x, cond) -> Tensor`` shaped like x.
        noise: a :class:`NoiseLevels` (callers pass σ) or an :class:`SDE` (callers pass t).
        net_cond: what the network is conditioned on (see module docstring).
        output: how the network output maps to the score.
        time_scale: multiplier for t when ``net_cond="time"``.
    """

    def __init__(
        self,
        net: nn.Module,
        noise: NoiseLevels | SDE,
        *,
        net_cond: NetCond = "sigma",
        output: Output = "scaled",
        time_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if net_cond not in _NET_CONDS:
            raise ValueError(f"net_cond must be one of {_NET_CONDS}, got {net_cond!r}")
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
        if net_cond == "index" and not isinstance(noise, NoiseLevels):
            raise ValueError(
                "net_cond='index' needs discrete noise levels (sde=ncsn); for an SDE use "
                "net_cond='sigma' or 'time'"
            )
        if net_cond == "time" and isinstance(noise, NoiseLevels):
            raise ValueError("net_cond='time' needs an SDE; with sde=ncsn use 'sigma' or 'index'")
        self.net = net
        self.noise = noise
        self.net_cond = net_cond
        self.output = output
        self.time_scale = float(time_scale)

    @property
    def is_discrete(self) -> bool:
        return isinstance(self.noise, NoiseLevels)

    def _sigma_std(self, noise: Tensor) -> tuple[Tensor, Tensor]:
        """(σ fed to σ-conditioned nets, marginal std) for the caller's noise argument."""
        if self.is_discrete:
            return noise, noise
        sigma = self.noise.sigma(noise)
        _, std = self.noise.marginal_coeffs(noise)
        return sigma, std

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        """Score at ``x`` (B, ...) for ``noise`` (B,): σ if discrete, else t."""
        sigma, std = self._sigma_std(noise)
        if self.net_cond == "sigma":
            cond = sigma
        elif self.net_cond == "time":
            cond = noise * self.time_scale
        elif self.net_cond == "index":
            cond = self.noise.index_of(noise)
        else:
            cond = torch.zeros_like(noise)
        out = self.net(x, cond)
        if self.output == "score":
            return out
        scale = append_dims(std.to(out.dtype), out.ndim)
        return out / scale if self.output == "scaled" else -out / scale

    # ----- views used by the samplers -----
    def sigma_score(self) -> callable:
        """σ-conditioned score ``fn(x, sigma)`` (VE-equivalent), for Langevin-type samplers."""
        if self.is_discrete:
            return self
        return sigma_score_from_time_score(self.noise, self)

    def time_score(self) -> callable:
        """Time-conditioned score ``fn(x, t)``, for SDE samplers; needs an SDE."""
        if self.is_discrete:
            raise ValueError(
                "this model was trained on discrete noise levels (sde=ncsn); SDE samplers "
                "(pc, em, reverse_diffusion, ancestral, ode) need an SDE model: use sampler=ald, "
                "langevin or heun"
            )
        return self


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

    @property
    def data_moments(self):
        """The mixture's exact per-coordinate mean and variance (the deterministic samplers
        start from them)."""
        from scorelab.sampling.start import DataMoments

        mean, var = self.mixture.moments()
        return DataMoments.of(mean.float(), var.float(), None)

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        return self._sigma(x, noise) if self.is_discrete else self._time(x, noise)

    def sigma_score(self) -> callable:
        return self._sigma

    def time_score(self) -> callable:
        if self._time is None:
            raise ValueError("the oracle was built on discrete levels; use sde=ve, vp or subvp")
        return self._time
