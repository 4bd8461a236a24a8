"""Where a sampler starts: the data's first two moments, and the Gaussian they give at the top
noise level.

A deterministic sampler (the probability-flow ODE, EDM-Heun) maps its start distribution to data
through the flow, so it is exact only if it starts from the true marginal p_T. The marginal of
x_T = alpha x_0 + std z has mean alpha E[x_0] and per-coordinate variance alpha² Var[x_0] + std².
The usual N(0, prior_std² I) start ignores the data's mean: on VE at σ_max ≈ 20 that offset moves
several hundredths of the mass between modes, and only shrinks like 1/σ_max. Starting from the
Gaussian with the marginal's mean and per-coordinate variance removes it.

:class:`DataMoments` holds the per-coordinate mean and variance of the training data as buffers,
so a checkpoint carries them and sampling it never rescans the data.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scorelab.utils import check_positive


class DataMoments(nn.Module):
    """Per-coordinate mean and variance of the data, each of shape ``data_shape``.

    ``count`` is how many examples they were computed from (0 while unknown); ``exact`` marks
    moments known in closed form (an analytic mixture).
    """

    def __init__(self, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        shape = tuple(int(s) for s in data_shape)
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("var", torch.zeros(shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("exact", torch.zeros((), dtype=torch.bool))

    @classmethod
    def of(cls, mean: Tensor, var: Tensor, count: float | None) -> DataMoments:
        m = cls(tuple(mean.shape))
        m.set_(mean, var, count)
        return m

    @property
    def known(self) -> bool:
        return bool(self.exact) or bool(self.count > 0)

    def set_(self, mean: Tensor, var: Tensor, count: float | None) -> None:
        """Fill in the moments; ``var`` must be >= 0 and ``count`` > 0, or None when exact."""
        mean, var = torch.as_tensor(mean), torch.as_tensor(var)
        if mean.shape != self.mean.shape or var.shape != self.var.shape:
            raise ValueError(
                f"data moments must have the data's shape {tuple(self.mean.shape)}, got mean "
                f"{tuple(mean.shape)} and var {tuple(var.shape)}"
            )
        if not bool(torch.isfinite(mean).all()) or not bool((var >= 0).all()):
            raise ValueError("data moments must be finite with variance >= 0")
        if count is not None:
            check_positive("count", count)
        self.mean.copy_(mean)
        self.var.copy_(var)
        self.count.fill_(0.0 if count is None else float(count))
        self.exact.fill_(count is None)

    def data_std(self) -> float:
        """The data's scale: the root-mean-square of the per-coordinate standard deviations."""
        return math.sqrt(float(self.var.double().mean()))

    def marginal(self, std: float, alpha: float = 1.0) -> tuple[Tensor, Tensor]:
        """Mean and per-coordinate std of alpha·x_0 + std·z, each of shape ``data_shape``."""
        check_positive("std", std)
        check_positive("alpha", alpha)
        mean = alpha * self.mean.double()
        sd = (alpha**2 * self.var.double() + std**2).sqrt()
        return mean, sd

    def describe(self) -> dict:
        return {
            "source": "exact (analytic)" if self.exact else f"{int(self.count)} training examples",
            "mean_norm": float(self.mean.double().norm()),
            "data_std": self.data_std(),
        }


def gaussian_start(
    shape: tuple[int, ...],
    mean: Tensor | float,
    std: Tensor | float,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """x ~ N(mean, std²) per coordinate, (B, ...); ``mean`` and ``std`` broadcast against
    ``shape[1:]``. One ``randn`` from ``generator``, like a prior draw."""
    z = torch.randn(shape, generator=generator, device=device)
    mean = torch.as_tensor(mean, device=z.device, dtype=torch.float64)
    std = torch.as_tensor(std, device=z.device, dtype=torch.float64)
    return (mean + std * z.double()).to(z.dtype)
