"""Seeded, resumable batching over a tensor that already lives on the accelerator.

For small data sets (MNIST, CIFAR-10, toy points) the whole training set fits in accelerator
memory as one tensor; drawing batches by index from it avoids DataLoader workers entirely.

Every random draw is derived from ``(seed, epoch, batch index)``: the permutation of an epoch
comes from a generator seeded with ``derive_seed(seed, epoch)`` and the per-batch randomness
(dequantisation noise, flips, fresh toy samples) from one seeded with
``derive_seed(seed, epoch, position)``. The complete sampler state is therefore
``{seed, epoch, position}``; it is device independent and restores the exact batch stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1


def derive_seed(*values: int) -> int:
    """Mix integers into one 63-bit seed (splitmix64 steps), e.g. ``(seed, epoch, batch)``."""
    z = 0x9E3779B97F4A7C15
    for v in values:
        z = (z ^ (int(v) & _MASK64)) & _MASK64
        z = (z + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z = z ^ (z >> 31)
    return z & ((1 << 63) - 1)


class InMemoryBatches:
    """Iterable of batches drawn by index from ``n`` in-memory examples.

    Args:
        n: number of examples.
        batch_size: examples per batch.
        make_batch: ``make_batch(idx, generator)`` builds a batch from a long index tensor
            ``(B,)`` on ``device``; ``generator`` lives on ``device`` and is freshly seeded
            for this batch.
        seed: base seed.
        shuffle: draw a new permutation each epoch (``False``: ``0..n-1`` in order).
        drop_last: drop the final incomplete batch.
        device: where the index tensor and the batch generator live.
        rank, world_size: with ``world_size > 1`` each rank takes ``perm[rank::world_size]``.
        advance_epoch: ``False`` replays epoch 0 on every ``iter()`` (fixed evaluation batches,
            including their noise).

    One ``iter()`` runs from the current ``(epoch, position)`` to the end of the epoch, then
    moves to the next epoch. An iteration abandoned mid-epoch continues from where it stopped.
    ``len()`` is the number of batches in a full epoch.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        make_batch: Callable[[Tensor, torch.Generator], Any],
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        advance_epoch: bool = True,
    ) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.n, self.batch_size, self.make_batch = n, batch_size, make_batch
        self.seed, self.shuffle, self.drop_last = int(seed), shuffle, drop_last
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.advance_epoch = advance_epoch
        self.epoch = 0
        self.position = 0
        self._generator: torch.Generator | None = None
        if len(self) == 0:
            raise ValueError(
                f"batch_size={batch_size} exceeds the {self._per_rank()} examples per rank with "
                "drop_last=True; lower batch_size or raise the data size (limit)"
            )

    def _per_rank(self) -> int:
        return len(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        m = self._per_rank()
        return m // self.batch_size if self.drop_last else -(-m // self.batch_size)

    def _order(self, epoch: int) -> Tensor:
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        return order[self.rank :: self.world_size].to(self.device)

    def _batch_generator(self, epoch: int, position: int) -> torch.Generator:
        if self._generator is None:
            self._generator = torch.Generator(device=self.device)
        return self._generator.manual_seed(derive_seed(self.seed, epoch, position, self.rank))

    def __iter__(self) -> Iterator[Any]:
        if self.position >= len(self):
            # The previous epoch was consumed to its last batch but its generator was not driven
            # past it (Lightning stops after len() batches); start the next epoch here rather
            # than yielding an empty one.
            self.epoch, self.position = (self.epoch + 1 if self.advance_epoch else self.epoch), 0
        epoch, order, num = self.epoch, self._order(self.epoch), len(self)
        while self.position < num:
            pos = self.position
            idx = order[pos * self.batch_size : (pos + 1) * self.batch_size]
            batch = self.make_batch(idx, self._batch_generator(epoch, pos))
            self.position = pos + 1
            yield batch
        self.epoch, self.position = (epoch + 1 if self.advance_epoch else epoch), 0

    def state_dict(self) -> dict[str, int]:
        """``{seed, epoch, position}``: everything needed to resume the batch stream."""
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at ``state['epoch']``, batch ``state['position']``, with the saved seed."""
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        if not 0 <= self.position <= len(self):
            raise ValueError(
                f"position {self.position} outside [0, {len(self)}] batches per epoch; the "
                "checkpoint was written with a different data size or batch_size"
            )


class InMemoryDataModule(L.LightningDataModule):
    """Base of the DataModules whose splits can live on the accelerator: the device, one
    :class:`InMemoryBatches` per split and the resumable training-sampler state. Subclasses set
    ``device``, ``batch_size``, ``eval_batch_size`` and implement ``_loader(split)``."""

    device: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self._loaders: dict[str, InMemoryBatches] = {}
        self._pending_state: dict[str, Any] | None = None

    def _resolve_device(self) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        if self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cpu")

    def _set_loaders(self, device: torch.device, splits: dict[str, tuple]) -> None:
        """Loaders of ``{split: (n, make_batch, seed)}``: "train" shuffled, dropping its last
        partial batch and moving on each epoch; the others in order, whole, replaying epoch 0."""
        trainer = self.trainer
        rank, world = (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)
        for split, (n, make_batch, seed) in splits.items():
            training = split == "train"
            self._loaders[split] = InMemoryBatches(
                n,
                self.batch_size if training else self.eval_batch_size,
                make_batch,
                seed=seed,
                shuffle=training,
                drop_last=training,
                device=device,
                rank=rank,
                world_size=world,
                advance_epoch=training,
            )
        if self._pending_state is not None:
            self._loaders["train"].load_state_dict(self._pending_state)
            self._pending_state = None

    def train_dataloader(self) -> Any:
        return self._loader("train")

    def val_dataloader(self) -> Any:
        return self._loader("val")

    def test_dataloader(self) -> Any:
        return self._loader("test")

    def state_dict(self) -> dict[str, Any]:
        """Training-sampler state ``{seed, epoch, position}`` (in-memory batching only)."""
        if "train" in self._loaders:
            return {"train_sampler": self._loaders["train"].state_dict()}
        return {} if self._pending_state is None else {"train_sampler": dict(self._pending_state)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("train_sampler")
        if state is None:
            return
        if "train" in self._loaders:
            self._loaders["train"].load_state_dict(state)
        else:
            self._pending_state = dict(state)
