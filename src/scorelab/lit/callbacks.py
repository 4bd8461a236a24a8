"""Callbacks: checkpoints whose last.ckpt always holds the final step, sample grids during
training, and a clean save on pre-emption signals; the checkpoint plugin that writes atomically."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, Timer
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from scorelab.io import atomic_torch_save, read_checkpoint
from scorelab.plots import save_samples_figure


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes through :func:`scorelab.io.atomic_torch_save` (a
    kill during a save never leaves a truncated file) and reads with
    :func:`scorelab.io.read_checkpoint` (``weights_only=True``, one-line errors)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict:
        return read_checkpoint(path)


def draw_share(trainer, pl_module, n: int, seed: int):
    """This rank's share of ``n`` samples (EMA weights, eval mode), seeded per rank."""
    share = -(-n // trainer.world_size)
    gen = torch.Generator(device=pl_module.device).manual_seed(seed + 7919 * trainer.global_rank)
    was_training = pl_module.training
    pl_module.eval()
    res = pl_module.sample(share, generator=gen)
    pl_module.train(was_training)
    return res


def gather(all_gather, x: torch.Tensor, world_size: int) -> torch.Tensor:
    """``x`` of every rank concatenated in rank order; ``all_gather`` is
    ``LightningModule.all_gather`` ((share, ...) -> (world, share, ...), unchanged on one
    process)."""
    g = all_gather(x)
    return g.reshape(-1, *g.shape[2:]) if world_size > 1 else g


class EveryNSteps(L.Callback):
    """Calls :meth:`run` every ``every_n_steps`` optimizer steps (once per step, not at 0),
    which draws ``n_samples`` from ``seed`` (:func:`draw_share`)."""

    def __init__(self, every_n_steps: int, n_samples: int, seed: int, min_samples: int = 1):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if n_samples < min_samples:
            raise ValueError(f"n_samples must be >= {min_samples}, got {n_samples}")
        self.every_n_steps, self.n_samples, self.seed = every_n_steps, n_samples, seed
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        self.run(trainer, pl_module)

    def run(self, trainer, pl_module) -> None:
        raise NotImplementedError


class SampleGrid(EveryNSteps):
    """Every ``every_n_steps`` optimizer steps, draw ``n_samples`` with the EMA weights and the
    configured sampler, save a PNG under ``<run>/samples/`` and log it to every logger.

    Under DDP each rank draws its share with its own seed; the samples are gathered on rank 0.
    """

    def __init__(self, every_n_steps: int = 1000, n_samples: int = 64, seed: int = 1234) -> None:
        super().__init__(every_n_steps, n_samples, seed)

    def run(self, trainer, pl_module) -> None:
        if pl_module.sampler is None:
            return
        step = trainer.global_step
        res = draw_share(trainer, pl_module, self.n_samples, self.seed + step)
        x = gather(pl_module.all_gather, res.x, trainer.world_size)
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
        dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
        path = Path(dirpath or Path(trainer.default_root_dir) / "checkpoints") / "last.ckpt"
        trainer.save_checkpoint(str(path), weights_only=False)  # full state, to resume
        rank_zero_info(
            f"{self.requested} received: saved {path} at step {trainer.global_step}; stopping"
        )
        trainer.should_stop = True


class GuideSnapshot(L.Callback):
    """Saves the weights (raw and EMA, no optimizer state) once, after one optimizer step, as
    ``dirpath/filename``: the weaker model that autoguidance guides the final one away from
    (``guidance.guide_ckpt``, :class:`scorelab.guidance.AutoGuidedScore`).

    The step is ``step``, or ``fraction`` of ``trainer.max_steps`` (rounded, at least 1), so a
    recipe keeps its guide halfway when the step count is changed. The file is written
    atomically. A run that starts before the step removes a snapshot left in ``dirpath`` by an
    earlier run, so the file always belongs to the run beside it; a resumed run past the step
    keeps the one it wrote.

    Args:
        dirpath: the run's checkpoint folder.
        step: the optimizer step after which to save, in [1, max_steps).
        fraction: instead of ``step``, that share of ``trainer.max_steps``, in (0, 1).
        filename: the snapshot's file name.
        max_steps: the run's ``trainer.max_steps``, to refuse a step it never reaches when the
            callback is built (it is checked against the trainer again at setup).
    """

    def __init__(
        self,
        dirpath: str,
        step: int | None = None,
        fraction: float | None = None,
        filename: str = "guide.ckpt",
        max_steps: int | None = None,
    ) -> None:
        key = "callbacks.guide_snapshot"
        if (step is None) == (fraction is None):
            raise ValueError(
                f"{key} needs one of step (an optimizer step) and fraction (a share of "
                f"trainer.max_steps), got step={step!r}, fraction={fraction!r}; set one of them"
            )
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 1):
            raise ValueError(
                f"{key}.step={step!r} must be an integer >= 1 (the step whose weights guide the "
                "final ones; about half of trainer.max_steps)"
            )
        ok = isinstance(fraction, int | float) and not isinstance(fraction, bool)
        if fraction is not None and not (ok and 0.0 < float(fraction) < 1.0):
            raise ValueError(f"{key}.fraction={fraction!r} must be in (0, 1), e.g. 0.5")
        self._step, self.fraction = step, None if fraction is None else float(fraction)
        self.path = Path(dirpath) / filename
        self.step = self._resolve(max_steps) if max_steps is not None or step else None

    def _resolve(self, max_steps: int | None) -> int | None:
        """The snapshot's step for a run of ``max_steps`` (-1 or None: unbounded); None when
        ``fraction`` of a run of one step leaves no step before the last."""
        key = "callbacks.guide_snapshot"
        bounded = max_steps is not None and int(max_steps) >= 0
        if self._step is not None:
            step = self._step
        elif not bounded:
            raise ValueError(
                f"{key}.fraction={self.fraction} needs trainer.max_steps (got {max_steps}); "
                f"set trainer.max_steps, or {key}.step"
            )
        else:
            step = max(1, round(self.fraction * int(max_steps)))
            if int(max_steps) <= step:  # a run of 0 or 1 step: no earlier weights to keep
                rank_zero_warn(f"trainer.max_steps={max_steps}: no guide snapshot is written")
                return None
        if bounded and int(max_steps) <= step:
            raise ValueError(
                f"{key}.step={step} must be below trainer.max_steps={max_steps}, or the "
                f"snapshot is never written; set {key}.fraction=0.5 (half of max_steps), or "
                f"{key}=null"
            )
        return step

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.step = self._resolve(trainer.max_steps)

    def on_train_start(self, trainer, pl_module) -> None:
        if self.step is None:
            return
        if trainer.global_step < self.step:
            if trainer.is_global_zero and self.path.exists():
                self.path.unlink()  # an earlier run's: this run writes its own at self.step
                rank_zero_info(f"removed {self.path} of an earlier run (rewritten at {self.step})")
        elif not self.path.exists():
            rank_zero_warn(
                f"resumed at step {trainer.global_step}, past the guide snapshot's step "
                f"{self.step}, and {self.path} does not exist: this run has no guide snapshot"
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        at = self.step is not None and trainer.global_step == self.step
        if at and not self._written(trainer):
            trainer.save_checkpoint(str(self.path), weights_only=True)
            rank_zero_info(f"guide snapshot (step {self.step}): {self.path}")

    def _written(self, trainer) -> bool:
        # with gradient accumulation several batches end on the same optimizer step
        step = read_end(self.path)[0] if trainer.is_global_zero else None
        return trainer.strategy.broadcast(step) == self.step


# Key of the record a finished run's final checkpoint carries (see RunCheckpoint).
END_KEY = "scorelab_end"


def read_end(path: str | Path) -> tuple[int | None, dict | None]:
    """``(global_step, end record)`` of the checkpoint at ``path``; ``(None, None)`` when there
    is no readable file. Memory-mapped, so even a large checkpoint costs little to ask."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - a missing or unreadable file holds no step
        return None, None
    return int(ckpt.get("global_step", -1)), ckpt.get(END_KEY)


class RunCheckpoint(ModelCheckpoint):
    """:class:`~lightning.pytorch.callbacks.ModelCheckpoint` whose ``last.ckpt`` always holds
    the final step: when training ends (``max_steps``, ``max_time``, early stopping, a pre-emption
    signal) between two periodic saves, ``last.ckpt`` is written once more, with the same full
    state (weights, EMA, optimizer, RNG) and the same atomic checkpoint IO.

    The final checkpoint of a finished run also carries why it ended under :data:`END_KEY`
    (``{"reason", "global_step", "max_steps", "max_time_s"}``); a pre-empted run's carries none,
    so rerunning its command resumes, while a rerun of a finished one can say it is finished.
    ``end`` holds that record once training has ended.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.save_last is not True:
            raise ValueError(
                f"RunCheckpoint needs save_last=True (it keeps last.ckpt at the final step), got "
                f"save_last={self.save_last!r}; use lightning's ModelCheckpoint for other values"
            )
        self.end: dict | None = None
        self._saving_end: dict | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # last.ckpt is overwritten, never versioned: a run continued in a moved or copied
        # directory (whose saved state names the old one) would otherwise write last-v1.ckpt
        # and leave last.ckpt, which the next rerun resumes from, behind.
        if not self.last_model_path:
            self.last_model_path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)

    @staticmethod
    def ending(trainer: L.Trainer) -> dict | None:
        """Why the fit loop stopped (called when it has), or None if a pre-emption signal
        stopped it: that run is not finished."""
        if any(isinstance(c, PreemptionHandler) and c.requested for c in trainer.callbacks):
            return None
        step, max_steps = int(trainer.global_step), int(trainer.max_steps)
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        left = timer.time_remaining() if timer is not None else None
        early = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
        if 0 <= max_steps <= step:
            reason = "max_steps"
        elif left is not None and left <= 0:
            reason = "max_time"
        elif any(c.stopping_reason != EarlyStoppingReason.NOT_STOPPED for c in early):
            reason = "early_stopping"
        elif trainer.should_stop:
            reason = "stopped"
        else:
            reason = "max_epochs"
        # time_elapsed + time_remaining is the Timer's budget (it has no public accessor)
        budget = None if left is None else round(timer.time_elapsed() + left, 3)
        return {"reason": reason, "global_step": step, "max_steps": max_steps, "max_time_s": budget}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        end = self._saving_end
        if end is None and 0 <= trainer.max_steps <= trainer.global_step:
            end = self.ending(trainer)  # a periodic save at max_steps is the final one
        if end is not None:
            checkpoint[END_KEY] = end

    def on_train_end(self, trainer, pl_module) -> None:
        end = self.ending(trainer)
        self.end = end
        candidates = self._monitor_candidates(trainer)
        # Already there (a periodic save at the last step, or the pre-emption handler's)?
        on_disk = read_end(self.last_model_path) if trainer.is_global_zero else None
        if trainer.strategy.broadcast(on_disk) == (trainer.global_step, end):
            return
        self._saving_end = end
        try:
            self._save_last_checkpoint(trainer, candidates)
        finally:
            self._saving_end = None
        why = end["reason"] if end else "pre-empted"
        rank_zero_info(f"saved {self.last_model_path}, final step {trainer.global_step} ({why})")
