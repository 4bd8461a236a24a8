"""Embeddings of the conditioning signal (σ, t or a σ index) shared by the small networks.

`embedding` says what `cond` holds:

- "sigma": a noise level σ > 0 (B,) float; the network sees log σ.
- "time": a diffusion time t (B,) float, typically in [0, 1].
- "index": a noise-level index (B,) long in [0, num_classes); a learned table.
- "none": unconditional; `cond` is ignored.

Continuous inputs are turned into features either by sinusoids with geometric frequencies
(the Transformer / DDPM positional embedding) or by random Fourier features with fixed Gaussian
frequencies (Tancik et al. 2020; the NCSN++ embedding of log σ).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

EMBEDDINGS = ("sigma", "time", "index", "none")
FEATURES = ("sinusoidal", "fourier")
# Sinusoidal inputs are scaled so that their range spans ~[-1000, 1000], as DDPM's 1000 steps:
# t in [0, 1] -> [0, 1000]; log σ in about [-4.6, 4] (σ from 0.01 to 50) -> [-1150, 1000].
_DEFAULT_SCALE = {"time": 1000.0, "sigma": 250.0}


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Raise ValueError unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; use one of {', '.join(allowed)}")


class NoiseEmbedding(nn.Module):
    """Map the conditioning (B,) to features (B, dim).

    Args:
        embedding: "sigma" | "time" | "index" (see the module docstring); "none" is handled by
            the networks, which then build no embedding.
        dim: output width (even for the continuous embeddings).
        features: "sinusoidal" or "fourier", for "sigma" and "time".
        num_classes: table size for "index".
        input_scale: multiplier applied to log σ or t before the sinusoids (default 250 for
            "sigma", 1000 for "time").
        fourier_scale: standard deviation of the Fourier frequencies (16, as NCSN++).
    """

    def __init__(
        self,
        embedding: str,
        dim: int,
        *,
        features: str = "sinusoidal",
        num_classes: int | None = None,
        input_scale: float | None = None,
        fourier_scale: float = 16.0,
    ) -> None:
        super().__init__()
        check_choice("embedding", embedding, ("sigma", "time", "index"))
        check_choice("features", features, FEATURES)
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
            self.register_buffer("freqs", torch.randn(half) * fourier_scale * 2 * math.pi)
            self.input_scale = 1.0 if input_scale is None else input_scale
        else:
            k = torch.arange(half, dtype=torch.float32) / half
            self.register_buffer("freqs", torch.exp(-math.log(10_000.0) * k))
            self.input_scale = _DEFAULT_SCALE[embedding] if input_scale is None else input_scale

    def forward(self, cond: Tensor) -> Tensor:
        """cond (B,) -> (B, dim)."""
        if self.embedding == "index":
            if cond.dtype.is_floating_point:
                raise ValueError(
                    f"embedding='index' needs cond as a long tensor of noise-level indices, "
                    f"got dtype {cond.dtype}"
                )
            return self.table(cond)
        s = cond.float()
        if self.embedding == "sigma":
            s = torch.log(s)
        arg = (s * self.input_scale)[:, None] * self.freqs[None, :]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
