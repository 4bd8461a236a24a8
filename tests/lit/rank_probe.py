"""A callback for the DDP test: each rank records how many steps it trained and a checksum of
its weights at the end of training."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L


class RankProbe(L.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.steps = 0
        self.first_batch_sum: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.first_batch_sum is None:
            self.first_batch_sum = float(batch.double().sum())
        self.steps += 1

    def on_train_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        checksum = sum(float(p.detach().double().sum()) for p in pl_module.model.parameters())
        record = {
            "rank": trainer.global_rank,
            "world": trainer.world_size,
            "steps": self.steps,
            "global_step": trainer.global_step,
            "checksum": checksum,
            "first_batch_sum": self.first_batch_sum,
        }
        (self.out_dir / f"rank_{trainer.global_rank}.json").write_text(json.dumps(record))
