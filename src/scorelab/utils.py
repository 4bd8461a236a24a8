"""Small tensor helpers shared by every layer."""

from __future__ import annotations

from torch import Tensor


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims to ``v`` until it has ``ndim`` dims.

    A per-sample scalar of shape (B,) becomes (B, 1, ..., 1) so that it broadcasts
    against a batch of points (B, D) and images (B, C, H, W) alike.
    """
    if v.ndim > ndim:
        raise ValueError(f"append_dims: tensor has {v.ndim} dims, more than the target {ndim}")
    return v.reshape(*v.shape, *([1] * (ndim - v.ndim)))


def flat_sum(x: Tensor) -> Tensor:
    """Sum over every dim but the batch dim: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def flat_mean(x: Tensor) -> Tensor:
    """Mean over every dim but the batch dim: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def flat_norm(x: Tensor) -> Tensor:
    """Euclidean norm over every dim but the batch dim: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).norm(dim=1)


def check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
