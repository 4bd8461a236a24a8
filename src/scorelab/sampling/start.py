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


class Start:
    """Where a draw starts (what ``init=`` builds), at the first point of the schedule, where
    the marginal is alpha·x_0 + std·z and the prior N(0, prior_std² I).

    ``kind``:
      - ``auto``: N(alpha·mean, alpha²·var + std²) per coordinate when the model knows its
        data's moments, else the prior (the deterministic samplers' default: any error in the
        start stays in their samples);
      - ``moments``: the same, refused when the moments are unknown;
      - ``prior``: N(0, prior_std² I) (the stochastic samplers' default);
      - ``uniform``: uniform on ``[low, high]`` per coordinate (NCSN's start); a null end is
        mean ∓ √3·std of the data (the uniform with the data's mean and variance) when the model
        knows them, else 0 and 1.
    ``mean`` / ``std`` (with ``auto`` or ``prior``) give the Gaussian explicitly; a missing one
    keeps the prior's (0, prior_std).
    """

    KINDS = ("auto", "moments", "prior", "uniform")

    def __init__(self, kind: str = "auto", mean=None, std=None, low=None, high=None) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"init={kind!r} is not a start; use one of {', '.join(self.KINDS)}")
        if (mean is not None or std is not None) and kind not in ("auto", "prior"):
            raise ValueError(
                f"mean / std set a Gaussian start; they need init=prior or auto, got init={kind}"
            )
        if std is not None and not bool((torch.as_tensor(std) > 0).all()):
            raise ValueError(f"std={std} must be > 0")
        if None not in (low, high) and not high > low:
            raise ValueError(f"high={high} must be > low={low}")
        self.kind, self.mean, self.std, self.low, self.high = kind, mean, std, low, high

    def __call__(self, model, shape, grid, *, device=None, generator=None) -> tuple[Tensor, dict]:
        """(x of ``shape``, a JSON-friendly description of where it came from)."""
        moments = getattr(model, "data_moments", None)
        moments = moments if moments is not None and moments.known else None
        if self.kind == "uniform":
            return self._uniform(shape, moments, device, generator)
        if self.mean is not None or self.std is not None:
            mean = 0.0 if self.mean is None else self.mean
            sd = grid.prior_std if self.std is None else self.std
            x = gaussian_start(shape, mean, sd, device=device, generator=generator)
            return x, {"kind": "given", "mean": _summary(mean), "std": _summary(sd)}
        if moments is None and self.kind == "moments":
            raise ValueError(
                "init=moments needs the data's mean and variance, which this model does not know "
                "(a checkpoint saved before they were, or a converted one); use init=auto or "
                "init=prior"
            )
        if moments is None or self.kind == "prior":
            x = grid.prior_std * torch.randn(shape, generator=generator, device=device)
            return x, {"kind": "prior", "mean": 0.0, "std": float(grid.prior_std)}
        mean, sd = moments.marginal(grid.std, grid.alpha)
        x = gaussian_start(
            shape, mean.to(device), sd.to(device), device=device, generator=generator
        )
        info = {
            "kind": "moments",
            "distribution": "N(alpha * data_mean, alpha^2 * data_var + std^2) per coordinate",
            "alpha": float(grid.alpha),
            "std": float(grid.std),
            **moments.describe(),
        }
        return x, info

    def _uniform(self, shape, moments, device, generator) -> tuple[Tensor, dict]:
        low, high = self.low, self.high
        if moments is not None:
            half = math.sqrt(3.0) * moments.var.double().sqrt()
            low = moments.mean.double() - half if low is None else low
            high = moments.mean.double() + half if high is None else high
        low = 0.0 if low is None else low
        high = 1.0 if high is None else high
        u = torch.rand(shape, generator=generator, device=device)
        lo = torch.as_tensor(low, dtype=torch.float64, device=u.device)
        hi = torch.as_tensor(high, dtype=torch.float64, device=u.device)
        x = (lo + (hi - lo) * u.double()).to(u.dtype)
        return x, {"kind": "uniform", "low": _summary(low), "high": _summary(high)}

    def describe(self) -> dict:
        out = {"kind": self.kind}
        for key in ("mean", "std", "low", "high"):
            if getattr(self, key) is not None:
                out[key] = _summary(getattr(self, key))
        return out


def _summary(v) -> float | list | str:
    """A JSON-friendly view of a start parameter (a number, a short list, or its shape)."""
    t = torch.as_tensor(v)
    if t.numel() == 1:
        return float(t)
    if t.numel() <= 16:
        return t.flatten().tolist()
    return f"tensor of shape {tuple(t.shape)}"
