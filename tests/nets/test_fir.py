"""FIR resampling equals a direct, loop-over-taps implementation of upfirdn2d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scorelab.nets import fir
from thread_helpers import one_thread  # noqa: F401


def correlate_ref(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Valid cross-correlation, tap by tap: out[n,o,i,j] = Σ x[n,c,i+a,j+b] w[o,c,a,b]."""
    kh, kw = w.shape[-2:]
    ho, wo = x.shape[-2] - kh + 1, x.shape[-1] - kw + 1
    out = x.new_zeros(x.shape[0], w.shape[0], ho, wo)
    for a in range(kh):
        for b in range(kw):
            out += torch.einsum("nchw,oc->nohw", x[..., a : a + ho, b : b + wo], w[:, :, a, b])
    return out


def upfirdn2d_ref(x: torch.Tensor, k: torch.Tensor, up: int, down: int, pad: tuple[int, int]):
    """Per-channel upfirdn2d: insert up-1 zeros, pad, convolve (flipped kernel), keep every
    down-th sample."""
    n, c, h, w = x.shape
    z = x.new_zeros(n, c, h * up, w * up)
    z[..., ::up, ::up] = x
    z = F.pad(z, (pad[0], pad[1], pad[0], pad[1]))
    kf = torch.flip(k, (0, 1))
    out = torch.stack([correlate_ref(z[:, i : i + 1], kf[None, None])[:, 0] for i in range(c)], 1)
    return out[..., ::down, ::down]


KERNELS = [(1, 3, 3, 1), (1, 1), (1, 2, 3, 3, 2, 1)]


def test_kernel_is_normalised_outer_product() -> None:
    k2 = fir.fir_kernel_2d((1, 3, 3, 1))
    assert k2.shape == (4, 4)
    assert torch.allclose(k2.sum(), torch.tensor(1.0))
    assert torch.allclose(k2[0], torch.tensor([1.0, 3, 3, 1]) / 64)


@pytest.mark.parametrize("bad", [(1, 3, 1), (), (1, -1)])
def test_kernel_rejects_bad_taps(bad: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="fir_kernel"):
        fir.fir_kernel_2d(bad)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(
    "op, hw, gain, up, down, lead, out_hw",
    [
        (fir.upsample_2d, (6, 5), 4, 2, 1, 1, (12, 10)),
        (fir.downsample_2d, (8, 6), 1, 1, 2, 0, (4, 3)),
    ],
    ids=["upsample", "downsample"],
)
def test_resampling_matches_reference(kernel, op, hw, gain, up, down, lead, out_hw) -> None:
    """``op`` = upfirdn2d with the kernel times ``gain`` and pads (⌈p/2⌉ + lead, ⌊p/2⌋)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, *hw)
    k2 = fir.fir_kernel_2d(kernel)
    p = k2.shape[0] - 2
    ref = upfirdn2d_ref(x, k2 * gain, up=up, down=down, pad=((p + 1) // 2 + lead, p // 2))
    out = op(x, k2)
    assert out.shape == (2, 3, *out_hw)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)


def test_constant_image_is_preserved_away_from_borders() -> None:
    k2 = fir.fir_kernel_2d((1, 3, 3, 1))
    x = torch.ones(1, 2, 8, 8)
    assert torch.allclose(fir.upsample_2d(x, k2)[..., 2:-2, 2:-2], torch.ones(1, 2, 12, 12))
    assert torch.allclose(fir.downsample_2d(x, k2)[..., 1:-1, 1:-1], torch.ones(1, 2, 2, 2))


def test_conv_downsample_matches_reference() -> None:
    torch.manual_seed(2)
    x, w, b = torch.randn(2, 3, 8, 8), torch.randn(5, 3, 3, 3), torch.randn(5)
    k2 = fir.fir_kernel_2d((1, 3, 3, 1))
    filtered = upfirdn2d_ref(x, k2, up=1, down=1, pad=(2, 2))  # p = (4 - 2) + (3 - 1)
    ref = correlate_ref(filtered, w)[..., ::2, ::2] + b.view(1, -1, 1, 1)
    out = fir.conv_downsample_2d(x, w, k2, b)
    assert out.shape == (2, 5, 4, 4)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_upsample_conv_matches_reference() -> None:
    torch.manual_seed(3)
    x, w, b = torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3), torch.randn(4)
    k2 = fir.fir_kernel_2d((1, 3, 3, 1))
    # Zero-insert (2H - 1 samples), apply w as an nn.Conv2d kernel with "full" padding 2, then
    # the gain-4 FIR with pad 1.
    z = x.new_zeros(2, 3, 9, 9)
    z[..., ::2, ::2] = x
    full = correlate_ref(F.pad(z, (2, 2, 2, 2)), w)
    ref = upfirdn2d_ref(full, k2 * 4, up=1, down=1, pad=(1, 1)) + b.view(1, -1, 1, 1)
    out = fir.upsample_conv_2d(x, w, k2, b)
    assert out.shape == (2, 4, 10, 10)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_channels_last_and_gradients() -> None:
    k2 = fir.fir_kernel_2d((1, 3, 3, 1))
    x = torch.randn(2, 4, 8, 8).to(memory_format=torch.channels_last).requires_grad_(True)
    y = fir.downsample_2d(fir.upsample_2d(x, k2), k2)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    torch.testing.assert_close(y, fir.downsample_2d(fir.upsample_2d(x.contiguous(), k2), k2))


def test_reduced_precision_runs_the_filter_in_float32() -> None:
    k2 = fir.fir_kernel_2d((1, 3, 3, 1))
    x = torch.randn(2, 4, 8, 8)
    for op in (fir.upsample_2d, fir.downsample_2d):
        ref = op(x, k2)
        out = op(x.bfloat16(), k2)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=2e-2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert op(x, k2).dtype == torch.float32  # float32 input stays float32
