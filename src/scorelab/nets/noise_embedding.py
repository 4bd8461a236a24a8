"""Embeddings of the conditioning signal of the small networks (UNetSmall, MLP, classifiers).

``embedding`` names what ``cond`` holds (:mod:`scorelab.nets.conditioning`); "index" is a
learned table, "none" builds no embedding. Continuous kinds are first unscaled (ln σ or t), so a
noise level gives the same features whichever kind feeds it, then turned into geometric
sinusoids (Transformer / DDPM) or random Fourier features (Tancik et al. 2020; NCSN++).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scorelab.nets.conditioning import COND_KINDS, CONTINUOUS, SINUSOID_SCALE, check_kind, unscale

EMBEDDINGS = tuple(COND_KINDS)
FEATURES = ("sinusoidal", "fourier")


def check_positive_ints(hint: str = "", **values) -> None:
    """Refuse, naming it, any value that is not an int >= 1 (a bool included); ``hint`` is
    appended to the message."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer{hint and '; ' + hint}")


class NoiseEmbedding(nn.Module):
    """Map the conditioning (B,) to features (B, dim).

    Args:
        embedding: "sigma" | "c_noise" | "time" | "step" | "index" (see the module
            docstring); "none" is handled by the networks, which then build no embedding.
        dim: output width (even for the continuous embeddings).
        features: "sinusoidal" or "fourier", for the continuous kinds.
        num_classes: table size for "index".
        input_scale: multiplier of ln σ or t before the features (default: 1 for Fourier
            features, whose frequencies have standard deviation 16 as NCSN++'s; else
            :data:`SINUSOID_SCALE`, 250 for the σ kinds, 1000 for the time kinds).
    """

    def __init__(
        self,
        embedding: str,
        dim: int,
        *,
        features: str = "sinusoidal",
        num_classes: int | None = None,
        input_scale: float | None = None,
    ) -> None:
        super().__init__()
        check_kind("embedding", embedding, (*CONTINUOUS, "index"))
        check_kind("features", features, FEATURES)
        if dim < 2 or (embedding != "index" and dim % 2):
            raise ValueError(f"embedding dim={dim} must be an even integer >= 2")
        self.embedding, self.dim, self.features = embedding, dim, features
        if embedding == "index":
            if num_classes is None or num_classes < 1:
                raise ValueError(
                    f"num_classes={num_classes!r} must be a positive integer (the number of "
                    "noise levels L) when embedding='index'"
                )
            self.table = nn.Embedding(num_classes, dim)
            return
        half = dim // 2
        if features == "fourier":
            self.register_buffer("freqs", torch.randn(half) * 16.0 * 2 * math.pi)
            default = 1.0
        else:
            k = torch.arange(half, dtype=torch.float32) / half
            self.register_buffer("freqs", torch.exp(-math.log(10_000.0) * k))
            default = SINUSOID_SCALE[CONTINUOUS[embedding]]
        self.input_scale = default if input_scale is None else input_scale

    def forward(self, cond: Tensor) -> Tensor:
        """cond (B,) -> (B, dim)."""
        if self.embedding == "index":
            if cond.dtype.is_floating_point:
                raise ValueError(
                    f"embedding='index' needs cond as a long tensor of noise-level indices, "
                    f"got dtype {cond.dtype}"
                )
            return self.table(cond)
        s = unscale(self.embedding, cond)
        arg = (s * self.input_scale)[:, None] * self.freqs[None, :]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class NoiseConditioned(nn.Module):
    """Base of the small networks: ``embedding`` is the kind of cond they expect (their
    ``cond_input``) and ``embed`` (None if unconditional) computes its fixed features."""

    embedding: str
    embed: NoiseEmbedding | None

    @property
    def cond_input(self) -> str:
        return self.embedding

    def cond_features(self, cond: Tensor) -> Tensor | None:
        """The fixed features of cond, before any learned layer; None if unconditional."""
        return None if self.embed is None else self.embed(cond)
