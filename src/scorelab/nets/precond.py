"""Parametrisations: turn a raw network ``net(x, cond)`` into a score function.

A raw network never knows about σ scaling, the VP ε convention or EDM's preconditioning; these
small classes do, one per formulation, each in one place:

- :class:`ScoreModel`: the score-SDE / NCSN family. Its ``output`` says how the network output
  becomes the score: ``"score"`` (as is), ``"scaled"`` (score = out / std: NCSNv2's s(x)/σ and
  NCSN++'s scale_by_sigma) or ``"eps"`` (score = −out/std, DDPM's ε); std is the marginal std of
  the SDE at t, or σ for discrete levels.
- :class:`EDMPrecond`: EDM's preconditioned denoiser D(x, σ) = c_skip x + c_out F(c_in x,
  c_noise) (Karras et al. 2022), turned into the score (D − x)/σ².

Both speak the caller's *noise argument* of their :class:`~scorelab.sde.NoiseProcess`: σ for
discrete :class:`~scorelab.sde.NoiseLevels` (NCSN, NCSNv2), time t for an SDE. What they feed
the network as ``cond`` is their ``net_cond``, a kind of :mod:`scorelab.nets.conditioning`
(σ, EDM's c_noise, t, 999·t, the level index or nothing); a network that expects another kind
(its ``cond_input``) is refused at construction, so the noise level is never scaled twice.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from scorelab.nets.conditioning import check_cond_input, check_kind, feed
from scorelab.sde import SDE, NoiseProcess, as_sde
from scorelab.utils import append_dims

_OUTPUTS = ("score", "scaled", "eps")


class ScoreViews(nn.Module):
    """The samplers' views of ``forward(x, noise)``, a score in the noise argument of
    ``self.noise``."""

    noise: NoiseProcess

    def sigma_score(self) -> Callable[[Tensor, Tensor], Tensor]:
        """σ-conditioned score ``fn(x, sigma)`` (VE-equivalent), for Langevin-type samplers."""
        return self.noise.to_sigma_score(self)

    def time_score(self) -> Callable[[Tensor, Tensor], Tensor]:
        """Time-conditioned score ``fn(x, t)``, for SDE samplers; needs an SDE."""
        as_sde(self.noise, "SDE samplers (pc, em, reverse_diffusion, ancestral, ode) need an SDE")
        return self


class _Parametrization(ScoreViews):
    """What every parametrisation shares: the noise, the cond it feeds, the samplers' views."""

    net: nn.Module
    net_cond: str

    def _cond_from(self, noise: Tensor, sigma: Tensor) -> Tensor:
        """``cond`` of kind ``net_cond`` for the caller's ``noise`` (B,) at VE level σ (B,)."""
        return feed(self.net_cond, noise, sigma, self.noise)


class ScoreModel(_Parametrization):
    """Score s_θ(x, noise) from a raw network.

    Args:
        net: raw network, ``net(x, cond) -> Tensor`` shaped like x.
        noise: the noise process: discrete levels (callers pass σ) or an SDE (callers pass t).
        net_cond: what the network is fed (:mod:`scorelab.nets.conditioning`): ``"sigma"`` (σ),
            ``"c_noise"`` (¼ ln σ), ``"time"`` (t), ``"step"`` (999·t, DDPM's scale),
            ``"index"`` (the nearest discrete level) or ``"none"``; it must be the network's
            ``cond_input``.
        output: how the network output maps to the score (see the module docstring).
    """

    def __init__(
        self,
        net: nn.Module,
        noise: NoiseProcess,
        *,
        net_cond: str = "sigma",
        output: str = "scaled",
    ) -> None:
        super().__init__()
        check_kind("net_cond", net_cond)
        check_kind("output", output, _OUTPUTS)
        noise.check_net_cond(net_cond)
        check_cond_input(net, net_cond, "ScoreModel")
        self.net, self.noise, self.net_cond, self.output = net, noise, net_cond, output

    def _sigma_std(self, noise: Tensor) -> tuple[Tensor, Tensor]:
        """(VE-equivalent σ, marginal std) for the caller's noise argument."""
        _, std = self.noise.marginal_coeffs(noise)
        return self.noise.sigma(noise), std

    def net_input(self, noise: Tensor) -> Tensor:
        """The ``cond`` (B,) the network is fed for ``noise`` (B,): σ if discrete, else t."""
        return self._cond_from(noise, self._sigma_std(noise)[0])

    def forward(self, x: Tensor, noise: Tensor, *, label: Tensor | None = None) -> Tensor:
        """Score at ``x`` (B, ...) for ``noise`` (B,): σ if discrete, else t. ``label``
        (class-conditional networks only): (B,) class indices, the null index, or None (∅)."""
        sigma, std = self._sigma_std(noise)
        cond = self._cond_from(noise, sigma)
        out = self.net(x, cond) if label is None else self.net(x, cond, label=label)
        if self.output == "score":
            return out
        scale = append_dims(std.to(out.dtype), out.ndim)
        return out / scale if self.output == "scaled" else -out / scale


class EDMPrecond(_Parametrization):
    """EDM's preconditioned denoiser as a score model (Karras et al. 2022, Table 1).

    D(y, σ) = c_skip(σ) y + c_out(σ) F(c_in(σ) y, c_noise(σ)) with

    c_skip = σ_d² / (σ² + σ_d²),  c_out = σ σ_d / √(σ² + σ_d²),  c_in = 1 / √(σ² + σ_d²),
    c_noise = ¼ ln σ,

    so the network F sees unit-variance inputs and learns a unit-variance target at every σ.
    The score is Tweedie's (D − y)/σ². On an SDE other than VE, y = x/α(t) and σ = std/α are
    the VE-equivalent state and level, and the time score is s_σ(y)/α.

    Args:
        net: raw network ``F(x, cond)``.
        noise: the SDE (EDM's process is the VE x + σ z with σ in [0.002, 80]: ``sde=edm``);
            callers pass t, the samplers' σ view skips t altogether.
        sigma_data: σ_d, the standard deviation of the data (0.5 for images in [-1, 1]).
        net_cond: what F is fed: ``"c_noise"`` (EDM), ``"sigma"`` for networks that take the
            log themselves (NCSN++'s Fourier embedding) or ``"none"`` (unconditional F: c_skip,
            c_out and c_in still depend on σ); it must be the network's ``cond_input``.
    """

    def __init__(
        self,
        net: nn.Module,
        noise: SDE,
        *,
        sigma_data: float = 0.5,
        net_cond: str = "c_noise",
    ) -> None:
        super().__init__()
        check_kind("net_cond", net_cond, ("c_noise", "sigma", "none"))
        as_sde(
            noise,
            "EDMPrecond needs an SDE",
            "discrete levels go with model.parametrization of the NCSN kind (ScoreModel)",
        )
        if not float(sigma_data) > 0:
            raise ValueError(
                f"sigma_data={sigma_data} must be > 0 (the data's standard deviation; 0.5 for "
                "images in [-1, 1])"
            )
        check_cond_input(net, net_cond, "EDMPrecond")
        self.net, self.noise, self.net_cond = net, noise, net_cond
        self.sigma_data = float(sigma_data)

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in, c_noise), each (B,), at σ (B,)."""
        sd2 = self.sigma_data**2
        r = torch.rsqrt(sigma**2 + sd2)
        return sd2 * r**2, sigma * self.sigma_data * r, r, 0.25 * torch.log(sigma)

    def denoise(self, y: Tensor, sigma: Tensor, *, label: Tensor | None = None) -> Tensor:
        """D(y, σ): y (B, ...) a VE-equivalent state at level σ (B,); ``label`` as in
        :meth:`ScoreModel.forward`."""
        c_skip, c_out, c_in, _ = (append_dims(c, y.ndim) for c in self.coefficients(sigma))
        cond = self._cond_from(sigma, sigma)
        h = c_in * y
        out = (self.net(h, cond) if label is None else self.net(h, cond, label=label)).to(y.dtype)
        return c_skip * y + c_out * out

    def _sigma_score(self, y: Tensor, sigma: Tensor, *, label: Tensor | None = None) -> Tensor:
        """∇ log p_σ(y) = (D(y, σ) − y)/σ²."""
        return (self.denoise(y, sigma, label=label) - y) / append_dims(sigma**2, y.ndim)

    def net_input(self, noise: Tensor) -> Tensor:
        """The ``cond`` (B,) the network is fed at time ``noise`` = t (B,)."""
        return self._cond_from(noise, self.noise.sigma(noise))

    def forward(self, x: Tensor, t: Tensor, *, label: Tensor | None = None) -> Tensor:
        """Time score ∇ log p_t(x) at ``x`` (B, ...) and t (B,)."""
        if label is None:
            return self.noise.from_sigma_score(self._sigma_score)(x, t)
        return self.noise.from_sigma_score(partial(self._sigma_score, label=label))(x, t)

    def sigma_score(self) -> Callable[[Tensor, Tensor], Tensor]:
        """σ-conditioned score ``fn(y, sigma)``, straight from D (no detour through t)."""
        return self._sigma_score


class OracleScoreModel(nn.Module):
    """The exact score of a Gaussian mixture, with the same interface as :class:`ScoreModel`."""

    def __init__(self, mixture, noise: NoiseProcess) -> None:
        super().__init__()
        from scorelab.toy import oracle_sigma_score, oracle_time_score

        self.mixture, self.noise = mixture, noise
        self._sigma = oracle_sigma_score(mixture)
        self._score = oracle_time_score(mixture, noise)  # in the process's noise argument
        # A parameter-free module still needs a device anchor.
        self.register_buffer("_anchor", torch.zeros(()))

    @property
    def data_moments(self):
        """The mixture's exact per-coordinate mean and variance (the deterministic samplers
        start from them)."""
        from scorelab.sampling.start import DataMoments

        mean, var = self.mixture.moments()
        return DataMoments.of(mean.float(), var.float(), None)

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        return self._score(x, noise)

    def sigma_score(self) -> callable:
        return self._sigma

    def time_score(self) -> callable:
        as_sde(self.noise, "the oracle's time score needs an SDE")
        return self._score
