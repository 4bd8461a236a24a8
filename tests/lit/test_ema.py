"""EMAModel: AveragedModel's EMA, bit for bit, without per-update host reads."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from scorelab.lit.ema import EMAModel


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 3, 3))


def _perturb(net: nn.Module, k: int) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1 * (k + 1))
        net(torch.randn(4, 3, 8, 8))  # moves BatchNorm's running stats (float and int buffers)


def test_matches_averaged_model_exactly_including_buffers():
    net = _net().train()
    ours = EMAModel(net, 0.9)
    ref = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for k in range(5):
        _perturb(net, k)
        ours.update_parameters(net)
        ref.update_parameters(net)
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert int(ours.n_averaged) == 5
    # The average really moved away from the current weights (decay 0.9 over 5 updates).
    assert not torch.equal(ours.module[0].weight, net[0].weight)


def test_count_is_reread_after_loading_a_state_dict():
    """The host mirror of ``n_averaged`` follows a loaded state: loading a never-updated EMA
    into one that was updated twice makes the next update a copy again."""
    net = _net()
    ema = EMAModel(net, 0.5)
    for k in range(2):
        _perturb(net, k)
        ema.update_parameters(net)
    ema.load_state_dict(EMAModel(_net(), 0.5).state_dict())  # n_averaged = 0
    _perturb(net, 2)
    ema.update_parameters(net)
    assert int(ema.n_averaged) == 1
    for p, q in zip(ema.module.parameters(), net.parameters(), strict=True):
        assert torch.equal(p, q)


def test_first_update_copies_the_weights():
    net = _net()
    ema = EMAModel(net, 0.999)
    _perturb(net, 0)
    ema.update_parameters(net)
    for p, q in zip(ema.module.parameters(), net.parameters(), strict=True):
        assert torch.equal(p, q)
