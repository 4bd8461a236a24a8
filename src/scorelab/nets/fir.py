"""FIR resampling by a factor of 2 (StyleGAN2 / NCSN++ style) in plain PyTorch.

All functions follow the semantics of ``upfirdn2d`` (upsample by zero insertion, pad, filter,
keep every ``down``-th sample) with a separable, normalised FIR kernel built from a 1-D kernel
such as ``[1, 3, 3, 1]``. Instead of running one single-channel convolution per feature map
(reshaping to ``(N*C, 1, H, W)`` as the reference implementation does), every filter here is a
single depthwise convolution with ``groups=C`` that already includes the stride, so no output is
computed only to be thrown away. This is one cuDNN/oneDNN call per resampling and works with
``channels_last`` tensors and ``torch.compile``. The filter always runs in float32 (see
:func:`_filter`).

Shapes: ``x`` is ``(B, C, H, W)``; upsampling returns ``(B, C, 2H, 2W)`` and downsampling
``(B, C, H/2, W/2)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def fir_kernel_2d(kernel: Sequence[float]) -> torch.Tensor:
    """``(K, K)`` float32 outer product of 1-D taps (e.g. ``(1, 3, 3, 1)``: even length >= 2,
    non-zero sum) with themselves, normalised to sum to one."""
    k = torch.as_tensor(list(kernel), dtype=torch.float32)
    if k.ndim != 1 or k.numel() < 2 or k.numel() % 2:
        raise ValueError(
            f"fir_kernel must be a 1-D sequence of even length >= 2, got {list(kernel)}; "
            "use e.g. (1, 3, 3, 1) or (1, 1)."
        )
    if float(k.sum()) == 0.0:
        raise ValueError(f"fir_kernel must have a non-zero sum, got {list(kernel)}.")
    k2 = torch.outer(k, k)
    return k2 / k2.sum()


def _filter(
    x: torch.Tensor, k2: torch.Tensor, *, stride: int = 1, padding: int = 0, transpose: bool = False
) -> torch.Tensor:
    """Depthwise FIR filter, run in float32 even for bf16/fp16 input or under autocast.

    Depthwise kernels in reduced precision take slow generic paths on CPU (tens of times slower
    than float32 here), while the filter is a negligible share of the FLOPs; the result is cast
    back to the input dtype.
    """
    dtype = x.dtype
    with torch.autocast(x.device.type, enabled=False):
        xf = x.float()
        w = k2.to(device=x.device, dtype=xf.dtype).expand(xf.shape[1], 1, *k2.shape)
        if transpose:
            y = F.conv_transpose2d(xf, w, stride=stride, padding=padding, groups=xf.shape[1])
        else:
            y = F.conv2d(xf, w, stride=stride, padding=padding, groups=xf.shape[1])
    return y.to(dtype)


def upsample_2d(x: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """FIR upsampling by 2: ``upfirdn2d(x, 4·k, up=2, pad=((K-2+1)//2 + 1, (K-2)//2))``, as
    one depthwise stride-2 ``conv_transpose2d`` (zero insertion then filtering);
    ``k2`` from :func:`fir_kernel_2d`."""
    kk = k2.shape[0]
    # The filter is applied as a true convolution in upfirdn2d; transposed convolution does the
    # same, and the crop of (K - 2) // 2 samples on each side gives exactly 2H outputs.
    return _filter(x, k2 * 4.0, stride=2, padding=(kk - 2) // 2, transpose=True)


def downsample_2d(x: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """FIR downsampling by 2: ``upfirdn2d(x, k, down=2, pad=((K-2+1)//2, (K-2)//2))``, as one
    strided depthwise convolution (the padding is symmetric for even K); H, W even."""
    kk = k2.shape[0]
    # upfirdn2d convolves (flips the kernel); correlation with the flipped kernel is the same.
    return _filter(x, torch.flip(k2, (0, 1)), stride=2, padding=(kk - 2) // 2)


def conv_downsample_2d(
    x: torch.Tensor, weight: torch.Tensor, k2: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Fused "3×3 convolution then FIR downsampling" with a single padding at the start.

    Equals ``conv2d(upfirdn2d(x, k, pad=(p // 2 + p % 2, p // 2)), weight, stride=2)`` with
    ``p = K - 2 + kw - 1``. The FIR filter runs as one depthwise convolution at full resolution
    and the learned convolution runs strided, which costs fewer FLOPs than convolving with a
    pre-combined ``(K + kw - 1)``-tap kernel for the channel widths used here.

    Shapes: x ``(B, C_in, H, W)`` (H, W even), weight ``(C_out, C_in, kw, kw)`` (kw odd), bias
    ``(C_out,)`` or None -> ``(B, C_out, H/2, W/2)``.
    """
    kk, kw = k2.shape[0], weight.shape[-1]
    p = kk - 2 + kw - 1
    pad = ((p + 1) // 2, p // 2)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    x = _filter(x, torch.flip(k2, (0, 1)))
    return F.conv2d(x, weight, bias, stride=2)


def upsample_conv_2d(
    x: torch.Tensor, weight: torch.Tensor, k2: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Fused "FIR upsampling by 2 then 3×3 convolution" with padding only at the end.

    The learned kernel is applied to the zero-inserted input as a stride-2 transposed
    convolution (output ``2H + kw - 2``), then the FIR kernel (gain 4) is applied as a depthwise
    convolution that also crops to ``2H``; this matches the reference fused op, including
    borders. Shapes as :func:`conv_downsample_2d`'s, with output ``(B, C_out, 2H, 2W)``.
    """
    kk, kw = k2.shape[0], weight.shape[-1]
    # conv_transpose2d wants (C_in, C_out, kh, kw); flipping makes it apply `weight` as a
    # correlation kernel on the zero-inserted signal, as an ordinary convolution would.
    wt = torch.flip(weight, (2, 3)).transpose(0, 1)
    x = F.conv_transpose2d(x, wt, stride=2)
    p = kk - 2 - (kw - 1)
    pad0, pad1 = (p + 1) // 2 + 1, p // 2 + 1
    x = F.pad(x, (pad0, pad1, pad0, pad1))
    x = _filter(x, torch.flip(k2 * 4.0, (0, 1)))
    if bias is not None:
        x = x + bias.view(1, -1, 1, 1)
    return x
