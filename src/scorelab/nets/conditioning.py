"""What a network's conditioning input ``cond`` (B,) holds: the one convention, owned here.

A parametrisation (:mod:`scorelab.nets.precond`) turns the caller's noise level into ``cond``
and says which *kind* it feeds; a network says which kind its embedding expects (its
``cond_input`` attribute) and undoes that kind's scale itself (:func:`unscale`). The
parametrisation refuses, at construction, a network that expects another kind
(:func:`check_cond_input`): a mismatch would scale the noise level twice (999·t multiplied by
1000 again) or take the log of a log.

========  =========================================  ========================================
kind      ``cond`` holds                              :func:`unscale` gives
========  =========================================  ========================================
sigma     the noise level σ > 0                       ln σ
c_noise   EDM's c_noise = ¼ ln σ                      ln σ
time      the diffusion time t in [0, T]              t
step      999·t, DDPM's 1000-step scale               t
index     the index of a discrete level (long)        (a learned table; no scale)
none      nothing: the network is unconditional       (ignored)
========  =========================================  ========================================

After :func:`unscale` the sinusoidal embeddings multiply by :data:`SINUSOID_SCALE`, so the input
spans about a thousand radians, as DDPM's 1000 steps (t in [0, 1] -> [0, 1000]; ln σ for σ in
[0.002, 80] -> [-1550, 1100]).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

COND_KINDS: dict[str, str] = {
    "sigma": "σ",
    "c_noise": "EDM's c_noise = ln(σ)/4",
    "time": "t in [0, T]",
    "step": "999·t",
    "index": "a discrete level's index",
    "none": "nothing (unconditional)",
}
#: The continuous kinds, and whether each is a log-σ (True) or a time (False) coordinate.
CONTINUOUS: dict[str, bool] = {"sigma": True, "c_noise": True, "time": False, "step": False}
#: DDPM's scale of t: 1000 steps, t_i = i/999.
STEP_SCALE = 999.0
#: Multiplier of the unscaled input before geometric sinusoids (frequencies 1 ... 1e-4).
SINUSOID_SCALE = {True: 250.0, False: 1000.0}


def check_kind(name: str, kind: str, allowed: tuple[str, ...] = tuple(COND_KINDS)) -> str:
    """``kind`` if it is one of ``allowed``; else a one-line ValueError naming the choices."""
    if kind not in allowed:
        raise ValueError(f"{name}={kind!r} is not supported; use one of {', '.join(allowed)}")
    return kind


def cond_input(net: nn.Module) -> str | None:
    """The kind of ``cond`` a network expects (its ``cond_input``), None if it does not say."""
    kind = getattr(net, "cond_input", None)
    return None if kind is None else str(kind)


def check_cond_input(net: nn.Module, fed: str, who: str) -> None:
    """Refuse ``net`` unless it expects the kind ``fed`` by the parametrisation ``who``.

    A network that declares no ``cond_input`` (a user's own module) is taken at its word.
    """
    expected = cond_input(net)
    if expected is None or expected == fed:
        return
    raise ValueError(
        f"{who} feeds net_cond={fed!r} ({COND_KINDS[fed]}) but {type(net).__name__} expects "
        f"cond_input={expected!r} ({COND_KINDS.get(expected, expected)}) and would misread the "
        f"noise level (scaled twice or not at all); set model.parametrization.net_cond="
        f"{expected} or build the network for {fed!r} (model=unet_small / mlp: "
        f"model.net.embedding; NCSN++ / DDPM++ / DDPM: model.net.cond_input)"
    )


def unscale(kind: str, cond: Tensor) -> Tensor:
    """ln σ for the σ kinds, t for the time kinds (see the module table); float32 (B,)."""
    c = cond.float()
    if kind == "sigma":
        return torch.log(c)
    if kind == "c_noise":
        return 4.0 * c
    if kind == "step":
        return c / STEP_SCALE
    if kind == "time":
        return c
    raise ValueError(f"cond kind {kind!r} has no continuous value; use one of {list(CONTINUOUS)}")


def feed(kind: str, noise: Tensor, sigma: Tensor, process=None) -> Tensor:
    """``cond`` of ``kind`` for a caller's noise argument ``noise`` (B,) (t for an SDE) at the
    VE-equivalent level σ (B,); "index" looks the level up in the discrete ``process``."""
    if kind == "sigma":
        return sigma
    if kind == "c_noise":
        return 0.25 * torch.log(sigma)
    if kind == "time":
        return noise
    if kind == "step":
        return STEP_SCALE * noise
    if kind == "index":
        return process.index_of(noise)
    return torch.zeros_like(noise)
