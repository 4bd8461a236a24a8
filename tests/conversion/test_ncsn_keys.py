"""Official NCSN / NCSNv2 checkpoint layouts map one-to-one onto our RefineNets.

The fixtures list the parameter names and shapes of the official CIFAR-10 networks (generated
once from ermongroup/ncsn and ermongroup/ncsnv2); a fake checkpoint with random tensors of those
shapes must convert and load with strict=True, tensor for tensor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scorelab.conversion.ncsn import (
    convert_ncsn_state_dict,
    convert_ncsnv2_checkpoint,
    convert_ncsnv2_ema_state_dict,
    convert_ncsnv2_state_dict,
    official_key_to_scorelab,
    official_sigmas,
    strip_prefix,
)
from scorelab.nets.normalization import CondInstanceNorm2dPlus
from scorelab.nets.refinenet import NCSN, NCSNv2

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def load_fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def fake_checkpoint(fixture: dict, prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Random tensors with the official names (DataParallel prefix) and shapes."""
    g = torch.Generator().manual_seed(0)
    entries = fixture["buffers"] + fixture["parameters"]
    return {prefix + e[0]: torch.randn(*e[1], generator=g) for e in entries}


@pytest.fixture(scope="module")
def ncsn_case():
    fx = load_fixture("official_ncsn_cifar10_keys.json")
    cfg = fx["config"]
    net = NCSN(cfg["channels"], cfg["image_size"], cfg["ngf"], cfg["num_classes"])
    return fx, net, fake_checkpoint(fx)


@pytest.fixture(scope="module")
def ncsnv2_case():
    fx = load_fixture("official_ncsnv2_cifar10_keys.json")
    cfg = fx["config"]
    net = NCSNv2(cfg["channels"], cfg["image_size"], cfg["ngf"])
    return fx, net, fake_checkpoint(fx)


def test_fixture_sizes_match_our_networks(ncsn_case, ncsnv2_case):
    for fx, net, _ in (ncsn_case, ncsnv2_case):
        counted = sum(torch.Size(shape).numel() for _, shape, _ in fx["parameters"])
        assert counted == fx["num_parameters"]
        assert sum(p.numel() for p in net.parameters()) == fx["num_parameters"]


def test_ncsn_checkpoint_loads_strictly_tensor_for_tensor(ncsn_case):
    fx, net, official = ncsn_case
    ours = convert_ncsn_state_dict(official, net)
    net.load_state_dict(ours, strict=True)
    # A bijection: every official tensor lands in exactly one of our entries, unchanged.
    assert len(ours) == len(official)
    assert {id(v) for v in ours.values()} == {id(v) for v in official.values()}
    assert torch.equal(net.stem.weight, official["module.begin_conv.weight"])
    assert torch.equal(
        net.decoder[3].out.convs[5].weight,
        official["module.refine4.output_convs.3_2_conv.weight"],
    )


def test_ncsnv2_model_and_ema_states_load_strictly(ncsnv2_case):
    fx, net, official = ncsnv2_case
    ours = convert_ncsnv2_state_dict(official, net)
    net.load_state_dict(ours, strict=True)
    assert len(ours) == len(official) - 1  # the sigmas buffer is dropped
    torch.testing.assert_close(official_sigmas(official), official["module.sigmas"])
    # The EMA shadow holds the parameters only, with no DataParallel prefix.
    ema = {k[len("module.") :]: v + 1 for k, v in official.items() if k != "module.sigmas"}
    ours_ema = convert_ncsnv2_ema_state_dict(ema, net)
    net.load_state_dict(ours_ema, strict=True)
    assert torch.equal(net.out_norm.weight, ema["normalizer.gamma"])
    assert torch.equal(net.out_norm.bias, ema["normalizer.beta"])
    # A checkpoint list picks the EMA entry by default and the raw weights on request.
    states = [official, {}, 10, 1000, ema]
    assert convert_ncsnv2_checkpoint(states, net)["stem.bias"] is ema["begin_conv.bias"]
    raw = convert_ncsnv2_checkpoint(states, net, ema=False)["stem.bias"]
    assert raw is official["module.begin_conv.bias"]
    with pytest.raises(ValueError, match="no EMA state"):
        convert_ncsnv2_checkpoint(states[:4], net)


@pytest.mark.parametrize(
    "official, ours",
    [
        ("res2.0.conv2.conv.weight", "encoder.1.0.conv2.weight"),
        ("res2.0.shortcut.conv.bias", "encoder.1.0.skip.bias"),
        ("res3.0.shortcut.weight", "encoder.2.0.skip.weight"),
        ("res4.1.normalize1.embed.weight", "encoder.3.1.norm1.embedding.weight"),
        ("refine3.adapt_convs.1.2_1_conv.weight", "decoder.2.adapt.1.convs.2.weight"),
        ("refine2.msf.norms.0.embed.weight", "decoder.1.fuse.norms.0.embedding.weight"),
        ("refine1.crp.convs.1.weight", "decoder.0.pool.convs.1.weight"),
        ("normalizer.gamma", "out_norm.weight"),
        ("res1.0.normalize2.alpha", "encoder.0.0.norm2.alpha"),
    ],
)
def test_key_renaming_examples(official, ours):
    assert official_key_to_scorelab(official, n_refine=4) == ours


def test_strip_prefix_only_strips_leading_prefix():
    sd = {"module.a": torch.zeros(1), "b.module.c": torch.zeros(1)}
    assert list(strip_prefix(sd)) == ["a", "b.module.c"]


def test_refuses_missing_and_unexpected_keys(ncsn_case):
    _, net, official = ncsn_case
    broken = dict(official)
    del broken["module.refine2.crp.convs.0.weight"]
    broken["module.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        convert_ncsn_state_dict(broken, net)
    msg = str(err.value)
    assert "missing 1: decoder.1.pool.convs.0.weight" in msg
    assert "unexpected 1: extra.weight" in msg


def test_refuses_shape_mismatch_and_names_the_fix(ncsn_case):
    _, _, official = ncsn_case
    small = NCSN(channels=3, image_size=32, ngf=128, num_classes=5)  # L=5, checkpoint has L=10
    with pytest.raises(ValueError) as err:
        convert_ncsn_state_dict(official, small)
    msg = str(err.value)
    # Exactly the noise-level tables differ; convolutions do not depend on L.
    n_tables = sum(isinstance(m, CondInstanceNorm2dPlus) for m in small.modules())
    assert f"shape mismatches {n_tables}:" in msg
    assert "missing" not in msg and "unexpected" not in msg
    first = "decoder.0.adapt.0.norms.0.embedding.weight: checkpoint (10, 768) vs model (5, 768)"
    assert first in msg
    assert "number of noise levels" in msg


def test_ncsnv2_checkpoint_does_not_fit_ncsn(ncsnv2_case, ncsn_case):
    _, _, official_v2 = ncsnv2_case
    _, ncsn, _ = ncsn_case
    with pytest.raises(ValueError, match="missing"):
        convert_ncsn_state_dict(official_v2, ncsn)
    with pytest.raises(ValueError, match="no 'sigmas' buffer"):
        official_sigmas({"module.begin_conv.weight": torch.zeros(1)})
