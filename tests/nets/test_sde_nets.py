"""NCSN++ / DDPM++ / DDPM: sizes, shapes, validation and a training step."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from scorelab.nets.ddpm import DDPM, DDPMpp
from scorelab.nets.ncsnpp import NCSNpp
from thread_helpers import one_thread  # noqa: F401

# Official score_sde_pytorch CIFAR-10 configs, counted with model.parameters() (this includes
# the 128 frozen Fourier frequencies of NCSN++, a buffer here).
PAPER = {
    "ncsnpp": (lambda: NCSNpp(), 62_758_915),
    "ncsnpp_deep": (lambda: NCSNpp(num_res_blocks=8), 107_587_075),
    "ddpmpp": (lambda: DDPMpp(), 61_804_419),
    "ddpmpp_deep": (lambda: DDPMpp(num_res_blocks=8), 106_632_579),
    "ddpm": (lambda: DDPM(), 35_218_947),
}

SMALL: dict[str, Callable[..., torch.nn.Module]] = {
    "ncsnpp": lambda **kw: NCSNpp(nf=16, num_res_blocks=1, **kw),
    "ncsnpp_deep": lambda **kw: NCSNpp(nf=16, num_res_blocks=2, **kw),
    "ddpmpp": lambda **kw: DDPMpp(nf=16, num_res_blocks=1, **kw),
    "ddpmpp_deep": lambda **kw: DDPMpp(nf=16, num_res_blocks=2, **kw),
    "ddpm": lambda **kw: DDPM(nf=16, num_res_blocks=1, **kw),
}


def cond_for(net: torch.nn.Module, batch: int) -> torch.Tensor:
    """σ in (0.01, 50) for the Fourier embedding, 999·t for the positional one."""
    g = torch.Generator().manual_seed(0)
    u = torch.rand(batch, generator=g)
    if net.embedding_type == "fourier":
        return 0.01 * (5000.0**u)
    return 999.0 * u


def n_params(net: torch.nn.Module) -> int:
    """Trainable parameters plus the frozen Fourier frequencies (a parameter officially)."""
    frozen = net.fourier.W.numel() if net.fourier is not None else 0
    return sum(p.numel() for p in net.parameters()) + frozen


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_parameter_counts(name: str) -> None:
    build, official = PAPER[name]
    net = build()
    # Equal to the official model, and within 0.5% of the paper's rounded figures.
    assert n_params(net) == official
    paper = {
        "ncsnpp": 62.76e6,
        "ncsnpp_deep": 107.6e6,
        "ddpmpp": 61.80e6,
        "ddpmpp_deep": 106.6e6,
        "ddpm": 35.2e6,
    }[name]
    assert abs(n_params(net) - paper) / paper < 0.005


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("size", [32, 64])
def test_output_shape(name: str, size: int) -> None:
    net = SMALL[name](image_size=size, attn_resolutions=(size // 2,)).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = net(x, cond_for(net, 2))
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", list(SMALL))
def test_28_pixels_needs_three_levels(name: str) -> None:
    # 28 is not a multiple of 2**3, so every paper configuration (4 levels) refuses it ...
    with pytest.raises(ValueError, match=r"image_size=28 is not divisible by .*=8"):
        SMALL[name](image_size=28, channels=1)
    # ... while three levels (28 -> 14 -> 7) work, e.g. for MNIST.
    net = SMALL[name](image_size=28, channels=1, ch_mult=(1, 2, 2), attn_resolutions=(14,))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert net.eval()(x, cond_for(net, 2)).shape == x.shape


def test_attention_resolution_must_be_reached() -> None:
    with pytest.raises(ValueError, match=r"attn_resolutions contains 12.*\[32, 16, 8, 4\]"):
        NCSNpp(nf=16, attn_resolutions=(12,))


def test_group_norm_width_and_choices_are_checked() -> None:
    with pytest.raises(ValueError, match="feature width 136"):
        DDPMpp(nf=136)  # min(136 // 4, 32) = 32 groups do not divide 136 channels
    with pytest.raises(ValueError, match="resblock_type=.* is not supported"):
        NCSNpp(nf=16, resblock_type="resnet")
    with pytest.raises(ValueError, match="dropout must be in"):
        NCSNpp(nf=16, dropout=1.0)
    with pytest.raises(TypeError, match=r"DDPM fixes \['resblock_type', 'skip_rescale'\]"):
        DDPM(nf=16, resblock_type="biggan", skip_rescale=True)


def test_input_shape_is_checked() -> None:
    net = SMALL["ddpmpp"]()
    with pytest.raises(ValueError, match="channels=1 and image_size=32"):
        net(torch.randn(1, 1, 32, 32), torch.ones(1))


@pytest.mark.parametrize("name", ["ncsnpp", "ddpm"])
def test_output_starts_near_zero(name: str) -> None:
    # init_scale = 0: the last convolution starts at a 1e-10 variance scale (weights ~1e-6),
    # as in the official code, so the untrained network outputs almost nothing.
    torch.manual_seed(0)
    net = SMALL[name]().eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32), cond_for(net, 2))
    assert 0 < out.abs().max() < 1e-3


@pytest.mark.parametrize(
    "kw",
    [
        dict(progressive="output_skip", progressive_input="input_skip", progressive_combine="cat"),
        dict(progressive="residual", progressive_input="residual"),
        dict(progressive="residual", progressive_input="input_skip", fir=False),
        dict(resblock_type="ddpm", progressive="output_skip", resamp_with_conv=False),
        dict(resblock_type="ddpm", fir=True, progressive="residual"),
        dict(conditional=False),
    ],
)
def test_pyramid_variants(kw: dict) -> None:
    net = NCSNpp(nf=16, num_res_blocks=1, **kw).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = net(x, torch.full((2,), 0.5))
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", list(SMALL))
def test_one_training_step(name: str) -> None:
    torch.manual_seed(0)
    net = SMALL[name](dropout=0.1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, cond = torch.randn(2, 3, 32, 32), cond_for(net, 2)

    def eval_loss() -> float:
        with torch.no_grad():
            return (net.eval()(x, cond) - x).square().mean().item()

    before = eval_loss()
    loss = (net.train()(x, cond) - x).square().mean()
    loss.backward()
    # Every parameter is reached by the gradient (none is dead or detached).
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert all(p.grad.abs().sum() > 0 for p in net.parameters())
    opt.step()
    assert eval_loss() < before


def test_channels_last_matches_contiguous() -> None:
    torch.manual_seed(0)
    net = NCSNpp(nf=16, num_res_blocks=1, init_scale=1.0).eval()
    x = torch.randn(2, 3, 32, 32)
    sigma = torch.tensor([0.1, 10.0])
    with torch.no_grad():
        ref = net(x, sigma)
        net_cl = net.to(memory_format=torch.channels_last)
        out = net_cl(x.to(memory_format=torch.channels_last), sigma)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_fourier_network_depends_on_sigma_only_through_log_sigma_embedding() -> None:
    net = NCSNpp(nf=16, num_res_blocks=1, init_scale=1.0).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a, b = net(x, torch.tensor([1.0])), net(x, torch.tensor([2.0]))
    # Raw network: no 1/σ division, so doubling σ does not halve the output.
    assert not torch.allclose(a, 2 * b, atol=1e-3)
    assert not torch.allclose(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ncsnpp", "ddpmpp"])
def test_paper_size_training_step(name: str) -> None:
    net = PAPER[name][0]().train()
    opt = torch.optim.Adam(net.parameters(), lr=2e-4)
    x = torch.randn(2, 3, 32, 32)
    loss = (net(x, cond_for(net, 2)) - x).square().mean()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


@pytest.mark.slow
def test_torch_compile_matches_eager() -> None:
    net = NCSNpp(nf=16, num_res_blocks=1, init_scale=1.0).eval()
    x, sigma = torch.randn(2, 3, 32, 32), torch.tensor([0.1, 10.0])
    compiled = torch.compile(net, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, sigma), net(x, sigma), atol=1e-4, rtol=1e-4)
