"""PreemptionHandler in-process: SIGUSR1 (SLURM's requeue signal) saves last.ckpt at the next
batch boundary and stops; the previous signal handlers are put back afterwards."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from reliability_helpers import compose_train

from run_helpers import bare_trainer
from scorelab.lit.build import build_datamodule, build_module
from scorelab.lit.callbacks import AtomicCheckpointIO, PreemptionHandler


class SignalAt(L.Callback):
    def __init__(self, step: int, sig: signal.Signals) -> None:
        self.step, self.sig = step, sig

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.sig)


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_signal_saves_last_ckpt_and_stops(tmp_path: Path, sig: signal.Signals) -> None:
    before = signal.getsignal(sig)
    cfg = compose_train(tmp_path, steps=50)
    module, dm = build_module(cfg), build_datamodule(cfg)
    ckpt_dir = tmp_path / "checkpoints"
    trainer = bare_trainer(
        50, enable_checkpointing=True, default_root_dir=tmp_path, plugins=[AtomicCheckpointIO()],
        callbacks=[SignalAt(3, sig), PreemptionHandler(),
                   ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_train_steps=100)],
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 3 and trainer.should_stop
    saved = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 3
    assert signal.getsignal(sig) == before
