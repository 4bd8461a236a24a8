"""module.nonfinite: ``skip`` leaves optimizer, LR schedule and EMA bit-identical and counts the
step; ``stop`` writes a debug checkpoint and the offending batch, then stops with one line."""

from __future__ import annotations

import copy
import math
import re
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from reliability_helpers import compose_train, same_state

import scorelab.train
from run_helpers import bare_trainer
from scorelab.lit.build import build_datamodule, build_module
from scorelab.lit.module import NonFiniteLossError
from scorelab.train import train

BAD_STEP = 3  # the 4th training batch is poisoned


class PoisonBatch(L.Callback):
    """Put a NaN into training batch number ``k`` (a corrupt data point), or with ``onwards``
    into every batch from ``k`` on (a data set gone bad)."""

    def __init__(self, k: int, onwards: bool = False) -> None:
        self.k, self.onwards, self.seen = k, onwards, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.seen == self.k or (self.onwards and self.seen > self.k):
            batch[0, 0] = float("nan")
        self.seen += 1


def train_poisoned(monkeypatch: pytest.MonkeyPatch, poison: L.Callback, cfg) -> None:
    """``train(cfg)`` with ``poison`` among its callbacks."""
    real = scorelab.train.build_callbacks
    monkeypatch.setattr(scorelab.train, "build_callbacks", lambda cfg: [*real(cfg), poison])
    train(cfg)


def poison_loss(module, k: int) -> None:
    """Make the loss of training call number ``k`` NaN (an overflow inside the objective)."""
    real, calls = module.loss_fn, [0]

    def loss_fn(score_fn, x):
        out = real(score_fn, x)
        if score_fn is module and calls[0] == k:  # training calls pass the module itself
            out.loss = out.loss * float("nan")
        calls[0] += score_fn is module
        return out

    module.loss_fn = loss_fn


def _snapshot(module) -> dict:
    opt = module.trainer.optimizers[0]
    sched = module.trainer.lr_scheduler_configs[0].scheduler
    return copy.deepcopy(
        {
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "ema": module.ema.state_dict(),
            "model": module.model.state_dict(),
        }
    )


def poison_gradient(module, k: int) -> None:
    """Make one weight's gradient inf on backward pass number ``k`` while the loss stays finite
    (an overflow in the backward pass only)."""
    calls = [0]
    param = next(module.model.parameters())

    def hook(grad: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return grad * float("inf") if calls[0] == k + 1 else grad

    param.register_hook(hook)


class StateAroundBatches(L.Callback):
    """Snapshots of optimizer, scheduler, EMA and weights before and after every batch."""

    def __init__(self) -> None:
        self.before, self.after, self.skipped, self.losses = [], [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.before.append(_snapshot(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after.append(_snapshot(pl_module))
        self.skipped.append(int(pl_module.skipped_steps))
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))


@pytest.mark.parametrize("where", ["data", "loss", "gradient"])
def test_skip_leaves_optimizer_schedule_and_ema_bit_identical(tmp_path: Path, where: str) -> None:
    cfg = compose_train(tmp_path, ["module.nonfinite=skip", "module.warmup_steps=10"], steps=6)
    module, dm = build_module(cfg), build_datamodule(cfg)
    record = StateAroundBatches()
    callbacks = [record, PoisonBatch(BAD_STEP)] if where == "data" else [record]
    if where == "loss":
        poison_loss(module, BAD_STEP)
    if where == "gradient":
        poison_gradient(module, BAD_STEP)
    # One epoch of at most 20 batches: if skipped steps never end (weights gone non-finite), the
    # run stops and the step count below fails, instead of looping for ever.
    trainer = bare_trainer(6, callbacks=callbacks, max_epochs=1, limit_train_batches=20)
    what = "gradient" if where == "gradient" else "loss"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, datamodule=dm)
    # Checked after fit returns: a failure inside Lightning's stack takes minutes to report.
    said = [str(w.message) for w in caught if "non-finite" in str(w.message)]
    assert len(said) == 1, said
    assert re.match(f"non-finite {what} at step {BAD_STEP} .*step skipped", said[0]), said

    # A finite loss with an inf gradient is caught by the gradient norm alone.
    assert math.isfinite(record.losses[BAD_STEP]) == (where == "gradient")

    assert record.skipped == [0] * BAD_STEP + [1] * 4  # 7 batches for 6 optimizer steps
    assert int(module.skipped_steps) == 1 and trainer.global_step == 6
    assert same_state(record.before[BAD_STEP], record.after[BAD_STEP])  # nothing moved
    for k in (BAD_STEP - 1, BAD_STEP + 1):  # ordinary steps do move everything
        assert not same_state(record.before[k]["optimizer"], record.after[k]["optimizer"])
        assert not same_state(record.before[k]["ema"], record.after[k]["ema"])
        assert not same_state(record.before[k]["scheduler"], record.after[k]["scheduler"])
    assert all(
        torch.isfinite(v).all() for v in module.state_dict().values() if v.is_floating_point()
    )


def test_stop_saves_debug_checkpoint_and_batch_then_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_train(tmp_path, ["module.nonfinite=stop"], steps=6)
    with pytest.raises(NonFiniteLossError) as err:
        train_poisoned(monkeypatch, PoisonBatch(BAD_STEP), cfg)
    msg = str(err.value)
    debug = tmp_path / "debug"
    assert "\n" not in msg
    assert f"non-finite loss at step {BAD_STEP} (epoch 0, batch {BAD_STEP}, 1 non-finite" in msg
    assert str(debug / "nonfinite.ckpt") in msg and "module.nonfinite=skip" in msg

    ckpt = torch.load(debug / "nonfinite.ckpt", weights_only=True)
    assert ckpt["global_step"] == BAD_STEP
    assert all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )
    batch = torch.load(debug / "nonfinite_batch.pt", weights_only=True)
    assert batch["batch_idx"] == BAD_STEP and batch["global_step"] == BAD_STEP
    assert torch.isnan(batch["x"][0, 0]) and int(torch.isnan(batch["x"]).sum()) == 1
    # the data-sampler state replays the batch: it points just past it
    assert batch["data_state"]["train_sampler"]["position"] == BAD_STEP + 1
    assert not (tmp_path / "metrics.json").exists()


def test_skip_stops_after_too_many_bad_steps_in_a_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under nonfinite=skip a run whose every batch is bad stops (with the debug checkpoint)
    after module.max_skips_in_a_row steps in a row, instead of skipping for ever."""
    cfg = compose_train(
        tmp_path, ["module.nonfinite=skip", "module.max_skips_in_a_row=3"], steps=20
    )
    with pytest.warns(UserWarning, match="step skipped"), pytest.raises(NonFiniteLossError) as err:
        train_poisoned(monkeypatch, PoisonBatch(BAD_STEP, onwards=True), cfg)
    msg = str(err.value)
    assert "\n" not in msg
    # batches BAD_STEP and BAD_STEP + 1 are skipped with a warning, the third in a row stops
    assert msg.startswith(f"non-finite loss at step {BAD_STEP} (epoch 0, batch {BAD_STEP + 2},")
    assert "stopped after 3 skipped steps in a row (module.max_skips_in_a_row=3)" in msg
    assert str(tmp_path / "debug" / "nonfinite.ckpt") in msg
    ckpt = torch.load(tmp_path / "debug" / "nonfinite.ckpt", weights_only=True)
    assert ckpt["global_step"] == BAD_STEP
    assert not (tmp_path / "metrics.json").exists()


def test_bad_steps_apart_do_not_add_up(tmp_path: Path) -> None:
    """Two bad batches separated by good ones never make a run of two: limit 2 is not hit."""
    cfg = compose_train(tmp_path, ["module.nonfinite=skip", "module.max_skips_in_a_row=2"], steps=6)
    module, dm = build_module(cfg), build_datamodule(cfg)
    trainer = bare_trainer(6, callbacks=[PoisonBatch(1), PoisonBatch(3)], max_epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=dm)
    assert int(module.skipped_steps) == 2 and trainer.global_step == 6
