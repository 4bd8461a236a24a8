"""Exact log-likelihood through the probability-flow ODE, and bits per dimension.

For dx/dt = v(x, t) = f(x, t) - ½ g(t)² ∇log p_t(x), the instantaneous change of variables gives
d log p_t(x_t)/dt = -∇·v(x_t, t), so

    log p_eps(x) = log p_T(z) + ∫_eps^T ∇·v(x_t, t) dt,   z = x_T,

with log p_T replaced by the prior's log-density. The state [x, ∫∇·v] is integrated from eps to T
with :func:`torchdiffeq.odeint`, on the tensors' device.

The divergence comes from the *same* forward pass as the drift: v is computed with gradients
enabled on x, and the Hutchinson estimate εᵀ (∂v/∂x) ε is one vector–Jacobian product on that
graph. One score evaluation per ODE evaluation (``net_calls == nfe``); the official code runs the
network a second time for the divergence. The probe ε is drawn once per solve and held fixed over
time (as FFJORD and the official code do), which keeps the ODE smooth for the adaptive solver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scorelab.sampling.base import ScoreFn, check_eps, check_int, counted
from scorelab.sampling.ode import solve
from scorelab.sde import SDE, as_sde
from scorelab.utils import flat_sum

DIVERGENCES = ("hutchinson_rademacher", "hutchinson_gaussian", "exact")
EXACT_MAX_DIM = 64


@dataclass
class LikelihoodResult:
    """Result of :func:`ode_likelihood`.

    Attributes:
        logp: (B,) log p_eps(x) in nats, = prior_logp + delta_logp.
        prior_logp: (B,) log p_T(z) under the prior.
        delta_logp: (B,) ∫_eps^T ∇·v dt.
        z: (B, ...) the latent x_T.
        nfe: evaluations of the ODE right-hand side.
        net_calls: calls of the score function (equal to nfe).
    """

    logp: Tensor
    prior_logp: Tensor
    delta_logp: Tensor
    z: Tensor
    nfe: int
    net_calls: int


def _probe(x: Tensor, kind: str, generator: torch.Generator | None) -> Tensor:
    if kind == "hutchinson_gaussian":
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    bits = torch.randint(0, 2, x.shape, generator=generator, device=x.device)
    return bits.to(x.dtype) * 2 - 1


def ode_likelihood(
    score_fn: ScoreFn,
    x: Tensor,
    sde: SDE,
    *,
    divergence: str = "hutchinson_rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    method: str = "dopri5",
    generator: torch.Generator | None = None,
) -> LikelihoodResult:
    """log p_eps(x) under the probability-flow ODE of ``sde`` driven by ``score_fn``.

    Args:
        score_fn: time-conditioned score ``fn(x, t)``, differentiable in x.
        x: (B, ...) data (already dequantized and scaled as the model was trained).
        sde: the forward SDE; its prior gives log p_T.
        divergence: ``"hutchinson_rademacher"`` / ``"hutchinson_gaussian"`` (unbiased, one
            probe per solve) or ``"exact"`` (D backward passes; D <= 64).
        rtol, atol: tolerances of the adaptive solver.
        eps: start time in (0, T) (1e-5 in the official code).
        method: a torchdiffeq method (``"dopri5"`` is scipy's RK45).
        generator: source of the Hutchinson probe (on ``x``'s device).

    Returns:
        :class:`LikelihoodResult`.
    """
    score = counted(score_fn, x)
    sde = as_sde(sde, "ode_likelihood needs an SDE")
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    D = x[0].numel()
    if divergence == "exact" and D > EXACT_MAX_DIM:
        raise ValueError(
            f"divergence='exact' needs D backward passes; D = {D} > {EXACT_MAX_DIM}; "
            "use divergence='hutchinson_rademacher'"
        )
    eps = check_eps(eps, sde)
    rsde = sde.reverse(score, probability_flow=True)
    B = x.shape[0]
    probe = None if divergence == "exact" else _probe(x, divergence, generator)
    nfe = 0

    def rhs(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        nonlocal nfe
        nfe += 1
        y = state[0]
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            drift = rsde.sde(y, t.expand(B))[0]  # the single forward pass
            if probe is not None:
                (vjp,) = torch.autograd.grad(drift, y, probe)
                div = flat_sum(vjp * probe)
            else:
                flat = drift.reshape(B, -1)
                div = torch.zeros(B, device=y.device, dtype=y.dtype)
                for j in range(D):
                    (g,) = torch.autograd.grad(flat[:, j].sum(), y, retain_graph=j < D - 1)
                    div = div + g.reshape(B, -1)[:, j]
        return drift.detach(), div.detach()

    state0 = (x.detach(), torch.zeros(B, device=x.device, dtype=x.dtype))
    z, delta_logp = solve(rhs, state0, eps, sde.T, method, rtol, atol)
    prior_logp = sde.prior_logp(z)
    return LikelihoodResult(
        logp=prior_logp + delta_logp,
        prior_logp=prior_logp,
        delta_logp=delta_logp,
        z=z,
        nfe=nfe,
        net_calls=score.calls,
    )


DATA_RANGES = {"minus_one_one": 2.0, "zero_one": 1.0}


def _check_range(data_range: str) -> None:
    if data_range not in DATA_RANGES:
        raise ValueError(f"data_range must be one of {tuple(DATA_RANGES)}, got {data_range!r}")


def bits_per_dim(
    logp: Tensor, dim: int, *, data_range: str = "minus_one_one", n_bins: int = 256
) -> Tensor:
    """Bits per dimension of discrete data from a continuous log-density.

    Pixels k ∈ {0, …, n_bins-1} are dequantized to y = (k + u)/n_bins ∈ [0, 1), u ~ U[0,1)^D,
    and possibly mapped to x = a·y + b. A density on x gives the discrete model
    P(k) = ∫ p(x) dx over the cell of k, and Jensen's inequality gives
    log P(k) >= E_u[log p_x(x)] + D log(a / n_bins) (the cell has volume (a/n_bins)^D in x).
    Hence

        bpd = -log p_x(x)/(D ln 2) + log2(n_bins) - log2(a),

    an offset of log2(256) - 1 = 7 for data in [-1, 1] (a = 2) and 8 for [0, 1] (a = 1).

    Args:
        logp: (B,) log-densities in nats of the dequantized, scaled data.
        dim: D, the number of dimensions per sample (e.g. 3·32·32).
        data_range: ``"minus_one_one"`` or ``"zero_one"``, the scale the model saw.
        n_bins: number of quantisation levels (256 for 8-bit data).

    Returns:
        (B,) bits per dimension.
    """
    _check_range(data_range)
    dim, n_bins = check_int("dim", dim), check_int("n_bins", n_bins, 2)
    offset = math.log2(n_bins) - math.log2(DATA_RANGES[data_range])
    return -logp / (dim * math.log(2)) + offset


def dequantize(
    x: Tensor,
    generator: torch.Generator | None = None,
    *,
    n_bins: int = 256,
    data_range: str = "zero_one",
) -> Tensor:
    """Uniform dequantization of quantised data: y = (k + u)/n_bins with u ~ U[0, 1).

    Args:
        x: (B, ...) integer levels k (uint8 / any integer dtype) in [0, n_bins - 1], or floats
            k/(n_bins - 1) in [0, 1] (as torchvision's ``ToTensor`` gives).
        generator: source of u (on ``x``'s device).
        n_bins: number of levels.
        data_range: ``"zero_one"`` returns y ∈ [0, 1); ``"minus_one_one"`` returns 2y - 1.

    Returns:
        (B, ...) float32 (or x's float dtype) dequantized data.
    """
    _check_range(data_range)
    if x.is_floating_point():
        k = torch.round(x * (n_bins - 1))
        dtype = x.dtype
    else:
        k, dtype = x.to(torch.float32), torch.float32
    if (k < 0).any() or (k > n_bins - 1).any():
        raise ValueError(
            f"x must hold levels in [0, {n_bins - 1}] (or floats in [0, 1]), "
            f"got values in [{k.min().item()}, {k.max().item()}]"
        )
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=dtype)
    y = (k.to(dtype) + u) / n_bins
    return 2 * y - 1 if data_range == "minus_one_one" else y
