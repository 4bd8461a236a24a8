"""The one LightningModule: a score model trained by a score-matching loss, with EMA."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from scorelab.guidance import check_label_dropout, drop_labels, label_count
from scorelab.io import CheckpointError, atomic_torch_save, describe_state_mismatch
from scorelab.lit.ema import EMAModel
from scorelab.lit.rng import RNG_KEY, ForkedRNG, collect_rng_states, restore_rng_states
from scorelab.nets.precond import ScoreModel
from scorelab.sampling.start import DataMoments

NONFINITE_POLICIES = ("skip", "stop", "off")
# torch.compile modes; "reduce-overhead" replays the step's kernels as CUDA graphs, which the
# fixed batch shape of training (drop_last batches) allows.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(value: bool | str | None) -> str | None:
    """``module.compile`` as a torch.compile mode, or None for eager (false/none/off)."""
    if value is None or value is False or str(value).lower() in ("false", "none", "off", "0"):
        return None
    if value is True or str(value).lower() in ("true", "on", "1"):
        return "default"
    if value not in COMPILE_MODES:
        raise ValueError(
            f"module.compile={value!r} is not a torch.compile mode; use false, true or one of "
            f"{', '.join(COMPILE_MODES)}"
        )
    return str(value)


class NonFiniteLossError(RuntimeError):
    """Raised under ``nonfinite="stop"`` (or ``"skip"`` after ``max_skips_in_a_row`` bad steps in a
    row) once the debug checkpoint is written; the entry points exit with ``exit_code``."""

    exit_code = 3


def unpack_batch(batch: Any) -> tuple[Tensor, Tensor | None]:
    """``x`` and optional dataset indices from a batch: a tensor, (x, y), or a dict."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, dict):
        return batch["x"], batch.get("index")
    return batch[0], None


def unpack_labels(batch: Any) -> Tensor | None:
    """The class labels of a batch, if it carries any: ``y`` of ``(x, y)`` or ``batch["label"]``."""
    if isinstance(batch, Tensor):
        return None
    if isinstance(batch, dict):
        return batch.get("label")
    return batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None


LR_DECAYS = ("none", "cosine", "linear")


def lr_factor(step: int, *, warmup: int, decay: str = "none", total: int | None = None) -> float:
    """The learning rate at optimizer step ``step`` as a fraction of the configured one: a
    linear warm-up over ``warmup`` steps, then constant (``decay="none"``) or brought down to 0
    at step ``total`` along a half cosine or a straight line."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if decay == "none" or total is None:
        return 1.0
    frac = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
    return 0.5 * (1.0 + math.cos(math.pi * frac)) if decay == "cosine" else 1.0 - frac


def to_unit_range(x: Tensor, data_range: str) -> Tensor:
    """Samples of data scaled to ``data_range`` (``"minus_one_one"``, ``"zero_one"``) mapped to
    [0, 1] and clamped; ``"none"`` (points) leaves them unchanged."""
    if data_range == "minus_one_one":
        return ((x + 1) / 2).clamp(0, 1)
    if data_range == "zero_one":
        return x.clamp(0, 1)
    return x


class EMATrainingModule(L.LightningModule):
    """What :class:`ScoreModule` and the classifier module share: manual optimisation of the
    network (registered as ``net_attr``) with a warm-up/decay LR schedule, gradient clipping and
    an EMA copy; validation on a fixed noise stream (``seed + 1``) bucketed by noise level; the
    config and the global RNG states saved in checkpoints.

    Args:
        net: the network trained.
        optimizer: a partial optimizer, ``optimizer(params)``.
        data_shape: shape of one example, (C, H, W) or (D,).
        warmup_steps: linear learning-rate warm-up length.
        lr_decay: after the warm-up, ``"none"`` keeps the learning rate, ``"cosine"`` and
            ``"linear"`` bring it down to 0 at the last optimizer step (``trainer.max_steps``,
            or the steps Lightning estimates from ``max_epochs``).
        grad_clip: max gradient norm (0 disables clipping).
        ema_decay: EMA decay of the weights (0 disables EMA: the EMA copy tracks the weights).
        val_buckets: number of noise-level buckets of the validation metrics.
        seed: the run's seed; validation draws its noise from ``seed + 1``.
        config: the resolved run configuration (plain containers), saved in checkpoints for
            the entry points to rebuild the model; the module reads nothing from it.
    """

    net_attr = "model"

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        *,
        data_shape: tuple[int, ...] = (2,),
        warmup_steps: int = 0,
        lr_decay: str = "none",
        grad_clip: float = 1.0,
        ema_decay: float = 0.999,
        val_buckets: int = 4,
        seed: int = 0,
        config: dict | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay must be one of {LR_DECAYS}, got {lr_decay!r}")
        if grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 disables clipping), got {grad_clip}")
        if val_buckets < 1:
            raise ValueError(f"val_buckets must be >= 1, got {val_buckets}")
        self.automatic_optimization = False
        setattr(self, self.net_attr, net)
        self.optimizer_factory = optimizer
        self.data_shape = tuple(int(s) for s in data_shape)
        self.warmup_steps, self.lr_decay = int(warmup_steps), lr_decay
        self.grad_clip, self.ema_decay = float(grad_clip), float(ema_decay)
        self.val_buckets = int(val_buckets)
        self.seed = int(seed)
        self.config = config or {}
        self.ema = EMAModel(net, self.ema_decay)
        self.ema.requires_grad_(False)
        # Counters live in buffers so they are checkpointed and restored on resume.
        self.register_buffer("skipped_steps", torch.zeros((), dtype=torch.long))
        self._val_rng = ForkedRNG()

    def configure_optimizers(self):
        opt = self.optimizer_factory(self.model.parameters())
        total = None
        if self.lr_decay != "none":
            total = int(self.trainer.estimated_stepping_batches)
            if not 0 < total < 10**12:
                raise ValueError(
                    f"module.lr_decay={self.lr_decay} needs a finite number of optimizer steps, "
                    f"got {total}; set trainer.max_steps (or max_epochs) or module.lr_decay=none"
                )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, partial(lr_factor, warmup=self.warmup_steps, decay=self.lr_decay, total=total)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _clip_gradients(self) -> Tensor:
        max_norm = self.grad_clip if self.grad_clip > 0 else math.inf
        return torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)

    def _step(self, opt, sched) -> None:
        """One optimizer step, then the LR schedule and the EMA."""
        opt.step()
        sched.step()
        self.ema.update_parameters(self.model)

    def _update_buckets(self, metrics: nn.ModuleList, values: Tensor, noise: Tensor) -> None:
        """Bucket k's metric takes the values (B,) whose noise level falls in the k-th equal
        part of log σ (discrete levels) or of t."""
        frac = self.model.noise.noise_fraction(noise)
        bucket = (frac * self.val_buckets).long().clamp(0, self.val_buckets - 1)
        for k, metric in enumerate(metrics):
            if (bucket == k).any():
                metric.update(values[bucket == k])

    def bucket_names(self) -> list[str]:
        return self.model.noise.bucket_names(self.val_buckets)

    def on_validation_start(self) -> None:
        # Validation draws its noise from a fixed seed, so its figures are comparable across
        # steps and training's global RNG stream does not depend on when (or whether, after a
        # resume) validation ran.
        self._val_rng.enter(self.seed + 1)

    def on_validation_end(self) -> None:
        self._val_rng.exit()

    progress_keys: tuple[str, ...] = ("val/loss",)  # shown in the progress bar

    def _val_metrics(self) -> dict[str, MeanMetric]:
        """The validation metrics by logged name."""
        raise NotImplementedError

    def on_validation_epoch_end(self) -> None:
        self.last_val_step = int(self.global_step)  # which weights the latest val/* describe
        for key, metric in self._val_metrics().items():
            if metric.update_count > 0:
                self.log(key, metric.compute(), prog_bar=key in self.progress_keys)
            metric.reset()

    def add_missing_data_moments(self, state_dict: dict[str, Any]) -> None:
        """A checkpoint saved before the data moments were loads with them unknown."""

    def check_state(self, state: dict[str, Any], what: str, fix: str = "") -> None:
        """Refuse a state dict of another architecture in one line listing the keys (Lightning's
        strict load prints one line per tensor); ``state`` gains the data moments it lacks."""
        self.add_missing_data_moments(state)
        mismatch = describe_state_mismatch(self.state_dict(), state)
        if mismatch:
            raise CheckpointError(f"{what} ({mismatch}){fix}")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["scorelab_config"] = self.config
        # A checkpoint written during validation (ModelCheckpoint defers a save to
        # on_validation_end while its monitored metric does not exist yet) must hold the
        # training stream, not the forked validation one.
        checkpoint[RNG_KEY] = self._val_rng.outer_states or collect_rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Continue the global noise stream of the interrupted run (see scorelab.lit.rng).
        if RNG_KEY in checkpoint:
            restore_rng_states(checkpoint[RNG_KEY])


class ScoreModule(EMATrainingModule):
    """Trains ``model`` (a :class:`ScoreModel`) with ``loss``; keeps an EMA copy for sampling.

    Args (besides those of :class:`EMATrainingModule`):
        model: the parametrised score network.
        loss: a loss object, ``loss(score_fn, x) -> LossOutput``.
        sampler: a :class:`~scorelab.draw.Sampler` used for validation samples.
        data_range: ``"zero_one"`` or ``"minus_one_one"``: how data was scaled, for grids.
        nonfinite: policy for a non-finite loss or gradient: ``"skip"`` the step and count it,
            ``"stop"`` after saving a debug checkpoint, or ``"off"`` (no check, no host sync).
        max_skips_in_a_row: under ``"skip"``, this many non-finite steps in a row stop the run
            as ``"stop"`` does (a run whose every batch is bad would otherwise never end).
        channels_last: use the channels-last memory format for image networks.
        compile: wrap the score model's forward in ``torch.compile``: ``False``, ``True``
            (mode "default") or a mode name from :data:`COMPILE_MODES`.
        accumulate_grad_batches: sum the gradients of this many batches (each scaled by 1/k)
            before one optimizer step, so ``data.batch_size × k`` is the effective batch.
            Optimizer steps, the LR schedule, EMA and ``trainer.max_steps`` count optimizer
            steps; ``trainer.val_check_interval`` counts batches.
        label_dropout: for a class-conditional network (``model.net.num_labels``), the chance
            that a training label is replaced by the null label, which trains the unconditional
            score that classifier-free guidance needs (Ho & Salimans 2022).
    """

    def __init__(
        self,
        model: ScoreModel,
        loss: Callable,
        optimizer: Callable[..., torch.optim.Optimizer],
        *,
        sampler: Callable | None = None,
        data_shape: tuple[int, ...] = (2,),
        data_range: str = "none",
        nonfinite: str = "skip",
        max_skips_in_a_row: int = 100,
        channels_last: bool = False,
        compile: bool | str = False,
        accumulate_grad_batches: int = 1,
        label_dropout: float = 0.1,
        **common: Any,
    ) -> None:
        channels_last = channels_last and len(data_shape) == 3
        if channels_last:  # before the EMA copy is made
            model.to(memory_format=torch.channels_last)
        super().__init__(model, optimizer, data_shape=data_shape, **common)
        self.label_dropout = check_label_dropout(label_dropout)
        self.num_labels = label_count(model)
        self._label: Tensor | None = None  # the labels of the step under way (see _labelled)
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
        mode = compile_mode(compile)
        for name, v in (
            ("max_skips_in_a_row", max_skips_in_a_row),
            ("accumulate_grad_batches", accumulate_grad_batches),
        ):
            if isinstance(v, bool) or int(v) != float(v) or int(v) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v}")
        self.loss_fn = loss
        self.sampler = sampler
        self.data_range = data_range
        self.nonfinite = nonfinite
        self.max_skips_in_a_row = int(max_skips_in_a_row)
        self.skips_in_a_row = 0  # not saved: a resumed run starts counting afresh
        self.channels_last = channels_last
        # The data's per-coordinate mean and variance, filled in from the training data when
        # fitting starts and saved in checkpoints; the samplers read them from the model (the
        # deterministic ones start from them), so both the model and its EMA copy see this one
        # module without registering it twice.
        self.data_moments = DataMoments(self.data_shape)
        for m in (self.model, self.ema.module):
            object.__setattr__(m, "data_moments", self.data_moments)
        self.val_loss = MeanMetric()
        self.val_bucket_loss = nn.ModuleList(MeanMetric() for _ in range(self.val_buckets))
        # Kept out of the module registry, so checkpoints hold the weights once (under model.*)
        # and the compiled wrapper never appears in the state dict.
        self.compile_mode = mode
        self.accumulate_grad_batches = int(accumulate_grad_batches)
        self._micro_step = 0
        forward = torch.compile(self.model, mode=mode) if mode else self.model
        object.__setattr__(self, "_forward", forward)

    # ------------------------------------------------------------------ helpers
    def _prep(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def ema_model(self) -> ScoreModel:
        return self.ema.module

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        label = self._label
        if label is None:
            return self._forward(self._prep(x), noise)
        if label.shape[0] != x.shape[0]:  # a loss that repeats the batch (sliced SM)
            label = label.repeat(x.shape[0] // label.shape[0])
        return self._forward(self._prep(x), noise, label=label)

    @contextlib.contextmanager
    def _labelled(self, label: Tensor | None):
        """Within the block, :meth:`forward` (the loss's ``score_fn``) passes ``label``."""
        self._label = label
        try:
            yield
        finally:
            self._label = None

    def _step_labels(self, batch: Any, *, dropout: float) -> Tensor | None:
        """The batch's labels for a class-conditional model (each dropped to the null label
        with probability ``dropout``); None for an unconditional one."""
        if self.num_labels is None:
            return None
        y = unpack_labels(batch)
        if y is None:
            raise ValueError(
                f"the model is class-conditional (num_labels={self.num_labels}) but the batch "
                "has no labels; set data.labels=true"
            )
        return drop_labels(y.long(), dropout, self.num_labels)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, index = unpack_batch(batch)
        opt = self.optimizers()
        sched = self.lr_schedulers()
        k = self.accumulate_grad_batches
        last = self._micro_step == k - 1
        if self._micro_step == 0:
            opt.zero_grad(set_to_none=True)
        label = self._step_labels(batch, dropout=self.label_dropout)
        with self._backward_sync(enabled=last), self._labelled(label):
            out = self.loss_fn(self, self._prep(x))
            loss = out.loss
            self.manual_backward(loss / k if k > 1 else loss)
        self._micro_step = (self._micro_step + 1) % k
        if not last:  # gradients keep accumulating; no optimizer step yet
            self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
            return loss.detach()
        grad_norm = self._clip_gradients()
        if self.nonfinite == "off" or self._all_finite(loss, grad_norm):
            self._step(opt, sched)
            self.skips_in_a_row = 0
        else:
            # Neither the optimizer (moments, step count), the LR schedule nor the EMA moves.
            opt.zero_grad(set_to_none=True)
            self._on_nonfinite(loss, grad_norm, x, index, batch_idx)
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        self.log("train/grad_norm", grad_norm.detach(), on_step=True, on_epoch=False)
        self.log("train/lr", sched.get_last_lr()[0], on_step=True, on_epoch=False)
        self.log("train/skipped_steps", self.skipped_steps.float(), on_step=True, on_epoch=False)
        return loss.detach()

    def _backward_sync(self, enabled: bool):
        """Under DDP, skip the gradient all-reduce on micro-batches that do not end an
        accumulation cycle (the last one reduces the sum of all of them)."""
        trainer = self._trainer
        if enabled or trainer is None:
            return contextlib.nullcontext()
        block = getattr(trainer.strategy, "block_backward_sync", None)
        return block() if block is not None else contextlib.nullcontext()

    def on_fit_start(self) -> None:
        # Once per run: a resumed run has them from its checkpoint, restored before this hook.
        if self.data_moments.known:
            return
        datamodule = getattr(self._trainer, "datamodule", None)
        moments = getattr(datamodule, "train_moments", None)
        if callable(moments):
            mean, var, count = moments()
            self.data_moments.set_(
                mean.reshape(self.data_shape), var.reshape(self.data_shape), count
            )

    def on_train_start(self) -> None:
        # A run (or a resume) starts a fresh accumulation cycle: gradients are not saved in
        # checkpoints, which are written at cycle ends (every_n_train_steps counts optimizer
        # steps); a pre-emption inside a cycle drops that cycle's partial sum.
        self._micro_step = 0

    def _all_finite(self, loss: Tensor, grad_norm: Tensor) -> bool:
        """One host sync; under DDP every rank takes the same decision (a NaN on any rank
        skips or stops all of them, so no rank waits in a collective the others left)."""
        bad = (~torch.isfinite(loss.detach()) | ~torch.isfinite(grad_norm)).float()
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            bad = trainer.strategy.reduce(bad, reduce_op="max")
        return not bool(bad)

    def _on_nonfinite(self, loss, grad_norm, x, index, batch_idx) -> None:
        self.skipped_steps += 1
        what = "loss" if not torch.isfinite(loss) else "gradient"
        epoch = self.current_epoch if self._trainer is not None else 0
        msg = (
            f"non-finite {what} at step {self.global_step} (epoch {epoch}, batch {batch_idx}, "
            f"{int((~torch.isfinite(x)).sum())} non-finite input values)"
        )
        if self.nonfinite == "skip":
            self.skips_in_a_row += 1
            if self.skips_in_a_row < self.max_skips_in_a_row:
                from lightning.pytorch.utilities import rank_zero_warn

                rank_zero_warn(
                    f"{msg}; step skipped, optimizer and EMA not updated; skipped so far: "
                    f"{int(self.skipped_steps)}"
                )
                return
            # Skipping for ever would spin without training: every batch is bad (the data or
            # the model's state, not one sample), so stop as nonfinite=stop does.
            how = (
                f"stopped after {self.skips_in_a_row} skipped steps in a row "
                f"(module.max_skips_in_a_row={self.max_skips_in_a_row}): every recent batch "
                "gave non-finite values"
            )
            fix = "inspect the saved batch, or raise module.max_skips_in_a_row"
        else:
            how = "stopped (module.nonfinite=stop)"
            fix = "use module.nonfinite=skip to skip such steps"
        trainer = self._trainer
        where = "no trainer: nothing saved"
        if trainer is not None:
            folder = Path(trainer.default_root_dir) / "debug"
            ckpt, batch_file = folder / "nonfinite.ckpt", folder / "nonfinite_batch.pt"
            trainer.save_checkpoint(str(ckpt), weights_only=False)  # collective: all ranks come
            if trainer.is_global_zero:
                datamodule = getattr(trainer, "datamodule", None)
                sampler = datamodule.state_dict() if datamodule is not None else {}
                atomic_torch_save(
                    {
                        "global_step": int(self.global_step),
                        "epoch": int(epoch),
                        "batch_idx": int(batch_idx),
                        "indices": None if index is None else index.detach().cpu(),
                        "data_state": sampler,
                        "x": x.detach().cpu(),
                        "loss": loss.detach().cpu(),
                        "grad_norm": grad_norm.detach().cpu(),
                    },
                    batch_file,
                )
            where = f"debug checkpoint {ckpt}, batch {batch_file}"
        raise NonFiniteLossError(f"{msg}; {how}; {where}; {fix}")

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, _ = unpack_batch(batch)
        ema = self.ema_model()
        label = self._step_labels(batch, dropout=0.0)  # conditional models: the true labels
        kw = {} if label is None else {"label": label}
        with torch.enable_grad():  # energy models and SSM need autograd even here
            out = self.loss_fn(lambda y, n: ema(self._prep(y), n, **kw), self._prep(x))
        per = out.per_sample.detach()
        self.val_loss.update(per)
        self._update_buckets(self.val_bucket_loss, per, out.noise.detach())

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, progress: bool = False):
        """Draw ``n`` samples with the EMA weights and the configured sampler -> SampleResult."""
        if self.sampler is None:
            raise ValueError("no sampler configured: set sampler=NAME (e.g. sampler=ald)")
        shape = (n, *self.data_shape)
        kw = {"device": self.device, "generator": generator, "progress": progress}
        return self.sampler(self.ema_model(), shape, **kw)

    def to_unit_range(self, x: Tensor) -> Tensor:
        return to_unit_range(x, self.data_range)

    # ------------------------------------------------------------------ checkpoints
    def _val_metrics(self) -> dict[str, MeanMetric]:
        names = [f"val/loss_{name}" for name in self.bucket_names()]
        return {"val/loss": self.val_loss, **dict(zip(names, self.val_bucket_loss, strict=True))}

    def add_missing_data_moments(self, state_dict: dict[str, Any]) -> None:
        for key, value in self.data_moments.state_dict(prefix="data_moments.").items():
            state_dict.setdefault(key, torch.zeros_like(value))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        path = getattr(self._trainer, "ckpt_path", None) if self._trainer is not None else None
        self.check_state(
            checkpoint.setdefault("state_dict", {}),
            f"checkpoint {path or ''} does not fit the model of this config",
            "; resume with the model settings it was trained with, or start a new run",
        )
        super().on_load_checkpoint(checkpoint)
