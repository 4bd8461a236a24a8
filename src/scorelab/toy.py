"""Analytic distributions with exact scores, and 2-D toy data sets.

A :class:`GaussianMixture` with diagonal components stays a Gaussian mixture under every
perturbation x_t = alpha x_0 + std z used here, so its perturbed log-density and score are exact
at any noise level. That makes it an *oracle*: samplers and the likelihood code can be studied
with no training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from scorelab.sde import NoiseProcess


def _as_tensor(v, name: str) -> Tensor:
    try:
        return torch.as_tensor(v, dtype=torch.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric, got {v!r}") from err


class GaussianMixture:
    """Σ_k w_k N(μ_k, diag(s_k²)) in D dimensions.

    Args:
        weights: (K,) non-negative, summing to 1.
        means: (K, D).
        stds: scalar, (K,) per-component isotropic, or (K, D) per-component diagonal; all > 0.
    """

    def __init__(
        self,
        weights: Sequence[float] | Tensor,
        means: Sequence[Sequence[float]] | Tensor,
        stds: float | Sequence | Tensor = 1.0,
    ) -> None:
        w = _as_tensor(weights, "weights")
        mu = _as_tensor(means, "means")
        s = _as_tensor(stds, "stds")
        if w.ndim != 1 or w.numel() < 1:
            raise ValueError(f"weights must be a non-empty 1-D list, got shape {tuple(w.shape)}")
        if (w < 0).any() or abs(w.sum().item() - 1.0) > 1e-6:
            raise ValueError(
                f"weights must be >= 0 and sum to 1, got {w.tolist()} (sum {w.sum().item():.6g})"
            )
        if mu.ndim != 2 or mu.shape[0] != w.shape[0]:
            raise ValueError(
                f"means must have shape (K, D) with K = len(weights) = {w.shape[0]}, "
                f"got {tuple(mu.shape)}"
            )
        K, D = mu.shape
        if s.ndim == 0:
            s = s.expand(K, D)
        elif s.ndim == 1:
            if s.shape[0] != K:
                raise ValueError(f"stds must have K = {K} entries, got {s.shape[0]}")
            s = s[:, None].expand(K, D)
        elif s.shape != (K, D):
            raise ValueError(
                f"stds must be a scalar, (K,) or (K, D) = ({K}, {D}); got {tuple(s.shape)}"
            )
        if not (s > 0).all():
            raise ValueError(f"stds must all be > 0, got {s.tolist()}")
        self.weights, self.means, self.stds = w, mu, s.contiguous()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def moments(self) -> tuple[Tensor, Tensor]:
        """Exact per-coordinate mean and variance, each (D,) float64:
        E[x] = Σ w_k μ_k and Var[x] = Σ w_k (s_k² + μ_k²) - E[x]²."""
        w = self.weights[:, None]
        mean = (w * self.means).sum(0)
        var = (w * (self.stds**2 + self.means**2)).sum(0) - mean**2
        return mean, var.clamp(min=0)

    # ----- exact sampling -----
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """n exact samples, (n, D)."""
        return sample_with_components(self, n, generator=generator, device=device, dtype=dtype)[0]

    # ----- exact densities and scores of the perturbed mixture -----
    def _check_x(self, x: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")

    def _components(self, x: Tensor, alpha: Tensor, std: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-component log-densities (B, K), means (B, K, D) and variances (B, K, D)
        of the law of alpha x_0 + std z."""
        self._check_x(x)
        dev = x.device
        xd = x.double()
        a = alpha.double().to(dev).reshape(-1, 1, 1)
        sd = std.double().to(dev).reshape(-1, 1, 1)
        mu = a * self.means.to(dev)[None]  # (B, K, D)
        var = (a * self.stds.to(dev)[None]) ** 2 + sd**2
        diff = xd[:, None, :] - mu
        logn = -0.5 * ((diff**2) / var + torch.log(2 * math.pi * var)).sum(-1)
        return torch.log(self.weights.to(dev))[None] + logn, mu, var

    def _coeffs(self, x: Tensor, alpha, std) -> tuple[Tensor, Tensor]:
        B = x.shape[0]
        alpha = torch.as_tensor(alpha, dtype=torch.float64, device=x.device).expand(B)
        std = torch.as_tensor(std, dtype=torch.float64, device=x.device).expand(B)
        return alpha, std

    def _shared(self, x: Tensor, alpha: Tensor, std: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Log-densities (B, K), 1/var (K, D) and mean/var (K, D) when the whole batch is at
        one level: (B, D) × (D, K) matrix products instead of (B, K, D) tensors, about two
        orders of magnitude cheaper in 64-D."""
        self._check_x(x)
        dev = x.device
        a, sd = float(alpha[0]), float(std[0])
        var = (a * self.stds.to(dev, torch.float64)) ** 2 + sd**2  # (K, D)
        m = a * self.means.to(dev, torch.float64)
        iv = 1.0 / var
        miv = m * iv
        xd = x.double()
        quad = (xd * xd) @ iv.T - 2.0 * (xd @ miv.T) + (m * miv).sum(1)
        log_w = torch.log(self.weights.to(dev, torch.float64))
        lp = log_w - 0.5 * (quad + torch.log(2 * math.pi * var).sum(1))
        return lp, iv, miv

    @staticmethod
    def _one_level(alpha: Tensor, std: Tensor) -> bool:
        return bool((alpha == alpha[0]).all() and (std == std[0]).all())

    def log_prob_perturbed(self, x: Tensor, alpha, std) -> Tensor:
        """log p(x) for x = alpha x_0 + std z, x_0 from the mixture. alpha, std: scalar or (B,)."""
        alpha, std = self._coeffs(x, alpha, std)
        if self._one_level(alpha, std):
            lp = self._shared(x, alpha, std)[0]
        else:
            lp = self._components(x, alpha, std)[0]
        return torch.logsumexp(lp, dim=1).to(x.dtype)

    def score_perturbed(self, x: Tensor, alpha, std) -> Tensor:
        """∇ₓ log p(x) of the perturbed mixture, (B, D)."""
        alpha, std = self._coeffs(x, alpha, std)
        if self._one_level(alpha, std):
            lp, iv, miv = self._shared(x, alpha, std)
            r = torch.softmax(lp, dim=1)
            return (r @ miv - x.double() * (r @ iv)).to(x.dtype)
        lp, mu, var = self._components(x, alpha, std)
        resp = torch.softmax(lp, dim=1)[..., None]  # (B, K, 1)
        s = (resp * (mu - x.double()[:, None, :]) / var).sum(1)
        return s.to(x.dtype)

    def component_log_posterior(self, x: Tensor, alpha, std) -> Tensor:
        """log p(k | x), (B, K), for x = alpha x_0 + std z: the posterior over the components of
        the perturbed mixture, w_k N_k(x) / Σ_j w_j N_j(x); differentiable in ``x``."""
        lp, _, _ = self._components(x, *self._coeffs(x, alpha, std))
        return torch.log_softmax(lp, dim=1).to(x.dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density, (B,)."""
        return self.log_prob_perturbed(x, 1.0, 0.0)

    def score(self, x: Tensor) -> Tensor:
        """Exact data score ∇ₓ log p(x), (B, D)."""
        return self.score_perturbed(x, 1.0, 0.0)

    def score_sigma(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Score of the mixture convolved with N(0, σ² I); σ scalar or (B,)."""
        return self.score_perturbed(x, 1.0, sigma)

    def score_t(self, x: Tensor, t: Tensor, sde: NoiseProcess) -> Tensor:
        """Score of the SDE marginal p_t at time t (B,)."""
        alpha, std = sde.marginal_coeffs(t)
        return self.score_perturbed(x, alpha, std)


def _flatten_for(mixture: GaussianMixture, x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], mixture.dim)


def oracle_sigma_score(mixture: GaussianMixture) -> Callable[[Tensor, Tensor], Tensor]:
    """Exact σ-conditioned score ``fn(x, sigma)``; ``x`` may be (B, D) or any (B, ...) with D
    elements per sample."""

    def fn(x: Tensor, sigma: Tensor) -> Tensor:
        return mixture.score_sigma(_flatten_for(mixture, x), sigma).reshape(x.shape)

    return fn


def oracle_time_score(
    mixture: GaussianMixture, sde: NoiseProcess
) -> Callable[[Tensor, Tensor], Tensor]:
    """Exact score ``fn(x, cond)`` of the process's marginals, in its noise argument (t, or σ
    for discrete levels)."""

    def fn(x: Tensor, t: Tensor) -> Tensor:
        return mixture.score_t(_flatten_for(mixture, x), t, sde).reshape(x.shape)

    return fn


def oracle_classifier(
    mixture: GaussianMixture, process: NoiseProcess
) -> Callable[[Tensor, Tensor], Tensor]:
    """The exact noise-conditional classifier ``fn(x, cond) -> (B, K)``: log p_t(k | x), the
    component posterior of the perturbed mixture at the process's noise argument ``cond``."""

    def fn(x: Tensor, cond: Tensor) -> Tensor:
        alpha, std = process.marginal_coeffs(cond)
        return mixture.component_log_posterior(_flatten_for(mixture, x), alpha, std)

    return fn


def ncsn_toy_mixture() -> GaussianMixture:
    """The NCSN paper's toy: 1/5 N((-5,-5), I) + 4/5 N((5,5), I)."""
    return GaussianMixture([0.2, 0.8], [[-5.0, -5.0], [5.0, 5.0]], 1.0)


# ---------------------------------------------------------------------------------------------
# Sampling-only 2-D sets. Each returns (n, 2) float32.
# ---------------------------------------------------------------------------------------------


def _rand(n: int, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64)


def _randn(*shape: int, generator: torch.Generator | None) -> Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def two_moons(n: int, noise: float = 0.05, *, generator: torch.Generator | None = None) -> Tensor:
    """Two interleaved half circles (as scikit-learn's make_moons), centred."""
    upper = torch.rand(n, generator=generator) < 0.5
    theta = math.pi * _rand(n, generator)
    x = torch.where(upper, torch.cos(theta), 1 - torch.cos(theta))
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    pts = torch.stack([x - 0.5, y - 0.25], dim=1) + noise * _randn(n, 2, generator=generator)
    return pts.float()


def swiss_roll(n: int, noise: float = 0.5, *, generator: torch.Generator | None = None) -> Tensor:
    """A 2-D swiss roll (x, z of scikit-learn's make_swiss_roll), scaled to about [-1.5, 1.5]."""
    t = 1.5 * math.pi * (1 + 2 * _rand(n, generator))
    pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)
    pts = pts + noise * _randn(n, 2, generator=generator)
    return (pts / 10.0).float()


def checkerboard(n: int, *, generator: torch.Generator | None = None) -> Tensor:
    """Uniform on the dark squares of a 4×4 checkerboard on [-2, 2]²."""
    x1 = 4 * _rand(n, generator) - 2
    x2 = _rand(n, generator) - torch.randint(0, 2, (n,), generator=generator).double() * 2
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], dim=1).float()


def rings(
    n: int,
    radii: Sequence[float] = (0.5, 1.0, 1.5, 2.0),
    noise: float = 0.04,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Concentric circles, points spread evenly over them."""
    r = torch.as_tensor(radii, dtype=torch.float64)
    k = torch.randint(0, len(r), (n,), generator=generator)
    theta = 2 * math.pi * _rand(n, generator)
    pts = r[k, None] * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    return (pts + noise * _randn(n, 2, generator=generator)).float()


TOY_SETS = {
    "two_moons": two_moons,
    "swiss_roll": swiss_roll,
    "checkerboard": checkerboard,
    "rings": rings,
}


# ---------------------------------------------------------------------------------------------
# Per-component views of a mixture: the labelled data and the class-conditional oracle.
# ---------------------------------------------------------------------------------------------


def sample_with_components(
    mixture: GaussianMixture,
    n: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """n exact samples (n, D) and the component each came from (n,) long."""
    k = torch.multinomial(mixture.weights.float(), n, replacement=True, generator=generator)
    z = torch.randn(n, mixture.dim, generator=generator, dtype=torch.float64)
    x = mixture.means[k] + mixture.stds[k] * z
    return x.to(device=device, dtype=dtype), k.to(device=device)


def component_score_perturbed(mixture: GaussianMixture, x: Tensor, k, alpha, std) -> Tensor:
    """∇ₓ log N(x; alpha μ_k, alpha² s_k² + std²) for x (B, D) and component k (int or (B,)):
    the exact score of component k under the perturbation x = alpha x_0 + std z."""
    _, mu, var = mixture._components(x, *mixture._coeffs(x, alpha, std))  # (B, K, D) each
    rows = torch.arange(x.shape[0], device=x.device)
    k = torch.as_tensor(k, device=x.device).long().expand(x.shape[0])
    return ((mu[rows, k] - x.double()) / var[rows, k]).to(x.dtype)
