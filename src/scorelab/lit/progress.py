"""A training progress bar over the whole run, with its ETA.

Lightning's :class:`~lightning.pytorch.callbacks.TQDMProgressBar` restarts at every epoch, so a
run bounded by ``trainer.max_steps`` that spans many epochs never shows how long it has left.
:class:`StepProgressBar` keeps one bar over the optimizer steps (``trainer.global_step`` out of
``trainer.max_steps``, which is what the run is bounded by, with manual optimisation and gradient
accumulation alike), so tqdm's remaining-time estimate is the run's. A resumed run starts the bar
at its checkpoint's step, and the rate counts only the steps done since. Runs bounded by epochs
(``max_steps`` of -1) get Lightning's bar unchanged.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import _update_n

__all__ = ["StepProgressBar"]


class StepProgressBar(TQDMProgressBar):
    """One bar of ``global_step / max_steps`` for the whole run (see module docstring)."""

    @staticmethod
    def _by_steps(trainer: L.Trainer) -> bool:
        return trainer.max_steps is not None and trainer.max_steps > 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if self._by_steps(trainer):
            self._restart(trainer)

    def _restart(self, trainer: L.Trainer) -> None:
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps)
        bar.initial = bar.n = trainer.global_step  # the rate (and ETA) counts new steps only
        bar.refresh()

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        if not self._by_steps(trainer):
            super().on_train_epoch_start(trainer)
            return
        if self._leave:  # a new bar per epoch was asked for: it still counts the run's steps
            self.train_progress_bar = self.init_train_tqdm()
            self._restart(trainer)
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch}")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if not self._by_steps(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, idx)
            return
        bar, step = self.train_progress_bar, trainer.global_step
        if bar is not None and self._should_update(step, bar.total):
            _update_n(bar, step)
            bar.set_postfix(self.get_metrics(trainer, pl_module))
