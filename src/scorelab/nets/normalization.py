"""InstanceNorm++ layers of NCSN and NCSNv2.

Plain instance normalisation removes each channel's spatial mean, and with it the colour
balance of an image. InstanceNorm++ (Song & Ermon 2019, Appendix A) puts that information
back: the per-channel means μ_c are themselves standardised across channels and re-injected
with a learned weight α_c before the usual affine map,

    out = γ_c · (IN(x)_c + α_c · (μ_c − mean_c μ) / sqrt(var_c μ + ε)) + β_c.

`CondInstanceNorm2dPlus` looks (γ, α, β) up from a table indexed by the noise level (NCSN);
`InstanceNorm2dPlus` holds them as plain parameters (NCSNv2, unconditional). Both take
`(x, y)` so that the blocks of `refinenet.py` can call either one the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_EPS = 1e-5


def _instance_norm_plus(x: Tensor, gamma: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """The formula of the module docstring for x (B, C, H, W); γ, α, β (C,) or (B, C)."""
    means = x.mean(dim=(2, 3))
    # Standardise the channel means across channels (unbiased variance, as the official code).
    centred = means - means.mean(dim=1, keepdim=True)
    means = centred / torch.sqrt(means.var(dim=1, keepdim=True) + _EPS)
    h = F.instance_norm(x, eps=_EPS) + (means * alpha)[..., None, None]
    return gamma[..., None, None] * h + beta[..., None, None]


class InstanceNorm2dPlus(nn.Module):
    """Unconditional InstanceNorm++ with per-channel γ, α, β.

    Args:
        num_features: number of channels C.

    Shapes: x (B, C, H, W) -> (B, C, H, W); the second argument is ignored.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.weight = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))  # γ
        self.alpha = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))  # α
        self.bias = nn.Parameter(torch.zeros(num_features))  # β

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return _instance_norm_plus(x, self.weight, self.alpha, self.bias)


class CondInstanceNorm2dPlus(nn.Module):
    """InstanceNorm++ whose γ, α, β are rows of a table indexed by the noise level.

    Args:
        num_features: number of channels C.
        num_classes: number of noise levels L (rows of the table).

    The table `embedding.weight` has shape (L, 3C), laid out as [γ | α | β]; γ and α start
    at N(1, 0.02²) and β at 0.

    Shapes: x (B, C, H, W), y (B,) long in [0, L) -> (B, C, H, W).
    """

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.num_classes = num_classes
        self.embedding = nn.Embedding(num_classes, 3 * num_features)
        with torch.no_grad():
            self.embedding.weight[:, : 2 * num_features].normal_(1.0, 0.02)
            self.embedding.weight[:, 2 * num_features :].zero_()

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if y is None:
            raise ValueError("CondInstanceNorm2dPlus needs the noise-level index y of shape (B,)")
        return _instance_norm_plus(x, *self.embedding(y).chunk(3, dim=-1))
