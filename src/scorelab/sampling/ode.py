"""Sampling by the probability-flow ODE dx/dt = f(x, t) - ½ g(t)² ∇log p_t(x) (Song et al. 2021).

Integrated from t = T down to t = eps, either adaptively with :func:`torchdiffeq.odeint` (tensors
stay on their device) or with fixed-step Euler / Heun written out here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scorelab.sampling.base import (
    Callback,
    SampleResult,
    ScoreFn,
    check_eps,
    check_int,
    check_positive,
    counted,
)
from scorelab.sampling.pc import ReverseDiffusionPredictor
from scorelab.sde import SDE, as_sde

FIXED_METHODS = ("euler", "heun")
ADAPTIVE_METHODS = ("dopri5", "rk45", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")


def ode_sampler(
    score_fn: ScoreFn,
    x: Tensor,
    sde: SDE,
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float | None = None,
    n_steps: int | None = None,
    denoise: bool = True,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> SampleResult:
    """Solve the probability-flow ODE from T to eps, from a prior draw; ``x == x_mean``.

    Args:
        method: adaptive ``"dopri5"`` (= ``"rk45"``, Dormand–Prince as scipy's RK45),
            ``"dopri8"``, ``"bosh3"``, ``"adaptive_heun"`` through torchdiffeq; or fixed-step
            ``"euler"`` (1st order, n_steps NFE) or ``"heun"`` (2nd order, 2·n_steps NFE).
        rtol, atol: tolerances of the adaptive solvers.
        eps: final time, in (0, T); default 1e-5 for VE and 1e-3 for VP / sub-VP.
        n_steps: number of steps of the fixed-step methods; default ``sde.N``. Not used by the
            adaptive methods.
        denoise: finish with one reverse-diffusion step at t = eps, keeping its mean (one more
            evaluation), as the official code does.

    The adaptive methods call ``callback`` once, after the solve.
    """
    del generator
    score = counted(score_fn, x)
    sde = as_sde(sde, "ode_sampler needs an SDE")
    if method not in FIXED_METHODS + ADAPTIVE_METHODS:
        raise ValueError(
            f"method must be one of {FIXED_METHODS + ADAPTIVE_METHODS}, got {method!r}"
        )
    eps = check_eps(eps, sde)
    rsde = sde.reverse(score, probability_flow=True)
    B = x.shape[0]

    def drift(x: Tensor, t: Tensor) -> Tensor:
        return rsde.sde(x, t.expand(B))[0]

    if method in FIXED_METHODS:
        n = sde.N if n_steps is None else check_int("n_steps", n_steps)
        ts = torch.linspace(sde.T, eps, n + 1, device=x.device, dtype=x.dtype)
        for i in range(n):
            t, t_next = ts[i], ts[i + 1]
            h = t_next - t
            d = drift(x, t)
            x_euler = x + h * d
            if method == "euler":
                x = x_euler
            else:  # Heun: trapezoidal correction with the slope at the Euler point
                x = x + 0.5 * h * (d + drift(x_euler, t_next))
            if callback is not None:
                callback({"i": i, "x": x, "t": t_next.expand(B)})
    else:
        x = solve(lambda t, y: drift(y, t), x, sde.T, eps, method, rtol, atol)
        if callback is not None:
            callback({"i": 0, "x": x, "t": torch.full((B,), eps, device=x.device, dtype=x.dtype)})
    if denoise:
        t_eps = torch.full((B,), eps, device=x.device, dtype=x.dtype)
        _, x = ReverseDiffusionPredictor(sde, score).step(x, t_eps)
    return score.result(x)


def solve(rhs, y0, t0: float, t1: float, method: str, rtol: float, atol: float):
    """``y(t1)`` of dy/dt = rhs(t, y) from ``y(t0) = y0`` (a tensor or a tuple of tensors) with
    torchdiffeq's ``method`` (``"rk45"``: ``"dopri5"``) on the tensors' device; an adaptive solver
    is kept from stepping past ``t1`` (VP's std(t) is NaN for t < 0)."""
    from torchdiffeq import odeint

    check_positive("rtol", rtol)
    check_positive("atol", atol)
    first = y0[0] if isinstance(y0, tuple) else y0
    span = torch.tensor([t0, t1], device=first.device, dtype=first.dtype)
    options = {"step_t": span[-1:]} if method in ADAPTIVE_METHODS else None
    method = "dopri5" if method == "rk45" else method
    out = odeint(rhs, y0, span, rtol=rtol, atol=atol, method=method, options=options)
    return tuple(o[-1] for o in out) if isinstance(y0, tuple) else out[-1]
