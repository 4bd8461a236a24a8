"""Callbacks: sample grids during training, and a clean save on pre-emption signals."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from scorelab.plots import save_samples_figure


class SampleGrid(L.Callback):
    """Every ``every_n_steps`` optimizer steps, draw ``n_samples`` with the EMA weights and the
    configured sampler, save a PNG under ``<run>/samples/`` and log it to every logger.

    Under DDP each rank draws its share with its own seed; the samples are gathered on rank 0.
    """

    def __init__(self, every_n_steps: int = 1000, n_samples: int = 64, seed: int = 1234) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        self.every_n_steps, self.n_samples, self.seed = every_n_steps, n_samples, seed
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        if pl_module.sampler is None:
            return
        world, rank = trainer.world_size, trainer.global_rank
        share = -(-self.n_samples // world)
        gen = torch.Generator(device=pl_module.device).manual_seed(self.seed + 7919 * rank + step)
        was_training = pl_module.training
        pl_module.eval()
        res = pl_module.sample(share, generator=gen)
        pl_module.train(was_training)
        x = pl_module.all_gather(res.x)
        if world > 1:
            x = x.reshape(-1, *x.shape[2:])
        self._publish(trainer, pl_module, x[: self.n_samples], step, res.nfe)

    @rank_zero_only
    def _publish(self, trainer, pl_module, x: torch.Tensor, step: int, nfe: int) -> None:
        out = Path(trainer.default_root_dir) / "samples" / f"step_{step:07d}.png"
        fig_path = save_samples_figure(
            pl_module.to_unit_range(x.float().cpu()), out, title=f"step {step}, NFE {nfe}"
        )
        for logger in trainer.loggers:
            exp = getattr(logger, "experiment", None)
            name = type(logger).__name__
            if name == "WandbLogger":
                logger.log_image("samples", [str(fig_path)], step=step)
            elif name == "TensorBoardLogger" and exp is not None:
                import numpy as np
                from PIL import Image

                img = np.asarray(Image.open(fig_path).convert("RGB"))
                exp.add_image("samples", img, step, dataformats="HWC")
        pl_module.log("samples/nfe", float(nfe), rank_zero_only=True)
        rank_zero_info(f"samples at step {step}: {fig_path}")


class PreemptionHandler(L.Callback):
    """On SIGTERM or SIGUSR1 (pre-emption, SLURM requeue) save ``last.ckpt`` and stop cleanly.

    The signal only sets a flag; the save happens at the next batch boundary, so the checkpoint
    is consistent. Rerunning the same command resumes from it.
    """

    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        self.requested = signal.Signals(signum).name

    def on_train_start(self, trainer, pl_module) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for name in self.SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._previous[sig] = signal.signal(sig, self._handler)

    def on_train_end(self, trainer, pl_module) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous.clear()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.requested is None:
            return
        ckpt_cb = trainer.checkpoint_callback
        dirpath = (
            Path(ckpt_cb.dirpath)
            if ckpt_cb is not None and ckpt_cb.dirpath
            else (Path(trainer.default_root_dir) / "checkpoints")
        )
        path = dirpath / "last.ckpt"
        trainer.save_checkpoint(str(path), weights_only=False)  # full state, to resume
        rank_zero_info(
            f"{self.requested} received: saved {path} at step {trainer.global_step}; stopping"
        )
        trainer.should_stop = True
