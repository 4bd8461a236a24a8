"""Langevin dynamics over a σ-conditioned score: plain, annealed (NCSN) and Tweedie denoising.

Step-size conventions. The NCSN paper (Song & Ermon 2019, Algorithm 1) writes one step as

    x ← x + (α_i / 2) s(x, σ_i) + √α_i z,   α_i = ε σ_i² / σ_L²,

while the official code's ``step_lr`` writes x ← x + step·s + √(2·step) z with
step = step_lr · (σ_i/σ_L)². Both are the same update with step = α_i / 2, so step_lr = ε / 2.
:func:`annealed_langevin` accepts either ``eps`` (the paper) or ``step_lr`` (the code).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scorelab.sampling.base import (
    Callback,
    SampleResult,
    ScoreFn,
    check_int,
    check_positive,
    check_sigmas,
    check_state,
    counted,
    full_batch,
    randn_like,
)
from scorelab.utils import append_dims

# The official NCSN runner steps x + step·s + √(2 step) z with step = step_lr = 2e-5 at
# σ_L = 0.01: in the paper's notation ε = 2·step_lr = 4e-5 = 0.4 σ_L². The same ratio suits any
# σ_L. (The paper's text reads ε = 2e-5, i.e. 0.2 σ_L²: half the step the published samples used.)
DEFAULT_EPS_OVER_SIGMA_MIN_SQ = 0.4


def langevin(
    score_fn: ScoreFn,
    x: Tensor,
    sigma: float = 0.0,
    *,
    n_steps: int,
    step_size: float,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> SampleResult:
    """Plain (unadjusted) Langevin dynamics at one fixed noise level.

    x ← x + (ε/2) s(x, σ) + √ε z with ε = ``step_size`` > 0, repeated ``n_steps`` >= 1 times
    (``nfe == n_steps``) at ``sigma`` >= 0 (0: the data score).
    """
    score = counted(score_fn, x)
    n_steps = check_int("n_steps", n_steps)
    eps = check_positive("step_size", step_size)
    if not float(sigma) >= 0:
        raise ValueError(f"sigma must be >= 0 (0 = the data score), got {sigma}")
    sig = full_batch(float(sigma), x)
    x_mean = x
    for i in range(n_steps):
        x_mean = x + (eps / 2) * score(x, sig)
        x = x_mean + eps**0.5 * randn_like(x, generator)
        if callback is not None:
            callback({"i": i, "x": x, "x_mean": x_mean, "sigma": sig})
    return score.result(x, x_mean)


def tweedie_denoise(score_fn: ScoreFn, x: Tensor, sigma: float | Tensor) -> Tensor:
    """Tweedie's formula E[x_0 | x] = x + σ² s(x, σ) (NCSNv2's final denoising step).

    Args:
        score_fn: σ-conditioned score ``fn(x, sigma)``.
        x: (B, ...) samples at noise level σ.
        sigma: scalar or (B,) noise level > 0.

    Returns:
        (B, ...) the posterior mean.
    """
    check_state(x)
    sig = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
    if sig.ndim == 0:
        sig = sig.expand(x.shape[0])
    if sig.shape != (x.shape[0],):
        raise ValueError(
            f"sigma must be a scalar or have shape ({x.shape[0]},), got {tuple(sig.shape)}"
        )
    return x + append_dims(sig**2, x.ndim) * score_fn(x, sig)


def annealed_langevin(
    score_fn: ScoreFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    n_steps_each: int,
    eps: float | None = None,
    step_lr: float | None = None,
    final_denoise: bool = False,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> SampleResult:
    """Annealed Langevin dynamics (NCSN, Algorithm 1), optionally with NCSNv2's final denoising.

    For each σ_i of the descending schedule, T = ``n_steps_each`` steps of
    x ← x + (α_i/2) s(x, σ_i) + √α_i z with α_i = ε σ_i²/σ_L².

    Give at most one of ``eps`` (the paper's ε) or ``step_lr`` (the official code's knob,
    which equals ε/2: the code's step is x + step·s + √(2 step) z); with neither,
    ε = 0.4 σ_L² (:data:`DEFAULT_EPS_OVER_SIGMA_MIN_SQ`). NCSN starts from uniform noise.

    Args:
        sigmas: (L,) strictly descending noise levels σ_1 > … > σ_L > 0.
        n_steps_each: T >= 1 steps per level; ``nfe == L * T (+1 with final_denoise)``.
        final_denoise: end with x + σ_L² s(x, σ_L) (NCSNv2); costs one more evaluation.
    """
    score = counted(score_fn, x)
    n_steps_each = check_int("n_steps_each", n_steps_each)
    if eps is not None and step_lr is not None:
        raise ValueError(
            f"eps={eps} and step_lr={step_lr} both set the Langevin step (step_lr = ε/2); give "
            "one and set the other to null"
        )
    sigma_list = check_sigmas(sigmas, allow_zero_last=False).tolist()  # one host copy
    sigma_last = sigma_list[-1]
    if eps is None and step_lr is None:
        eps = DEFAULT_EPS_OVER_SIGMA_MIN_SQ * sigma_last**2
    eps = check_positive("eps", eps) if eps is not None else 2 * check_positive("step_lr", step_lr)
    x_mean = x
    i = 0
    for sigma in sigma_list:
        alpha = eps * (sigma / sigma_last) ** 2
        sig = full_batch(sigma, x)
        for _ in range(n_steps_each):
            x_mean = x + (alpha / 2) * score(x, sig)
            x = x_mean + alpha**0.5 * randn_like(x, generator)
            if callback is not None:
                callback({"i": i, "x": x, "x_mean": x_mean, "sigma": sig})
            i += 1
    if final_denoise:
        x = x_mean = tweedie_denoise(score, x, sigma_last)
    return score.result(x, x_mean)
