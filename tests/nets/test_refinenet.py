"""NCSN / NCSNv2 RefineNets: sizes, shapes, conditioning, one training step, bad arguments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from run_helpers import adam_step_trains_all, n_params
from scorelab.nets.normalization import CondInstanceNorm2dPlus, InstanceNorm2dPlus
from scorelab.nets.refinenet import NCSN, NCSNv2, NCSNv2Deeper


# Counted from the official classes (ermongroup/ncsn CondRefineNetDilated, ermongroup/ncsnv2
# NCSNv2) built with the papers' configurations; the papers quote 30.1M, 7.6M and 29.7M, which
# are these counts rounded to 0.1M (7.64M is 0.5% above 7.6M).
@pytest.mark.parametrize(
    "make, official, paper",
    [
        (lambda: NCSN(channels=3, image_size=32, ngf=128, num_classes=10), 30_117_635, 30.1),
        (lambda: NCSN(channels=1, image_size=28, ngf=64, num_classes=10), 7_638_657, 7.6),
        (lambda: NCSNv2(channels=3, image_size=32, ngf=128), 29_694_083, 29.7),
    ],
    ids=["ncsn-cifar10", "ncsn-mnist", "ncsnv2-cifar10"],
)
def test_parameter_count_matches_official(make, official, paper):
    n = n_params(make())
    assert n == official
    assert round(n / 1e6, 1) == paper


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("cls", [NCSN, NCSNv2, NCSNv2Deeper])
def test_output_shape(cls, size):
    torch.manual_seed(0)
    kw = {"num_classes": 5} if cls is NCSN else {}
    net = cls(channels=3, image_size=size, ngf=4, **kw)
    x = torch.rand(2, 3, size, size)
    out = net(x, torch.tensor([0, 4]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_ncsn_depends_on_index_and_ncsnv2_ignores_cond():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 28, 28).expand(2, -1, -1, -1)
    ncsn = NCSN(channels=1, image_size=28, ngf=8, num_classes=10)
    with torch.no_grad():  # give each level its own table row
        for m in ncsn.modules():
            if isinstance(m, CondInstanceNorm2dPlus):
                m.embedding.weight.normal_(1.0, 0.3)
        out = ncsn(x, torch.tensor([0, 9]))
        assert not torch.allclose(out[0], out[1], atol=1e-4)
        same = ncsn(x, torch.tensor([3, 3]))
        torch.testing.assert_close(same[0], same[1])
        v2 = NCSNv2(channels=1, image_size=28, ngf=8)
        torch.testing.assert_close(v2(x, torch.tensor([0, 9])), v2(x, None))


def test_rescale_input_is_the_map_2x_minus_1():
    torch.manual_seed(0)
    a = NCSN(channels=1, image_size=28, ngf=8, num_classes=3, rescale_input=True)
    b = NCSN(channels=1, image_size=28, ngf=8, num_classes=3, rescale_input=False)
    b.load_state_dict(a.state_dict())
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([0, 2])
    with torch.no_grad():
        torch.testing.assert_close(a(x, y), b(2 * x - 1, y))


def test_instance_norm_plus_restores_standardised_channel_means():
    torch.manual_seed(0)
    norm = InstanceNorm2dPlus(6)
    with torch.no_grad():
        norm.weight.fill_(1.0)
        norm.bias.zero_()
    x = torch.randn(3, 6, 5, 5) + torch.arange(6.0)[:, None, None]
    out = norm(x)
    means = x.mean(dim=(2, 3))
    expected = (means - means.mean(1, keepdim=True)) / (means.var(1, keepdim=True) + 1e-5).sqrt()
    # IN(x) has zero spatial mean, so the output's channel means are α · standardised means ...
    torch.testing.assert_close(out.mean(dim=(2, 3)), expected * norm.alpha, atol=1e-5, rtol=1e-5)
    # ... and once those are removed what is left is plain instance normalisation.
    rest = out - (expected * norm.alpha)[..., None, None]
    torch.testing.assert_close(rest, F.instance_norm(x), atol=1e-5, rtol=1e-5)


def test_cond_instance_norm_plus_uses_the_row_of_each_index():
    torch.manual_seed(0)
    cond = CondInstanceNorm2dPlus(4, num_classes=3)
    plain = InstanceNorm2dPlus(4)
    with torch.no_grad():
        cond.embedding.weight.normal_()
        gamma, alpha, beta = cond.embedding.weight[2].chunk(3)
        plain.weight.copy_(gamma)
        plain.alpha.copy_(alpha)
        plain.bias.copy_(beta)
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(cond(x, torch.tensor([2, 2])), plain(x))


@pytest.mark.parametrize("cls", [NCSN, NCSNv2])
def test_one_adam_step_trains_every_parameter(cls):
    torch.manual_seed(0)
    kw = {"num_classes": 4} if cls is NCSN else {}
    net = cls(channels=1, image_size=28, ngf=8, **kw)
    grads = adam_step_trains_all(net, torch.rand(2, 1, 28, 28), torch.tensor([1, 3]))
    for name, grad in grads.items():
        if name.endswith("embedding.weight"):
            # Only the table rows of the indices in the batch receive a gradient.
            used = grad.abs().sum(dim=1) > 0
            assert used.tolist() == [False, True, False, True], name


def test_ncsn_rejects_float_conditioning():
    net = NCSN(channels=1, image_size=28, ngf=4, num_classes=3)
    with pytest.raises(ValueError, match="long tensor"):
        net(torch.rand(1, 1, 28, 28), torch.tensor([0.5]))


@pytest.mark.parametrize(
    "cls, size, factor",
    [(NCSN, 31, 2), (NCSNv2, 6, 2), (NCSNv2Deeper, 30, 4), (NCSNv2Deeper, 12, 4)],
)
def test_bad_image_size_names_size_and_factor(cls, size, factor):
    with pytest.raises(ValueError, match=rf"image_size={size} must be a multiple of {factor}"):
        cls(channels=3, image_size=size, ngf=4)


@pytest.mark.parametrize("channels", [0, -1, 2.5])
def test_bad_channels(channels):
    with pytest.raises(ValueError, match=rf"channels={channels}"):
        NCSN(channels=channels, image_size=32, ngf=4, num_classes=2)


def test_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes=0"):
        NCSN(channels=3, image_size=32, ngf=4, num_classes=0)
