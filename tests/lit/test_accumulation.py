"""Gradient accumulation: k batches of B/k give the optimizer step of one batch of B."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from run_helpers import TOY_FAST, bare_trainer, compose_cfg
from scorelab.lit.build import build_module


class FixedNoiseLoss:
    """A deterministic batch-mean loss (no random noise), so runs can be compared exactly."""

    def __call__(self, score_fn, x):
        noise = torch.full((x.shape[0],), 0.5)
        per = (score_fn(x, noise) + x).square().sum(dim=1)
        return SimpleNamespace(loss=per.mean(), per_sample=per, noise=noise)


def _train(tmp_path, batch: int, k: int, steps: int):
    overrides = [*TOY_FAST, f"module.accumulate_grad_batches={k}", "module.grad_clip=0"]
    cfg = compose_cfg("train", overrides, tmp_path)
    torch.manual_seed(0)
    module = build_module(cfg)
    module.loss_fn = FixedNoiseLoss()
    # Plain SGD: its step is proportional to the gradient, so a wrongly scaled sum would show
    # (Adam's normalised step would hide a factor of k).
    module.optimizer_factory = lambda params: torch.optim.SGD(params, lr=0.05)
    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    loader = DataLoader(TensorDataset(data), batch_size=batch, shuffle=False)
    trainer = bare_trainer(steps)
    trainer.fit(module, train_dataloaders=loader)
    return module, trainer


def _params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in [*module.model.parameters(), *module.ema.parameters()]]


def test_two_half_batches_equal_one_full_batch(tmp_path):
    full, t_full = _train(tmp_path / "a", batch=8, k=1, steps=3)
    acc, t_acc = _train(tmp_path / "b", batch=4, k=2, steps=3)
    assert t_full.global_step == t_acc.global_step == 3  # max_steps counts optimizer steps
    assert int(acc.ema.n_averaged) == 3
    for p, q in zip(_params(full), _params(acc), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)
    # Without accumulation the same half batches give different weights: the check above
    # depends on the accumulation, not on the weights barely moving.
    half, _ = _train(tmp_path / "c", batch=4, k=1, steps=3)
    diff = max((p - q).abs().max().item() for p, q in zip(_params(full), _params(half)))
    assert diff > 1e-4


@pytest.mark.parametrize("bad", [0, -2])
def test_accumulation_must_be_a_positive_integer(tmp_path, bad):
    cfg = compose_cfg("train", [*TOY_FAST, f"module.accumulate_grad_batches={bad}"], tmp_path)
    with pytest.raises(
        ValueError, match=f"accumulate_grad_batches must be an integer >= 1, got {bad}"
    ):
        build_module(cfg)
