"""Shared pieces of the samplers: the result type, call counting and argument checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

ScoreFn = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[dict[str, Any]], None]


@dataclass
class SampleResult:
    """What every sampler returns.

    Attributes:
        x: (B, ...) the final state.
        x_mean: (B, ...) the final state without the noise of the last step (the "denoised"
            output of predictor–corrector samplers); equal to ``x`` for deterministic samplers.
        nfe: number of score-function evaluations.
        net_calls: number of calls of the underlying score function (network forward passes);
            equal to ``nfe`` for every sampler here.
    """

    x: Tensor
    x_mean: Tensor
    nfe: int
    net_calls: int


class CountingScore:
    """Wraps a score function ``fn(x, cond) -> Tensor`` and counts its calls."""

    def __init__(self, fn: ScoreFn) -> None:
        if not callable(fn):
            raise ValueError(f"score_fn must be callable fn(x, cond), got {type(fn).__name__}")
        self.fn = fn
        self.calls = 0

    def __call__(self, x: Tensor, cond: Tensor) -> Tensor:
        self.calls += 1
        return self.fn(x, cond)

    def result(self, x: Tensor, x_mean: Tensor | None = None) -> SampleResult:
        """The sampler's :class:`SampleResult` with this count (``x_mean`` defaults to ``x``)."""
        x_mean = x if x_mean is None else x_mean
        return SampleResult(x=x, x_mean=x_mean, nfe=self.calls, net_calls=self.calls)


def counted(score_fn: ScoreFn, x: Tensor) -> CountingScore:
    """The opening of every sampler: ``x`` checked, ``score_fn`` wrapped in a call counter."""
    check_state(x)
    return CountingScore(score_fn)


def check_state(x: Tensor) -> None:
    """``x`` must be a floating tensor (B, ...) with at least one sample."""
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor of shape (B, ...), got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (B, ...) with B >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")


def check_int(name: str, value: int, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_positive(name: str, value: float, hint: str = "") -> float:
    """A finite float > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number > 0, got {value!r}") from err
    if not (v > 0 and v < float("inf")):
        raise ValueError(f"{name} must be a finite number > 0, got {value}{hint}")
    return v


def check_eps(eps: float | None, sde) -> float:
    """``eps`` or the SDE's default end time (1e-5 for VE, 1e-3 for VP and sub-VP)."""
    eps = sde.sampling_eps if eps is None else eps
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must be in (0, sde.T = {sde.T}), got {eps}")
    return float(eps)


def check_sigmas(sigmas: Tensor | list[float], *, allow_zero_last: bool) -> Tensor:
    """A 1-D, strictly descending σ schedule, all > 0 (the last may be 0 if allowed)."""
    s = torch.as_tensor(sigmas)
    if s.ndim != 1 or s.numel() < 1:
        raise ValueError(f"sigmas must be a non-empty 1-D tensor, got shape {tuple(s.shape)}")
    if not s.is_floating_point():
        s = s.double()
    body = s[:-1] if allow_zero_last else s
    if (body <= 0).any() or (s < 0).any():
        raise ValueError(
            f"sigmas must be > 0{' (only the last may be 0)' if allow_zero_last else ''}, "
            f"got {s.tolist()}"
        )
    if s.numel() > 1 and not (s[1:] < s[:-1]).all():
        raise ValueError(
            f"sigmas must be strictly descending (largest first), got {s.tolist()}; "
            "flip the schedule"
        )
    return s


def sigmas_to_zero(sigmas: Tensor | list[float]) -> list[float]:
    """A checked descending σ schedule with a trailing 0 appended if absent, as host floats (no
    device sync inside the sampling loop)."""
    s = check_sigmas(sigmas, allow_zero_last=True)
    if s[-1] != 0:
        s = torch.cat([s, s.new_zeros(1)])
    if s.numel() < 2:
        raise ValueError(f"sigmas must hold at least one level > 0, got {s.tolist()}")
    return s.tolist()


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like ``x`` on its device, from ``generator``."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def full_batch(value: float | Tensor, x: Tensor) -> Tensor:
    """A per-sample scalar of shape (B,) on ``x``'s device and dtype."""
    return torch.as_tensor(value, device=x.device, dtype=x.dtype).expand(x.shape[0])
