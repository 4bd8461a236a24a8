"""Sample-based metrics for low-dimensional (toy) distributions.

Every function takes point clouds of shape (N, D). They are used to score samplers on the
Gaussian mixtures of :mod:`scorelab.toy`, where the target density and its mode weights are known.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "exact_nll",
    "mmd_rbf",
    "mode_weight_error",
    "mode_weights",
    "sliced_wasserstein",
    "wasserstein_1d",
]


def _check_points(name: str, x: Tensor, min_n: int = 1) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(
            f"{name} must have shape (N, D), got {tuple(x.shape)}; "
            "flatten images with x.flatten(1) or add a feature dim with x[:, None]"
        )
    if x.shape[0] < min_n:
        raise ValueError(f"{name} needs at least {min_n} samples, got N={x.shape[0]}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def _check_pair(x: Tensor, y: Tensor, min_n: int = 1) -> None:
    _check_points("x", x, min_n)
    _check_points("y", y, min_n)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same dimension D, got x: {tuple(x.shape)}, y: {tuple(y.shape)}"
        )


def wasserstein_1d(u: Tensor, v: Tensor, p: float = 2.0) -> Tensor:
    """Exact p-Wasserstein distance between 1-D empirical distributions, batched.

    W_p^p = ∫_0^1 |F_u^{-1}(q) - F_v^{-1}(q)|^p dq, computed exactly by matching quantiles: both
    empirical quantile functions are constant between the merged levels {i/N} ∪ {j/M}, so the
    integral is a finite sum. Sample counts may differ.

    Args:
        u: (N, K) samples of K 1-D distributions.
        v: (M, K) samples of the K distributions they are compared with.
        p: order, >= 1.

    Returns:
        (K,) distances W_p (not raised to the power p).
    """
    if p < 1:
        raise ValueError(f"p must be >= 1 for a Wasserstein distance, got {p}")
    n, m = u.shape[0], v.shape[0]
    u_sorted = u.sort(dim=0).values
    v_sorted = v.sort(dim=0).values
    if n == m:
        diff = (u_sorted - v_sorted).abs()
        return diff.pow(p).mean(dim=0).pow(1.0 / p)
    # Merged quantile levels and the width of each constant piece.
    dtype = torch.float64
    levels = torch.cat(
        [
            torch.arange(1, n + 1, dtype=dtype, device=u.device) / n,
            torch.arange(1, m + 1, dtype=dtype, device=u.device) / m,
        ]
    )
    levels = torch.unique(levels)  # sorted
    widths = torch.diff(levels, prepend=levels.new_zeros(1))
    mids = levels - widths / 2
    iu = (mids * n).floor().long().clamp_(0, n - 1)
    iv = (mids * m).floor().long().clamp_(0, m - 1)
    diff = (u_sorted[iu] - v_sorted[iv]).abs().to(dtype)
    w_pp = (diff.pow(p) * widths[:, None]).sum(dim=0)
    return w_pp.pow(1.0 / p).to(u.dtype)


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    n_projections: int = 256,
    p: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sliced p-Wasserstein distance SW_p(x, y) = (E_θ W_p^p(θᵀx, θᵀy))^{1/p}.

    θ is drawn uniformly on the unit sphere; each 1-D distance is exact (quantile matching), so
    x and y may have different sample counts. For D = 1 the projection is ±1 and SW_p = W_p.

    Args:
        x: (N, D) samples.
        y: (M, D) samples.
        n_projections: number of random directions θ, >= 1.
        p: order, >= 1.
        generator: CPU generator for the directions, for reproducible values.

    Returns:
        scalar tensor.
    """
    _check_pair(x, y)
    if n_projections < 1:
        raise ValueError(f"n_projections must be >= 1, got {n_projections}")
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    d = x.shape[1]
    theta = torch.randn(d, n_projections, generator=generator, dtype=x.dtype)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)
    w = wasserstein_1d(x @ theta, y.to(x.dtype) @ theta, p=p)  # (n_projections,)
    return w.pow(p).mean().pow(1.0 / p)


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    return torch.cdist(a, b).pow(2)


def mmd_rbf(
    x: Tensor,
    y: Tensor,
    bandwidths: Sequence[float] | None = None,
) -> Tensor:
    """Unbiased estimate of the squared MMD with a sum of Gaussian (RBF) kernels.

    k(a, b) = Σ_h exp(-‖a - b‖² / (2h²)). The U-statistic
    MMD² = mean_{i≠j} k(x_i, x_j) + mean_{i≠j} k(y_i, y_j) - 2 mean_{i,j} k(x_i, y_j)
    has expectation 0 when x and y come from the same distribution, so it can be slightly
    negative on finite samples.

    Args:
        x: (N, D) samples, N >= 2.
        y: (M, D) samples, M >= 2.
        bandwidths: kernel widths h > 0. ``None`` uses the median heuristic: h = median pairwise
            distance of the pooled samples, times (0.5, 1, 2).

    Returns:
        scalar tensor, the unbiased MMD² estimate.
    """
    _check_pair(x, y, min_n=2)
    y = y.to(x.dtype)
    dxx, dyy, dxy = _sq_dists(x, x), _sq_dists(y, y), _sq_dists(x, y)
    if bandwidths is None:
        pooled = torch.cat([x, y])
        d = torch.pdist(pooled)
        med = d.median()
        if not med > 0:
            raise ValueError(
                "mmd_rbf: the median pairwise distance is 0 (mostly duplicate points); "
                "pass explicit bandwidths"
            )
        hs = [0.5 * float(med), float(med), 2.0 * float(med)]
    else:
        hs = [float(h) for h in bandwidths]
        if not hs or any(not h > 0 for h in hs):
            raise ValueError(f"bandwidths must be a non-empty list of values > 0, got {hs}")

    def kernel(d2: Tensor) -> Tensor:
        return sum(torch.exp(-d2 / (2 * h * h)) for h in hs)

    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = kernel(dxx), kernel(dyy), kernel(dxy)
    sum_xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    sum_yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return sum_xx + sum_yy - 2 * kxy.mean()


def mode_weights(x: Tensor, means: Tensor) -> Tensor:
    """Fraction of samples whose nearest mean (Euclidean) is each mode.

    Args:
        x: (N, D) samples.
        means: (K, D) mode centres.

    Returns:
        (K,) fractions summing to 1.
    """
    _check_points("x", x)
    _check_points("means", means)
    if means.shape[1] != x.shape[1]:
        raise ValueError(
            f"means must have shape (K, {x.shape[1]}) to match x, got {tuple(means.shape)}"
        )
    nearest = torch.cdist(x, means.to(x)).argmin(dim=1)
    counts = torch.bincount(nearest, minlength=means.shape[0])
    return counts.to(x.dtype) / x.shape[0]


def mode_weight_error(x: Tensor, means: Tensor, weights: Tensor | Sequence[float]) -> Tensor:
    """Largest absolute error between the empirical and the true mode weights.

    Args:
        x: (N, D) samples.
        means: (K, D) mode centres.
        weights: (K,) true mixture weights.

    Returns:
        scalar tensor max_k |ŵ_k - w_k|.
    """
    w_hat = mode_weights(x, means)
    weights = torch.as_tensor(weights, dtype=w_hat.dtype, device=w_hat.device)
    if weights.shape != w_hat.shape:
        raise ValueError(
            f"weights must have shape ({means.shape[0]},) like means, got {tuple(weights.shape)}"
        )
    return (w_hat - weights).abs().max()


def exact_nll(x: Tensor, log_prob_fn: Callable[[Tensor], Tensor]) -> Tensor:
    """Mean negative log-likelihood of samples under a known density.

    Args:
        x: (N, D) samples.
        log_prob_fn: maps (N, D) to (N,) log-densities (e.g. a mixture's ``log_prob``).

    Returns:
        scalar tensor -mean log p(x), in nats.
    """
    _check_points("x", x)
    logp = log_prob_fn(x)
    if logp.shape != (x.shape[0],):
        raise ValueError(
            f"log_prob_fn must return shape ({x.shape[0]},) for x of shape {tuple(x.shape)}, "
            f"got {tuple(logp.shape)}"
        )
    return -logp.mean()
