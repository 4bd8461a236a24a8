"""``precision=bf16`` for sampling: the network runs under bfloat16 autocast, the sampler's
updates stay float32, and other values are refused before any model is built."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from run_helpers import compose_cfg
from scorelab.lit.build import ConfigError
from scorelab.lit.sampling_model import draw, sampling_dtype
from scorelab.sample import sample


class _Recorder(nn.Module):
    """The exact score of N(0, I) under VE noise, -x / (1 + σ²), through a 1×1 convolution
    whose weight is the identity; records the autocast state and the dtype of what the
    convolution returned."""

    def __init__(self, noise) -> None:
        super().__init__()
        self.noise = noise
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        nn.init.ones_(self.conv.weight)
        self.seen: list[tuple[bool, torch.dtype]] = []

    def forward(self, x, t):
        y = self.conv(x)
        self.seen.append((torch.is_autocast_enabled("cpu"), y.dtype))
        var = 1 + self.noise.sigma(t) ** 2
        return -y / var.view(-1, 1, 1, 1)

    def time_score(self):
        return self.forward


def _sampler():
    from scorelab.lit.build import sampler_from_config

    return sampler_from_config("ode", "schedule.n_steps=20")


def test_bf16_runs_the_network_in_autocast_and_returns_float32():
    from scorelab.sde import VESDE

    noise = VESDE(sigma_min=0.01, sigma_max=10.0)
    out = {}
    for precision in (32, "bf16"):
        model = _Recorder(noise)
        x, nfe, _ = draw(model, _sampler(), (1, 4, 4), 64, 64, seed=0, precision=precision)
        out[precision] = x
        assert x.dtype == torch.float32 and nfe > 0
        want = (True, torch.bfloat16) if precision == "bf16" else (False, torch.float32)
        assert set(model.seen) == {want}
    # Same seed, same start: bf16 moves the samples by bf16 rounding only (3 significant
    # digits per evaluation), not by a different draw.
    diff = (out["bf16"] - out[32]).abs().max().item()
    assert 0 < diff < 0.05 * out[32].abs().max().item()


@pytest.mark.parametrize("bad", ["fp16", "16", "bf32", "64"])
def test_unknown_precision_is_refused(bad):
    with pytest.raises(ConfigError, match=rf"precision={bad} is not one of 32, bf16"):
        sampling_dtype(bad)


def test_sample_entry_point_records_precision_and_refuses_before_building(tmp_path, monkeypatch):
    base = ["model=oracle", "data=gmm", "sde=ve", "sampler=heun", "n_samples=32"]
    cfg = compose_cfg("sample", [*base, "precision=bf16"], tmp_path / "ok")
    sample(cfg)
    info = json.loads((tmp_path / "ok" / "sample_info.json").read_text())
    assert info["precision"] == "bf16"
    cfg = compose_cfg("sample", [*base, "precision=fp16"], tmp_path / "bad")

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before precision was checked")

    monkeypatch.setattr("scorelab.sample.build_sampling_model", no_model)
    with pytest.raises(ConfigError, match="precision=fp16"):
        sample(cfg)
    assert not (tmp_path / "bad" / "sample_info.json").exists()
