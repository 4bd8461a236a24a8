"""Building blocks of the score SDE U-Nets (DDPM, DDPM++, NCSN++; Song et al. 2021).

Every block takes ``(B, C, H, W)`` feature maps and, where it is conditioned, a ``(B, T)`` time
embedding. Initialisation follows the official code: the DDPM "fan-average uniform variance
scaling" for every convolution and dense layer, with ``init_scale = 0`` meaning a near-zero
(1e-10) scale for the last layer of each residual branch.

Differences of layout (not of function) from the official modules:

* 1×1 "NIN" layers are ``nn.Conv2d(kernel_size=1)`` (weights stored ``(out, in, 1, 1)``).
* The attention block holds one fused ``qkv`` 1×1 convolution and uses
  :func:`torch.nn.functional.scaled_dot_product_attention` (one head, scale ``C**-0.5``).
* The Gaussian Fourier projection's frozen frequencies are a buffer, not a frozen parameter.

:mod:`scorelab.conversion.score_sde` maps official checkpoints onto these layouts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scorelab.nets import fir
from scorelab.utils import append_dims

_SQRT_HALF = 1.0 / math.sqrt(2.0)


def default_init_(weight: Tensor, scale: float = 1.0) -> Tensor:
    """In-place DDPM initialisation of a dense or convolution weight: uniform with variance
    ``scale / mean(fan_in, fan_out)``; ``scale == 0`` means 1e-10 (as the official code), so
    the layer starts near zero but still receives gradients."""
    scale = 1e-10 if scale == 0 else scale
    receptive = weight[0, 0].numel() if weight.ndim > 2 else 1
    fan_avg = 0.5 * (weight.shape[0] + weight.shape[1]) * receptive
    bound = math.sqrt(3.0 * scale / fan_avg)
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def _ddpm_init(layer: nn.Module, scale: float = 1.0) -> nn.Module:
    """``layer`` with DDPM-initialised weight (:func:`default_init_`) and a zero bias."""
    default_init_(layer.weight, scale)
    nn.init.zeros_(layer.bias)
    return layer


def conv3x3(
    in_ch: int, out_ch: int, *, stride: int = 1, padding: int = 1, init_scale: float = 1.0
) -> nn.Conv2d:
    return _ddpm_init(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding), init_scale)


def conv1x1(in_ch: int, out_ch: int, *, init_scale: float = 1.0) -> nn.Conv2d:
    return _ddpm_init(nn.Conv2d(in_ch, out_ch, 1), init_scale)


def dense(in_features: int, out_features: int) -> nn.Linear:
    return _ddpm_init(nn.Linear(in_features, out_features))


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with ``min(C // 4, 32)`` groups and eps 1e-6 (32 groups for C >= 128)."""
    return nn.GroupNorm(num_groups=max(1, min(channels // 4, 32)), num_channels=channels, eps=1e-6)


def sinusoidal_embedding(t: Tensor, dim: int, max_positions: float = 10_000.0) -> Tensor:
    """Transformer/DDPM sinusoids ``[sin, cos]`` (B, dim) of a ``(B,)`` tensor, frequencies
    ``max_positions ** (-i / (dim/2 - 1))`` for ``i < dim/2`` (odd ``dim``: one zero column)."""
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, device=t.device, dtype=torch.float32)
        * (-math.log(max_positions) / (half - 1))
    )
    arg = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features ``[sin(2π W v), cos(2π W v)]`` with fixed ``W ~ N(0, scale²)``.

    NCSN++ feeds ``v = log σ``. Input ``(B,)``, output ``(B, 2·embedding_size)``.
    """

    def __init__(self, embedding_size: int = 256, scale: float = 16.0) -> None:
        super().__init__()
        self.register_buffer("W", torch.randn(embedding_size) * scale)

    def forward(self, v: Tensor) -> Tensor:
        proj = v[:, None] * self.W[None, :] * (2.0 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual connection.

    ``out = (x + proj(attn(norm(x)))) · r`` where ``r = 1/√2`` if ``skip_rescale`` else 1.
    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int, *, skip_rescale: bool = False, init_scale: float = 0.0):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        for w in self.qkv.weight.detach().chunk(3, dim=0):
            default_init_(w, 0.1)  # each of q, k, v as the official NIN layers (scale 0.1)
        nn.init.zeros_(self.qkv.bias)
        self.proj = conv1x1(channels, channels, init_scale=init_scale)
        self.rescale = _SQRT_HALF if skip_rescale else 1.0

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(2, 3)  # (B, 3, HW, C)
        q, k, v = qkv.unbind(dim=1)
        a = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1))
        a = a.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return (x + self.proj(a)) * self.rescale


def _fir_buffer(module: nn.Module, use_fir: bool, fir_kernel: Sequence[float]) -> None:
    """Register the 2-D FIR kernel as ``module.fir_k2`` (None without FIR; not saved)."""
    k2 = fir.fir_kernel_2d(fir_kernel) if use_fir else None
    module.register_buffer("fir_k2", k2, persistent=False)


def _resample(x: Tensor, up: bool, k2: Tensor | None) -> Tensor:
    """×2 up- (``up``) or downsampling: FIR with kernel ``k2``, else nearest / average pool."""
    if k2 is not None:
        return fir.upsample_2d(x, k2) if up else fir.downsample_2d(x, k2)
    return F.interpolate(x, scale_factor=2.0, mode="nearest") if up else F.avg_pool2d(x, 2)


class _Resample(nn.Module):
    """Stand-alone ×2 resampler, optionally with a 3×3 convolution (fused with FIR)."""

    up: bool

    def __init__(
        self,
        in_ch: int,
        out_ch: int | None = None,
        *,
        with_conv: bool = False,
        fir: bool = False,
        fir_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        out_ch = out_ch or in_ch
        if not with_conv and out_ch != in_ch:
            raise ValueError(
                f"{type(self).__name__} without a convolution keeps the channels: in_ch={in_ch}, "
                f"out_ch={out_ch}; set with_conv=True or out_ch=in_ch."
            )
        self.with_conv, self.fir = with_conv, fir
        self.conv = None
        if with_conv:
            # Downsampling convolves unpadded: strided, or stride 1 before the FIR filter.
            kw = {} if self.up else dict(stride=1 if fir else 2, padding=0)
            self.conv = conv3x3(in_ch, out_ch, **kw)
        _fir_buffer(self, fir, fir_kernel)


class Upsample(_Resample):
    """×2 upsampling: nearest (+3×3 conv) or FIR (+fused 3×3 conv). ``(B, C_in, H, W) ->
    (B, C_out, 2H, 2W)``; without a convolution ``C_out = C_in``."""

    up = True

    def forward(self, x: Tensor) -> Tensor:
        if self.conv is None:
            return _resample(x, True, self.fir_k2)
        if self.fir:
            return fir.upsample_conv_2d(x, self.conv.weight, self.fir_k2, self.conv.bias)
        return self.conv(_resample(x, True, None))


class Downsample(_Resample):
    """×2 downsampling: average pool, "SAME"-padded strided 3×3 conv, FIR, or FIR fused with a
    3×3 conv. ``(B, C_in, H, W) -> (B, C_out, H/2, W/2)``."""

    up = False

    def forward(self, x: Tensor) -> Tensor:
        if self.conv is None:
            return _resample(x, False, self.fir_k2)
        if self.fir:
            return fir.conv_downsample_2d(x, self.conv.weight, self.fir_k2, self.conv.bias)
        # TensorFlow "SAME" padding for a stride-2 3×3 kernel on even sizes: one row/col at the end.
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class _ResnetBlock(nn.Module):
    """GN-SiLU-[resample]-conv, + dense(SiLU(temb)), GN-SiLU-dropout-conv, + skip (a 1×1
    convolution when the channels change or the block resamples, on the resampled input);
    ``skip_rescale`` divides the sum by √2.

    ``(B, C_in, H, W), (B, T) -> (B, C_out, H', W')`` with ``H' = 2H`` (``up``), ``H/2``
    (``down``) or ``H``; resampling is FIR or nearest / average pooling.
    """

    skip_init = 1.0  # DDPM initialises its skip (NIN) layer at scale 0.1

    def __init__(
        self,
        in_ch: int,
        out_ch: int | None = None,
        *,
        temb_dim: int | None = None,
        up: bool = False,
        down: bool = False,
        dropout: float = 0.1,
        fir: bool = False,
        fir_kernel: Sequence[float] = (1, 3, 3, 1),
        skip_rescale: bool = True,
        init_scale: float = 0.0,
    ) -> None:
        super().__init__()
        if up and down:
            raise ValueError(f"{type(self).__name__}: up and down are both True; choose one.")
        out_ch = out_ch or in_ch
        self.up, self.down, self.fir = up, down, fir
        _fir_buffer(self, fir, fir_kernel)
        self.norm0 = group_norm(in_ch)
        self.conv0 = conv3x3(in_ch, out_ch)
        self.dense = dense(temb_dim, out_ch) if temb_dim is not None else None
        self.norm1 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        resamples = up or down
        self.skip = None
        if in_ch != out_ch or resamples:
            self.skip = conv1x1(in_ch, out_ch, init_scale=self.skip_init)
        self.rescale = _SQRT_HALF if skip_rescale else 1.0

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = F.silu(self.norm0(x))
        if self.up or self.down:
            h, x = _resample(h, self.up, self.fir_k2), _resample(x, self.up, self.fir_k2)
        h = self.conv0(h)
        if self.dense is not None and temb is not None:
            h = h + append_dims(self.dense(F.silu(temb)), h.ndim)
        h = self.conv1(self.dropout(F.silu(self.norm1(h))))
        if self.skip is not None:
            x = self.skip(x)
        return (x + h) * self.rescale


class ResnetBlockBigGAN(_ResnetBlock):
    """BigGAN-style residual block of NCSN++/DDPM++, which can resample by 2 inside the block
    (see :class:`_ResnetBlock`)."""


class ResnetBlockDDPM(_ResnetBlock):
    """DDPM residual block: never resamples; no skip rescaling by default."""

    skip_init = 0.1

    def __init__(self, in_ch: int, out_ch: int | None = None, *, skip_rescale: bool = False, **kw):
        super().__init__(in_ch, out_ch, skip_rescale=skip_rescale, **kw)


class Combine(nn.Module):
    """Merge an input-pyramid image into the features: ``conv1x1(x)`` then concat or sum.

    ``(B, C_1, H, W), (B, C_2, H, W) -> (B, C_2 or 2·C_2, H, W)``.
    """

    def __init__(self, dim1: int, dim2: int, *, method: str = "cat") -> None:
        super().__init__()
        if method not in ("cat", "sum"):
            raise ValueError(f"progressive_combine must be 'cat' or 'sum', got {method!r}.")
        self.conv = conv1x1(dim1, dim2)
        self.method = method

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.conv(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y
