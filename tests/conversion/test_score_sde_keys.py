"""Official score_sde_pytorch checkpoints load strictly into our networks.

The fixtures list the parameters of the official CIFAR-10 models (NCSN++ cont. VE, DDPM++
cont. VP, DDPM) in ``model.parameters()`` order, read once from the official code.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
import torch

from scorelab.conversion.score_sde import (
    convert_score_sde_checkpoint,
    convert_score_sde_ema,
    convert_score_sde_state_dict,
    official_parameter_layout,
)
from scorelab.nets.ddpm import DDPM, DDPMpp
from scorelab.nets.ncsnpp import NCSNpp
from thread_helpers import one_thread  # noqa: F401

FIXTURES = Path(__file__).parents[1] / "fixtures"
NETS = {"ncsnpp": NCSNpp, "ddpmpp": DDPMpp, "ddpm": DDPM}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"official_{name}_cifar10_keys.json").read_text())


@cache
def fake_checkpoint(name: str) -> dict:
    """A checkpoint shaped like the official one: random small tensors, and large ones filled
    with their index in the parameter list (cheap, and still tells parameters apart)."""
    fx = fixture(name)
    g = torch.Generator().manual_seed(0)
    params = {
        n: torch.randn(*shape, generator=g)
        if torch.Size(shape).numel() <= 2**17
        else torch.full(shape, float(i))
        for i, (n, shape, _) in enumerate(fx["parameters"])
    }
    model = {"module.sigmas": torch.ones(1000)} | {f"module.{n}": t for n, t in params.items()}
    shadow = [params[n] + 1.0 for n, _, trainable in fx["parameters"] if trainable]
    ema = {"decay": 0.999, "num_updates": 10, "shadow_params": shadow}
    return {"model": model, "ema": ema, "optimizer": {}, "step": 10}


@pytest.fixture(scope="module")
def nets() -> dict[str, torch.nn.Module]:
    return {name: cls() for name, cls in NETS.items()}


@pytest.mark.parametrize("name", list(NETS))
def test_layout_matches_official_parameters(name: str, nets: dict) -> None:
    fx = fixture(name)
    layout = official_parameter_layout(nets[name])
    assert [[p.name, list(p.shape), p.trainable] for p in layout] == fx["parameters"]
    assert sum(torch.Size(p.shape).numel() for p in layout) == fx["num_parameters"]


@pytest.mark.parametrize("name", list(NETS))
def test_model_state_dict_loads_strictly(name: str, nets: dict) -> None:
    net = nets[name]
    ckpt = fake_checkpoint(name)
    ours = convert_score_sde_state_dict(ckpt["model"], net)
    net.load_state_dict(ours, strict=True)
    # Spot-check the layout changes: a copied conv, a transposed NIN, the stacked q/k/v.
    model = ckpt["model"]
    torch.testing.assert_close(
        net.conv_in.weight,
        model["module.all_modules.3.weight"]
        if name == "ncsnpp"
        else model["module.all_modules.2.weight"],
    )
    attn = next(p for p in official_parameter_layout(net) if p.name.endswith("NIN_1.W"))
    prefix = attn.name.rsplit(".", 2)[0]
    w_k = model[f"module.{prefix}.NIN_1.W"]  # (in, out)
    c = w_k.shape[0]
    qkv = dict(net.named_parameters())[attn.ours]
    torch.testing.assert_close(qkv[c : 2 * c, :, 0, 0], w_k.t())


def _rule(name: str, names: set[str]) -> tuple[str, int]:
    """How the official tensor ``name`` must appear in our state dict, from the official naming
    alone: an attention block (the one with a NIN_3) has q, k, v in NIN_0, NIN_1, NIN_2, which
    become chunks 0, 1, 2 of one fused qkv tensor; any other NIN weight W is (in, out) and
    becomes a 1x1 convolution (out, in, 1, 1); everything else is copied unchanged."""
    prefix, layer, _ = name.rsplit(".", 2)
    if layer in ("NIN_0", "NIN_1", "NIN_2") and f"{prefix}.NIN_3.W" in names:
        return "chunk", int(layer[-1])
    if name.endswith(".W") and layer.startswith("NIN_"):
        return "nin", -1
    return "copy", -1


def _expected_tensor(ours: torch.Tensor, rule: tuple[str, int]) -> torch.Tensor:
    """The part of our tensor that holds one official tensor, in the official layout."""
    kind, i = rule
    if kind == "copy":
        return ours
    if kind == "nin":
        assert ours.shape[2:] == (1, 1)
        return ours[:, :, 0, 0].t()
    c = ours.shape[0] // 3
    part = ours[i * c : (i + 1) * c]
    return part[:, :, 0, 0].t() if part.ndim == 4 else part


def _assert_every_tensor_from_its_source(
    name: str, net: torch.nn.Module, ours: dict[str, torch.Tensor], source: dict[str, torch.Tensor]
) -> None:
    """Each official tensor (fixture order, transform from its name) equals its place in ours,
    and together they fill every entry of ours exactly (sizes add up, qkv in three parts)."""
    fx = fixture(name)
    names = {n for n, _, _ in fx["parameters"]}
    layout = {p.name: p.ours for p in official_parameter_layout(net)}
    filled: dict[str, int] = {}
    for n, _, _ in fx["parameters"]:
        rule = _rule(n, names)
        got = _expected_tensor(ours[layout[n]], rule)
        assert torch.equal(got, source[n]), f"{n} -> {layout[n]} ({rule[0]})"
        filled[layout[n]] = filled.get(layout[n], 0) + source[n].numel()
    assert filled == {k: v.numel() for k, v in ours.items()}
    # Every attention's three projections: q, k and v each checked above, none shared.
    n_attn = sum(n.endswith("NIN_3.W") for n in names)
    assert sum(k.endswith("qkv.weight") for k in ours) == n_attn


@pytest.mark.parametrize("name", list(NETS))
def test_every_tensor_is_its_source_transformed(name: str, nets: dict) -> None:
    """Raw weights and EMA weights, tensor by tensor: copies, NIN transposes, all of q, k, v."""
    ckpt = fake_checkpoint(name)
    model = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}
    raw = convert_score_sde_checkpoint(ckpt, nets[name], use_ema=False)
    _assert_every_tensor_from_its_source(name, nets[name], raw, model)
    # The EMA: shadow_params[i] is the i-th trainable parameter in the official order (the
    # fixture's); the frozen ones (NCSN++'s Fourier W) come from 'model'.
    shadow = iter(ckpt["ema"]["shadow_params"])
    ema_source = {
        n: next(shadow) if trainable else model[n]
        for n, _, trainable in fixture(name)["parameters"]
    }
    assert next(shadow, None) is None
    ema = convert_score_sde_checkpoint(ckpt, nets[name], use_ema=True)
    _assert_every_tensor_from_its_source(name, nets[name], ema, ema_source)


def test_ema_shadow_params_follow_parameter_order(nets: dict) -> None:
    net = nets["ncsnpp"]
    ckpt = fake_checkpoint("ncsnpp")
    ours = convert_score_sde_checkpoint(ckpt, net, use_ema=True)
    net.load_state_dict(ours, strict=True)
    model = ckpt["model"]
    # Trainable weights come from the EMA (model + 1 here); the frozen Fourier W from 'model'.
    torch.testing.assert_close(net.conv_out.bias, model[f"module.{_last('ncsnpp')}"] + 1.0)
    torch.testing.assert_close(net.fourier.W, model["module.all_modules.0.W"])
    with pytest.raises(ValueError, match="official_model_sd"):
        convert_score_sde_ema(ckpt["ema"]["shadow_params"], net)
    with pytest.raises(ValueError, match="shadow_params has 3 tensors"):
        convert_score_sde_ema(ckpt["ema"]["shadow_params"][:3], net, official_model_sd=model)


def test_ema_without_frozen_parameters(nets: dict) -> None:
    net = nets["ddpmpp"]
    shadow = fake_checkpoint("ddpmpp")["ema"]["shadow_params"]
    net.load_state_dict(convert_score_sde_ema(shadow, net), strict=True)


def _last(name: str) -> str:
    return fixture(name)["parameters"][-1][0]


def test_mismatches_are_reported(nets: dict) -> None:
    net = nets["ddpm"]
    model = dict(fake_checkpoint("ddpm")["model"])
    dropped = next(k for k in model if k.endswith("NIN_0.W"))  # a DDPM block's 1x1 skip
    del model[dropped]
    model["module.all_modules.99.weight"] = torch.zeros(1)
    model["module.all_modules.2.weight"] = torch.zeros(128, 3, 5, 5)
    with pytest.raises(ValueError) as err:
        convert_score_sde_state_dict(model, net)
    msg = str(err.value)
    assert dropped.removeprefix("module.") in msg and "all_modules.99.weight" in msg
    assert "(128, 3, 5, 5) != expected (128, 3, 3, 3)" in msg


def test_wrong_architecture_is_refused() -> None:
    ckpt = fake_checkpoint("ddpmpp")
    with pytest.raises(ValueError, match="missing keys"):
        convert_score_sde_state_dict(ckpt["model"], DDPMpp(num_res_blocks=2))
