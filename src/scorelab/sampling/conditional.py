"""Controllable generation with an unconditional score (Song et al. 2021, Section 5, App. I).

Imputation (inpainting): :func:`pc_impute` is the predictor–corrector sampler in which, after
every corrector and predictor step, the known coordinates are overwritten by a draw of the
forward marginal p_0t(x(t) | x(0) = known) = N(alpha(t) known, std(t)² I) at the time the state
is at. The unknown coordinates then follow the reverse SDE driven by the joint score evaluated
next to a noisy copy of the observation. This is the paper's approximation of the conditional
score ∇ log p_t(x_unknown(t) | known), not that score itself: it is accurate when the unknown
coordinates settle at noise levels where the noisy copy still carries the observation's
information (see ``docs/controllable.md`` for where it is biased).

Colorization: :func:`pc_colorize` is the same imputation in a decoupled colour space, an
orthogonal change of the channel basis whose first axis is the grey level (the channel mean,
scaled to unit length); the grey axis is known, the two colour axes are sampled. The noise of
every process here is isotropic, so the rotated forward process is the same process and the score
rotates with the state.

Class conditioning: :func:`classifier_guided_score` adds scale · ∇ₓ log p_t(y | x) of a
noise-conditional classifier to a score; with scale 1 and the exact classifier it is the score of
p_t(x | y).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from scorelab.sampling.base import SampleResult, ScoreFn, check_int, check_state, randn_like
from scorelab.sampling.pc import pc_sampler
from scorelab.sde import SDE, as_sde
from scorelab.utils import append_dims

#: ``fn(x, cond) -> (B, K)`` log-probabilities of K classes at the noise argument ``cond`` (B,).
ClassifierFn = Callable[[Tensor, Tensor], Tensor]


def check_mask(mask: Tensor, x: Tensor) -> Tensor:
    """``mask`` of one example's shape ``x.shape[1:]``, 1/True where a coordinate is known;
    returned as a bool tensor (1, ...) on ``x``'s device."""
    m = torch.as_tensor(mask)
    if tuple(m.shape) != tuple(x.shape[1:]):
        raise ValueError(
            f"mask has shape {tuple(m.shape)}, but one example has shape {tuple(x.shape[1:])}; "
            "give a mask of that shape (1 = known, 0 = to sample)"
        )
    if m.dtype != torch.bool:
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError(
                "mask values must be 0 or 1 (or bool), got values in "
                f"[{float(m.min()):g}, {float(m.max()):g}]; threshold the mask first"
            )
        m = m != 0
    return m.to(x.device)[None]


def check_known(known: Tensor, x: Tensor) -> Tensor:
    """The observed values: one example ``x.shape[1:]`` (shared by the batch) or one per sample
    ``x.shape``; returned shaped like ``x``."""
    k = torch.as_tensor(known, device=x.device, dtype=x.dtype)
    if tuple(k.shape) == tuple(x.shape[1:]):
        k = k[None]
    elif tuple(k.shape) != tuple(x.shape):
        raise ValueError(
            f"known has shape {tuple(k.shape)}; it must be one example {tuple(x.shape[1:])} or "
            f"one per sample {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(k).all()):
        raise ValueError("known must be finite (the values of the observed coordinates)")
    return k.expand(x.shape)


def pc_impute(
    score_fn: ScoreFn,
    x: Tensor,
    sde: SDE,
    *,
    known: Tensor,
    mask: Tensor,
    generator: torch.Generator | None = None,
    **kwargs,
) -> SampleResult:
    """Predictor–corrector imputation: sample the coordinates where ``mask`` is 0 given the
    values ``known`` where it is 1, with :func:`scorelab.sampling.pc.pc_sampler` (``kwargs``:
    its keywords). Before the first step and after each corrector step at t_i, the known
    coordinates become alpha(t_i) known + std(t_i) z (fresh z); after the predictor step, which
    moves the state to t_{i+1}, the same at t_{i+1}; after the last step, ``known`` itself.

    Args:
        known: the observed values, one example ``x.shape[1:]`` or ``x.shape``; only the
            entries where ``mask`` is 1 are read.
        mask: one example's shape ``x.shape[1:]``, 1 (True) where the coordinate is known.
    """
    check_state(x)
    sde = as_sde(sde, "pc_impute needs an SDE")
    m = check_mask(mask, x)
    y = check_known(known, x)

    def impute(x: Tensor, x_mean: Tensor, t: Tensor | None) -> tuple[Tensor, Tensor]:
        if t is None:  # after the last step: the known values themselves
            return torch.where(m, y, x), torch.where(m, y, x_mean)
        # a draw of the forward marginal p_0t(x(t) | x(0) = known) on the known coordinates
        mean, std = sde.marginal_prob(y, t)
        noisy = mean + append_dims(std, x.ndim) * randn_like(x, generator)
        return torch.where(m, noisy, x), torch.where(m, mean, x_mean)

    return pc_sampler(score_fn, x, sde, generator=generator, project=impute, **kwargs)


def decoupled_basis(channels: int = 3, dtype=torch.float64, device=None) -> Tensor:
    """(C, C) orthogonal matrix whose first row is the grey axis (1, ..., 1)/√C; the others
    are the Helmert contrasts (row k: k ones, then -k, scaled to unit length), so for C = 3 the
    colour axes are (1, -1, 0)/√2 and (1, 1, -2)/√6."""
    c = check_int("channels", channels)
    if c < 2:
        raise ValueError(f"colorization needs at least 2 channels, got {c}")
    m = torch.zeros(c, c, dtype=dtype, device=device)
    m[0] = 1.0 / math.sqrt(c)
    for k in range(1, c):
        m[k, :k] = 1.0
        m[k, k] = -float(k)
        m[k] /= math.sqrt(k * (k + 1))
    return m


def _rotate(m: Tensor, x: Tensor) -> Tensor:
    """Apply the channel basis ``m`` (C, C) along axis 1 of ``x`` (B, C, ...)."""
    return torch.einsum("ij,bj...->bi...", m.to(x.dtype), x)


def pc_colorize(
    score_fn: ScoreFn,
    x: Tensor,
    sde: SDE,
    *,
    grey: Tensor,
    **kwargs,
) -> SampleResult:
    """Colorization (Song et al. 2021, Appendix I): sample colour images whose channel mean
    is ``grey``, by :func:`pc_impute` (``kwargs``: its keywords) in the decoupled space of
    :func:`decoupled_basis`; x is (B, C, ...). ``grey``, the observed channel mean, is one
    example ``x.shape[2:]`` (or with a channel axis of 1) shared by the batch, or one per sample.
    """
    check_state(x)
    if x.ndim < 2 or x.shape[1] < 2:
        raise ValueError(
            f"colorization needs a colour axis of at least 2 channels at dim 1, got shape "
            f"{tuple(x.shape)}; single-channel data has no colour to sample"
        )
    c, rest = x.shape[1], tuple(x.shape[2:])
    g = torch.as_tensor(grey, device=x.device, dtype=x.dtype)
    if tuple(g.shape) in (rest, (1, *rest)):
        g = g.reshape(1, *rest).expand(x.shape[0], *rest)
    elif tuple(g.shape) in ((x.shape[0], *rest), (x.shape[0], 1, *rest)):
        g = g.reshape(x.shape[0], *rest)
    else:
        raise ValueError(
            f"grey has shape {tuple(g.shape)}; it must be one example {rest} or one per sample "
            f"{(x.shape[0], *rest)} (the channel mean of the observed image)"
        )
    m = decoupled_basis(c, dtype=x.dtype, device=x.device)
    known = torch.zeros_like(x)
    known[:, 0] = g * math.sqrt(c)  # the grey axis of the decoupled space
    mask = torch.zeros(x.shape[1:], dtype=torch.bool, device=x.device)
    mask[0] = True

    def rotated_score(y: Tensor, t: Tensor) -> Tensor:
        return _rotate(m, score_fn(_rotate(m.T, y), t))

    res = pc_impute(rotated_score, _rotate(m, x), sde, known=known, mask=mask, **kwargs)
    return SampleResult(
        x=_rotate(m.T, res.x), x_mean=_rotate(m.T, res.x_mean), nfe=res.nfe, net_calls=res.net_calls
    )


def classifier_guided_score(
    score_fn: ScoreFn, classifier: ClassifierFn, label: int | Tensor, scale: float = 1.0
) -> ScoreFn:
    """``fn(x, cond) = score_fn(x, cond) + scale · ∇ₓ log p(label | x, cond)``.

    Args:
        score_fn: the unconditional score ``fn(x, cond)``.
        classifier: noise-conditional log-probabilities ``fn(x, cond) -> (B, K)``, differentiable
            in ``x`` (log-softmax of logits); same noise argument as ``score_fn``.
        label: the class, an int in [0, K) or (B,) integers.
        scale: the guidance scale (1: the conditional score p_t(x | y) if the classifier is exact;
            0: unconditional).

    The gradient is taken with autograd inside the call, also under ``torch.no_grad``.
    """
    if not callable(score_fn) or not callable(classifier):
        raise ValueError("score_fn and classifier must be callables fn(x, cond)")
    scale = float(scale)
    if not scale >= 0 or scale == float("inf"):
        raise ValueError(f"scale must be a finite number >= 0 (1: p(x | y)), got {scale}")

    def fn(x: Tensor, cond: Tensor) -> Tensor:
        s = score_fn(x, cond)
        if scale == 0:
            return s
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logp = classifier(xg, cond)
            if logp.ndim != 2 or logp.shape[0] != x.shape[0]:
                raise ValueError(
                    f"classifier must return (B, K) log-probabilities, got {tuple(logp.shape)}"
                )
            k = logp.shape[1]
            y = torch.as_tensor(label, device=x.device).long().expand(x.shape[0])
            if bool(((y < 0) | (y >= k)).any()):
                raise ValueError(f"label {label} is outside the classifier's classes [0, {k})")
            picked = logp.gather(1, y[:, None]).sum()
            (grad,) = torch.autograd.grad(picked, xg)
        return s + scale * grad.to(s.dtype)

    return fn


__all__ = [
    "check_known",
    "check_mask",
    "classifier_guided_score",
    "decoupled_basis",
    "pc_colorize",
    "pc_impute",
]
