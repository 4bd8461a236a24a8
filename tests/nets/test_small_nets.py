"""MLP, UNetSmall and the conditioning embeddings: shapes, sizes, training, compile, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from run_helpers import adam_step_trains_all, n_params
from scorelab.nets.mlp import MLP
from scorelab.nets.noise_embedding import NoiseEmbedding
from scorelab.nets.unet_small import UNetSmall

# ---------------------------------------------------------------- embeddings


@pytest.mark.parametrize("features", ["sinusoidal", "fourier"])
def test_continuous_embedding_is_sin_cos_pairs(features):
    torch.manual_seed(0)
    emb = NoiseEmbedding("sigma", 16, features=features)
    out = emb(torch.tensor([0.01, 1.0, 50.0]))
    assert out.shape == (3, 16)
    # Each frequency contributes sin² + cos² = 1.
    torch.testing.assert_close(out.square().sum(1), torch.full((3,), 8.0))


def test_sigma_embedding_is_time_embedding_of_log_sigma():
    sig = NoiseEmbedding("sigma", 8, input_scale=3.0)
    tim = NoiseEmbedding("time", 8, input_scale=3.0)
    s = torch.tensor([0.1, 2.0])
    torch.testing.assert_close(sig(s), tim(torch.log(s)))
    # log σ = 0 gives sin 0 = 0 and cos 0 = 1.
    torch.testing.assert_close(sig(torch.ones(1)), torch.tensor([[0.0] * 4 + [1.0] * 4]))


def test_index_embedding_needs_long_indices_and_num_classes():
    with pytest.raises(ValueError, match="num_classes=None"):
        NoiseEmbedding("index", 8)
    emb = NoiseEmbedding("index", 8, num_classes=4)
    assert emb(torch.tensor([0, 3])).shape == (2, 8)
    with pytest.raises(ValueError, match="long tensor"):
        emb(torch.tensor([0.5]))


# ---------------------------------------------------------------- MLP


@pytest.mark.parametrize("combine", ["concat", "add"])
@pytest.mark.parametrize(
    "embedding, cond",
    [
        ("sigma", torch.tensor([0.1, 1.0, 10.0])),
        ("time", torch.tensor([0.0, 0.5, 1.0])),
        ("index", torch.tensor([0, 2, 4])),
        ("none", None),
    ],
)
def test_mlp_shapes_and_conditioning(embedding, cond, combine):
    torch.manual_seed(0)
    net = MLP(dim=3, hidden=16, n_layers=2, embedding=embedding, num_classes=5, combine=combine)
    x = torch.randn(1, 3).expand(3, -1)
    out = net(x, cond)
    assert out.shape == (3, 3)
    if embedding == "none":
        assert torch.allclose(out[0], out[1]) and torch.allclose(out[1], out[2])
    else:  # same x, different noise levels -> different outputs
        assert not torch.allclose(out[0], out[1])


def test_mlp_parameter_count_formula():
    d, h, n, e = 2, 128, 3, 32
    net = MLP(dim=d, hidden=h, n_layers=n, embed_dim=e, combine="concat")
    assert n_params(net) == (d + e) * h + h + (n - 1) * (h * h + h) + h * d + d
    net = MLP(dim=d, hidden=h, n_layers=n, embed_dim=e, combine="add")
    assert n_params(net) == d * h + h + (n - 1) * (h * h + h) + n * (e * h + h) + h * d + d


def test_mlp_train_step():
    torch.manual_seed(0)
    net = MLP(dim=2, activation="silu")
    adam_step_trains_all(net, torch.randn(2, 2), torch.tensor([0.5, 2.0]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"activation": "gelu2"}, "activation='gelu2'"),
        ({"embedding": "noise"}, "embedding='noise'"),
        ({"combine": "mul"}, "combine='mul'"),
        ({"hidden": 0}, "hidden=0"),
        ({"embed_dim": 7}, "dim=7"),
    ],
)
def test_mlp_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLP(dim=2, **kwargs)


# ---------------------------------------------------------------- UNetSmall


def test_unet_small_size_and_cost():
    net = UNetSmall(channels=1, image_size=28)
    assert 0.5e6 <= n_params(net) <= 2e6
    # CPU budget: forward + backward of one 28x28 image stays under 0.5 GFLOP.
    with FlopCounterMode(display=False) as counter:
        net(torch.randn(1, 1, 28, 28), torch.ones(1)).sum().backward()
    assert counter.get_total_flops() < 0.5e9


@pytest.mark.parametrize(
    "size, embedding", [(28, "sigma"), (32, "time"), (64, "index"), (28, "index")]
)
def test_unet_small_shapes(size, embedding):
    torch.manual_seed(0)
    net = UNetSmall(channels=3, image_size=size, ch=8, embedding=embedding, num_classes=4)
    x = torch.randn(2, 3, size, size)
    cond = torch.tensor([0, 3]) if embedding == "index" else torch.tensor([0.2, 0.9])
    out = net(x, cond)
    assert out.shape == x.shape
    # Same image at two noise levels gives two different outputs.
    out2 = net(x[:1].expand(2, -1, -1, -1), cond)
    assert not torch.allclose(out2[0], out2[1])


def test_unet_small_unconditional_ignores_cond():
    torch.manual_seed(0)
    net = UNetSmall(channels=1, image_size=28, ch=8, embedding="none")
    x = torch.randn(1, 1, 28, 28).expand(2, -1, -1, -1)
    out = net(x, torch.tensor([0.1, 9.0]))
    torch.testing.assert_close(out[0], out[1])
    torch.testing.assert_close(net(x), out)


def test_unet_small_train_step():
    torch.manual_seed(0)
    net = UNetSmall(channels=1, image_size=28, ch=8)
    adam_step_trains_all(net, torch.randn(2, 1, 28, 28), torch.tensor([0.1, 5.0]))


def test_unet_small_channels_last_matches_contiguous():
    torch.manual_seed(0)
    net = UNetSmall(channels=1, image_size=28, ch=8)
    x, s = torch.randn(2, 1, 28, 28), torch.tensor([0.1, 5.0])
    with torch.no_grad():
        ref = net(x, s)
        net_cl = net.to(memory_format=torch.channels_last)
        out = net_cl(x.contiguous(memory_format=torch.channels_last), s)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # torch.compile's first call takes minutes on two shared cores
def test_unet_small_compiled_matches_eager():
    torch.manual_seed(0)
    net = UNetSmall(channels=1, image_size=28, ch=8).eval()
    x, s = torch.randn(2, 1, 28, 28), torch.tensor([0.1, 5.0])
    compiled = torch.compile(net)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, s), net(x, s), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": 30}, r"image_size=30 must be a positive multiple of 4"),
        (
            {"image_size": 28, "ch_mult": (1, 2, 2, 2)},
            r"image_size=28 must be a positive multiple of 8",
        ),
        ({"channels": 0}, "channels=0"),
        ({"embedding": "index"}, "num_classes=None"),
        ({"embedding": "sigmas"}, "embedding='sigmas'"),
        ({"ch": 12, "groups": 8}, "groups=8"),
    ],
)
def test_unet_small_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNetSmall(**kwargs)


def test_sinusoidal_frequencies_are_geometric():
    emb = NoiseEmbedding("time", 8)
    ratios = emb.freqs[1:] / emb.freqs[:-1]
    torch.testing.assert_close(ratios, torch.full((3,), math.exp(-math.log(10_000.0) / 4)))
