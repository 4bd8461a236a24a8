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


@pytest.fixture(autouse=True)
def one_thread():
    """Copies of 60M-parameter dicts run faster on one thread of a loaded 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
