"""Score-matching objectives as small callable classes (pure torch, any batch shape ``(B, ...)``).

Every loss is called as ``loss(score_fn, x, *, generator=None) -> LossOutput``:

- ``x`` is a clean data batch ``(B, ...)``;
- ``score_fn(x, cond)`` returns a tensor shaped like ``x``; ``cond`` is ``(B,)``, a noise level σ
  for the σ-conditioned losses and a time t for the SDE losses (see ``docs/architecture.md``);
- the result carries the batch loss, the per-sample losses ``(B,)`` and the noise level (σ or t)
  each sample was drawn at ``(B,)``, so that callers can bucket losses by noise level.

The reduction over the data dimensions of one sample is the ``reduce`` argument, ``"sum"`` or
``"mean"``; the batch loss is always the mean over the batch of the per-sample losses.

Conventions for the constant factor: the denoising losses (DSM, EDM) carry no 1/2, as in the
score SDE code; ISM and SSM carry the 1/2 of Hyvärinen's objective. NCSN's original code
multiplies its DSM by 1/2, which only rescales the learning rate.

Losses that differentiate the score with respect to its input (ISM, SSM) build the graph
themselves under :func:`torch.enable_grad`, so they also run in a validation loop under
``torch.no_grad()``; they cannot run under ``torch.inference_mode()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from scorelab.sampling.base import check_int, randn_like
from scorelab.sde import SDE
from scorelab.utils import append_dims, flat_mean, flat_sum

ScoreFn = Callable[[Tensor, Tensor], Tensor]
Reduce = Literal["mean", "sum"]

#: Largest data dimension for which :class:`ImplicitScoreMatchingLoss` computes the exact trace.
ISM_MAX_DIM = 64


@dataclass
class LossOutput:
    """Result of a loss call.

    Attributes:
        loss: scalar, the mean of ``per_sample`` over the batch.
        per_sample: (B,) loss of each sample.
        noise: (B,) the noise level each sample was drawn at: σ for the σ-conditioned losses,
            t for the SDE losses.
    """

    loss: Tensor
    per_sample: Tensor
    noise: Tensor


# ---------------------------------------------------------------------------------------------
# Argument checks and small helpers
# ---------------------------------------------------------------------------------------------


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def _reducer(reduce: str) -> Callable[[Tensor], Tensor]:
    _check_choice("reduce", reduce, ("mean", "sum"))
    return flat_sum if reduce == "sum" else flat_mean


def _check_eps(eps: float, T: float) -> float:
    if not 0 < eps < T:
        raise ValueError(
            f"eps (smallest training time) must be in (0, T) = (0, {T}), got {eps}; "
            "1e-5 is the score SDE default"
        )
    return float(eps)


def _output(per_sample: Tensor, noise: Tensor) -> LossOutput:
    return LossOutput(loss=per_sample.mean(), per_sample=per_sample, noise=noise)


def _uniform_time(x: Tensor, eps: float, T: float, generator: torch.Generator | None) -> Tensor:
    """t ~ U(eps, T), (B,). Shared by the SDE losses so equal seeds give equal draws."""
    u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
    return eps + (T - eps) * u


# ---------------------------------------------------------------------------------------------
# Denoising score matching
# ---------------------------------------------------------------------------------------------


class DiscreteDSMLoss:
    """NCSN's denoising score matching over a finite set of noise levels (Song & Ermon 2019).

    For each sample: i ~ U{0, …, L-1}, x̃ = x + σ_i z and
    ``per_sample = σ_i^p · reduce((s(x̃, σ_i) + z/σ_i)²)``, with p = ``weight_power`` = 2 by
    default (λ(σ) = σ², which makes every level contribute O(1)).

    Args:
        sigmas: (L,) noise levels, positive and strictly decreasing (e.g.
            :func:`scorelab.schedules.geometric_sigmas`).
        reduce: reduction over data dims, default ``"sum"`` (as NCSN).
        weight_power: p in λ(σ) = σ^p.

    ``score_fn(x̃, sigma)`` receives sigma as a float tensor (B,); a network conditioned on the
    level index maps σ to its index in its wrapper.
    """

    def __init__(
        self, sigmas: Sequence[float] | Tensor, reduce: Reduce = "sum", weight_power: float = 2.0
    ) -> None:
        values = sigmas.detach() if isinstance(sigmas, Tensor) else [float(v) for v in sigmas]
        s = torch.as_tensor(values, dtype=torch.float64).flatten().cpu()
        if s.numel() < 1:
            raise ValueError("sigmas must hold at least one noise level, got an empty sequence")
        if not (s > 0).all():
            raise ValueError(f"sigmas must all be > 0, got min {s.min().item():.4g}")
        bad = (s[1:] >= s[:-1]).nonzero()
        if bad.numel() > 0:
            i = bad[0, 0].item()
            raise ValueError(
                "sigmas must be strictly decreasing (sigma_1 > ... > sigma_L), got "
                f"sigmas[{i}] = {s[i].item():.4g} <= sigmas[{i + 1}] = {s[i + 1].item():.4g}; "
                "pass the schedule in descending order, e.g. geometric_sigmas(max, min, L)"
            )
        self.sigmas = s
        self.reduce, self._reduce = reduce, _reducer(reduce)
        self.weight_power = float(weight_power)

    def __call__(
        self, score_fn: ScoreFn, x: Tensor, *, generator: torch.Generator | None = None
    ) -> LossOutput:
        idx = torch.randint(
            0, self.sigmas.numel(), (x.shape[0],), generator=generator, device=x.device
        )
        sigma = self.sigmas.to(device=x.device, dtype=x.dtype)[idx]
        z = randn_like(x, generator)
        s = append_dims(sigma, x.ndim)
        # Perturb and match the conditional score -z/σ: σ² |s + z/σ|² = |σ s + z|².
        score = score_fn(x + s * z, sigma)
        per_sample = self._reduce((s * score + z) ** 2) * sigma ** (self.weight_power - 2.0)
        return _output(per_sample, sigma)


class ContinuousDSMLoss:
    """Continuous-time DSM of the score SDE paper (Song et al. 2021), for any :class:`SDE`.

    For each sample: t ~ U(eps, T), x_t = α(t) x + std(t) z, and with s = score_fn(x_t, t)

    - ``weighting="variance"``: λ = std², ``per_sample = reduce((std·s + z)²)``;
    - ``weighting="likelihood"``: λ = g(t)², ``per_sample = g² · reduce((s + z/std)²)``.

    Args:
        sde: the forward process; only ``marginal_coeffs`` and ``sde`` are used.
        weighting: ``"variance"`` (default) or ``"likelihood"``.
        eps: smallest time, in (0, T); keeps std(t) > 0.
        reduce: reduction over data dims, default ``"sum"`` (the paper's VE choice; use
            ``"mean"`` for VP and sub-VP).
    """

    def __init__(
        self,
        sde: SDE,
        weighting: Literal["variance", "likelihood"] = "variance",
        eps: float = 1e-5,
        reduce: Reduce = "sum",
    ) -> None:
        self.sde = sde
        self.weighting = _check_choice("weighting", weighting, ("variance", "likelihood"))
        self.eps = _check_eps(eps, sde.T)
        self.reduce, self._reduce = reduce, _reducer(reduce)

    def __call__(
        self, score_fn: ScoreFn, x: Tensor, *, generator: torch.Generator | None = None
    ) -> LossOutput:
        t = _uniform_time(x, self.eps, self.sde.T, generator)
        z = randn_like(x, generator)
        alpha, std = self.sde.marginal_coeffs(t)
        a, sd = append_dims(alpha, x.ndim), append_dims(std, x.ndim)
        score = score_fn(a * x + sd * z, t)
        if self.weighting == "variance":
            per_sample = self._reduce((sd * score + z) ** 2)
        else:
            _, g = self.sde.sde(x, t)
            per_sample = self._reduce((score + z / sd) ** 2) * g**2
        return _output(per_sample, t)


class EDMLoss:
    """EDM's training objective (Karras et al. 2022, Table 1), for any :class:`SDE`.

    For each sample: ln σ ~ N(P_mean, P_std²), y = x + σ n and, with D = y + σ² s_σ(y) the
    denoiser implied by the score (Tweedie),

        ``per_sample = λ(σ) · reduce((D - x)²)``,  λ(σ) = (σ² + σ_d²) / (σ σ_d)².

    With :class:`~scorelab.nets.precond.EDMPrecond` (the same σ_d) this is EDM's loss: the
    network's effective target has unit variance at every σ. ``score_fn`` is time-conditioned,
    as every SDE loss: it is called at t = ``sde.t_from_sigma(σ)`` on x_t = α(t) y, and
    s_σ(y) = α s_t(x_t) (α = 1 on EDM's VE process, ``sde=edm``). σ is not clipped to the
    SDE's range: a draw outside it (ln σ more than 4 P_std from P_mean) maps to t outside
    [0, T], which the VE process extends exactly.

    Args:
        sde: the forward process; ``t_from_sigma`` and ``marginal_coeffs`` are used.
        p_mean, p_std: mean and standard deviation of ln σ (EDM: -1.2 and 1.2).
        sigma_data: σ_d of the weighting (EDM: 0.5), the same as the preconditioning's.
        reduce: reduction over data dims, ``"mean"`` (default) or ``"sum"`` (EDM sums; with
            Adam the two differ only by a constant factor, but gradient clipping sees it).
    """

    def __init__(
        self,
        sde: SDE,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        sigma_data: float = 0.5,
        reduce: Reduce = "mean",
    ) -> None:
        if not float(p_std) > 0:
            raise ValueError(f"p_std={p_std} must be > 0 (the spread of ln σ; EDM uses 1.2)")
        if not float(sigma_data) > 0:
            raise ValueError(
                f"sigma_data={sigma_data} must be > 0 (the data's standard deviation; EDM uses "
                "0.5 for images in [-1, 1])"
            )
        self.sde = sde
        self.p_mean, self.p_std, self.sigma_data = float(p_mean), float(p_std), float(sigma_data)
        self.reduce, self._reduce = reduce, _reducer(reduce)

    def weight(self, sigma: Tensor) -> Tensor:
        """λ(σ) = (σ² + σ_d²) / (σ σ_d)², (B,)."""
        sd2 = self.sigma_data**2
        return (sigma**2 + sd2) / (sigma**2 * sd2)

    def __call__(
        self, score_fn: ScoreFn, x: Tensor, *, generator: torch.Generator | None = None
    ) -> LossOutput:
        rnd = torch.randn(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        sigma = torch.exp(self.p_mean + self.p_std * rnd)
        n = randn_like(x, generator)
        t = self.sde.t_from_sigma(sigma)
        alpha, _ = self.sde.marginal_coeffs(t)
        s, a = append_dims(sigma, x.ndim), append_dims(alpha, x.ndim)
        y = x + s * n
        score = score_fn(a * y, t)
        # D - x = (y - x) + σ² s_σ(y) = σ n + σ² α s_t(x_t).
        per_sample = self._reduce((s * n + s**2 * a * score) ** 2) * self.weight(sigma)
        return _output(per_sample, t)


# ---------------------------------------------------------------------------------------------
# Score matching at one fixed noise level: implicit and sliced
# ---------------------------------------------------------------------------------------------


class _FixedSigmaLoss:
    """Shared parts: optional N(0, σ²) data noise and the σ passed to the score function."""

    def __init__(self, noise_sigma: float | None = None, reduce: Reduce = "sum") -> None:
        if noise_sigma is not None and not noise_sigma >= 0:
            raise ValueError(f"noise_sigma must be None or >= 0, got {noise_sigma}")
        self.noise_sigma = None if noise_sigma is None else float(noise_sigma)
        self.reduce, self._reduce = reduce, _reducer(reduce)

    def _prepare(self, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Return the (optionally perturbed) data and sigma (B,) = noise_sigma or 0."""
        level = self.noise_sigma or 0.0
        sigma = torch.full((x.shape[0],), level, device=x.device, dtype=x.dtype)
        if self.noise_sigma:
            x = x + self.noise_sigma * randn_like(x, generator)
        return x, sigma

    def _per_dim(self, v: Tensor, x: Tensor) -> Tensor:
        """Scale a per-sample sum (B,) to the chosen reduction (divide by D for ``"mean"``)."""
        return v if self.reduce == "sum" else v / x[0].numel()


class ImplicitScoreMatchingLoss(_FixedSigmaLoss):
    """ISM ``tr(∇ₓ s) + ½‖s‖²`` with the exact Jacobian trace (Hyvärinen 2005).

    The trace costs one backward pass per data dimension, so data with D > 64 elements per
    sample is refused; use :class:`SlicedScoreMatchingLoss` there.

    Args:
        noise_sigma: if set, x is perturbed by N(0, σ²I) and σ is passed to ``score_fn``;
            otherwise σ = 0 is passed.
        reduce: ``"sum"`` (default) or ``"mean"`` (the objective divided by D).
    """

    def __call__(
        self, score_fn: ScoreFn, x: Tensor, *, generator: torch.Generator | None = None
    ) -> LossOutput:
        D = x[0].numel()
        if D > ISM_MAX_DIM:
            raise ValueError(
                f"ImplicitScoreMatchingLoss computes the exact trace with D backward passes; "
                f"data has D = {D} > {ISM_MAX_DIM} elements per sample. "
                "Use SlicedScoreMatchingLoss for high-dimensional data"
            )
        train = torch.is_grad_enabled()
        x, sigma = self._prepare(x, generator)
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            s = score_fn(x, sigma)
            flat = s.reshape(s.shape[0], -1)
            trace = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
            for d in range(D):
                # Row d of the Jacobian; keep its diagonal entry.
                (row,) = torch.autograd.grad(flat[:, d].sum(), x, create_graph=True)
                trace = trace + row.reshape(row.shape[0], -1)[:, d]
            per_sample = self._per_dim(trace + 0.5 * flat_sum(s**2), x)
        if not train:
            per_sample = per_sample.detach()
        return _output(per_sample, sigma)


class SlicedScoreMatchingLoss(_FixedSigmaLoss):
    """Sliced score matching (Song et al. 2019), an unbiased estimate of ISM.

    For projections v with E[v vᵀ] = I:

    - plain: ``vᵀ∇ₓ(vᵀs) + ½(vᵀs)²``;
    - variance-reduced: ``vᵀ∇ₓ(vᵀs) + ½‖s‖²`` (the second term's expectation in closed form).

    Both have expectation tr(∇ₓ s) + ½‖s‖² over v. With ``n_projections = M`` the batch is
    repeated M times, the score is evaluated once on (M B, ...) and one vector–Jacobian product
    gives all M slices; ``per_sample`` is the mean over the M slices.

    Args:
        noise_sigma: if set, x is perturbed by N(0, σ²I) (NCSN Fig. 1) and σ is passed to
            ``score_fn``; otherwise σ = 0 is passed.
        projection: ``"gaussian"`` (default) or ``"rademacher"``.
        n_projections: M >= 1.
        variance_reduced: use the closed-form ½‖s‖² term.
        reduce: ``"sum"`` (default) or ``"mean"`` (the objective divided by D).
    """

    def __init__(
        self,
        noise_sigma: float | None = None,
        projection: Literal["gaussian", "rademacher"] = "gaussian",
        n_projections: int = 1,
        variance_reduced: bool = False,
        reduce: Reduce = "sum",
    ) -> None:
        super().__init__(noise_sigma, reduce)
        self.projection = _check_choice("projection", projection, ("gaussian", "rademacher"))
        self.n_projections = check_int("n_projections", n_projections)
        self.variance_reduced = bool(variance_reduced)

    def _projections(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        v = randn_like(x, generator)
        if self.projection == "rademacher":
            v = torch.sign(v)
            v = torch.where(v == 0, torch.ones_like(v), v)
        return v

    def __call__(
        self, score_fn: ScoreFn, x: Tensor, *, generator: torch.Generator | None = None
    ) -> LossOutput:
        train = torch.is_grad_enabled()
        x, sigma = self._prepare(x, generator)
        B, M = x.shape[0], self.n_projections
        xs = x.repeat(M, *([1] * (x.ndim - 1))) if M > 1 else x
        sig = sigma.repeat(M) if M > 1 else sigma
        v = self._projections(xs, generator)
        with torch.enable_grad():
            xs = xs.detach().requires_grad_(True)
            s = score_fn(xs, sig)
            sv = flat_sum(s * v)  # vᵀs, (M B,)
            # One vector-Jacobian product: ∇ₓ(vᵀs), then project on v for vᵀ(∇ₓ s)v.
            (grad_sv,) = torch.autograd.grad(sv.sum(), xs, create_graph=True)
            jac_term = flat_sum(grad_sv * v)
            quad = flat_sum(s**2) if self.variance_reduced else sv**2
            per = self._per_dim(jac_term + 0.5 * quad, xs)
            per_sample = per.reshape(M, B).mean(dim=0)
        if not train:
            per_sample = per_sample.detach()
        return _output(per_sample, sigma)
