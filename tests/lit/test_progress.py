"""The training progress bar counts the run's optimizer steps across epochs (its ETA is the
run's), and a resumed run's bar starts at the checkpoint's step."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from scorelab.lit.progress import StepProgressBar


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)

    def training_step(self, batch, _):
        return self.lin(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):  # 3 batches per epoch
        return DataLoader(TensorDataset(torch.randn(6, 2)), batch_size=2)


class _Recorder(StepProgressBar):
    """Records (total, n, initial) of the bar at every batch end."""

    def __init__(self) -> None:
        super().__init__(refresh_rate=1)
        self.seen: list[tuple[int, int, int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, idx):
        super().on_train_batch_end(trainer, pl_module, outputs, batch, idx)
        bar = self.train_progress_bar
        self.seen.append((bar.total, bar.n, bar.initial))


def _fit(tmp_path, max_steps: int, ckpt_path=None, **kw) -> _Recorder:
    bar = _Recorder()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[bar],
        **kw,
    )
    trainer.fit(_Tiny(), ckpt_path=ckpt_path)
    if ckpt_path is None:
        trainer.save_checkpoint(tmp_path / "end.ckpt")
    return bar


def test_one_bar_over_all_steps_of_a_multi_epoch_run(tmp_path):
    bar = _fit(tmp_path, max_steps=7)  # 3 batches per epoch: three epochs
    assert [total for total, _, _ in bar.seen] == [7] * 7
    assert [n for _, n, _ in bar.seen] == list(range(1, 8))  # never restarts at an epoch


def test_resumed_bar_starts_at_the_checkpoint_step(tmp_path):
    _fit(tmp_path, max_steps=4)
    bar = _fit(tmp_path / "resumed", max_steps=9, ckpt_path=tmp_path / "end.ckpt")
    assert bar.seen[0] == (9, 5, 4)  # first new step is 5; the rate counts from step 4
    assert bar.seen[-1][:2] == (9, 9)


def test_epoch_bounded_runs_keep_lightnings_bar(tmp_path):
    bar = _fit(tmp_path, max_steps=-1, max_epochs=2)
    assert [n for _, n, _ in bar.seen] == [1, 2, 3, 1, 2, 3]
