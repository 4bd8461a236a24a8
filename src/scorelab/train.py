"""Train a score model: ``python -m scorelab.train experiment=NAME [overrides]``.

Writes checkpoints (``checkpoints/last.ckpt``, which holds the final step once training ends,
and the best), the resolved config (``.hydra/config.yaml``), samples of the final weights
(``samples.npz`` and a grid or scatter PNG) and ``metrics.json`` (naming that step) into the
Hydra run directory. Rerunning the same command resumes an interrupted run, and says that a
finished one is finished; raising ``trainer.max_steps`` continues it.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf

from scorelab.io import (
    CheckpointError,
    read_checkpoint,
    remove_stale_temporaries,
    write_json_atomic,
)
from scorelab.lit.build import (
    ConfigError,
    build,
    build_datamodule,
    build_module,
    validate_config,
)
from scorelab.lit.callbacks import AtomicCheckpointIO, RunCheckpoint, read_end
from scorelab.lit.classifier import build_classifier_module, is_classifier_config
from scorelab.lit.metrics_callback import SampleMetrics
from scorelab.outputs import write_samples
from scorelab.runs import CONF_DIR, entry_point, run_cli, task_overrides

# The module updates its weights and EMA inside training_step (manual optimisation), so a
# checkpoint taken after the step is the state we want; Lightning's advice does not apply.
warnings.filterwarnings("ignore", message=".*ModelCheckpoint with manual optimization.*")


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``null``: resume from this run's last.ckpt if present; ``last``: require it; else the path
    (checked by :func:`~scorelab.lit.build.validate_config`)."""
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    ck = cfg.get("ckpt_path")
    if ck is None:
        return str(last) if last.is_file() else None
    if ck == "last":
        if not last.is_file():
            raise ConfigError(
                f"ckpt_path=last but {last} does not exist; run without ckpt_path to start fresh"
            )
        return str(last)
    return str(ck)


def check_resume_checkpoint(module, ckpt_path: str) -> None:
    """A checkpoint to resume from must hold a training state (weights, optimizer, loops) that
    fits this config's module; Lightning would find out only inside ``fit``. Its tensors are
    memory-mapped, not read."""
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - read_checkpoint names the problem in one line
        ckpt = read_checkpoint(ckpt_path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"ckpt_path={ckpt_path} holds no 'state_dict': not a scorelab checkpoint; give a "
            "run's checkpoints/last.ckpt"
        )
    if "optimizer_states" not in ckpt or "loops" not in ckpt:
        raise CheckpointError(
            f"ckpt_path={ckpt_path} holds weights only (no optimizer or loop state, e.g. a "
            "converted checkpoint), so training cannot resume from it; sample it with "
            "python -m scorelab.sample, or resume from a run's checkpoints/last.ckpt"
        )
    module.check_state(
        dict(ckpt["state_dict"]),
        f"ckpt_path={ckpt_path} does not fit this config's model",
        "; resume with the settings of the run that wrote it",
    )


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    cbs = (cfg.get("callbacks") or {}).items()
    return [build(c, f"callbacks.{name}", Exception) for name, c in cbs if c is not None]


def build_loggers(cfg: DictConfig) -> list:
    lgs = (cfg.get("logger") or {}).items()
    loggers = [build(c, f"logger.{name}", Exception) for name, c in lgs if c is not None]
    for lg in loggers:  # the resolved config without Hydra internals
        if hasattr(lg, "log_hyperparams"):
            c = OmegaConf.to_container(cfg, resolve=True)
            lg.log_hyperparams({k: v for k, v in c.items() if k != "hydra"})
    return loggers


def finished_run(cfg: DictConfig, ckpt_path: str | None) -> tuple[dict, str] | None:
    """``(end record, knob)`` when ``ckpt_path`` is this run's own ``last.ckpt`` and it ended a
    finished run that the current limits would not continue; ``knob`` is the setting to raise
    to train further. None otherwise (nothing to resume, a pre-empted or killed run, or a limit
    raised since)."""
    own = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if ckpt_path is None or Path(ckpt_path).resolve() != own.resolve():
        return None
    step, end = read_end(own)
    if end is None:
        return None
    max_steps = int(cfg.trainer.get("max_steps", -1))
    steps_left = max_steps < 0 or max_steps > step
    if end["reason"] == "max_time":
        budget = _seconds(cfg.trainer.get("max_time"))
        time_left = budget is None or budget > float(end["max_time_s"])
        if steps_left and time_left:
            return None
        return end, "trainer.max_time" if steps_left else "trainer.max_steps"
    if end["reason"] == "max_steps":
        return None if steps_left else (end, "trainer.max_steps")
    # early stopping or the epoch limit: train on only when max_steps was raised
    raised = (max_steps < 0 <= end["max_steps"]) or max_steps > end["max_steps"]
    return None if raised else (end, "trainer.max_steps")


def _seconds(max_time) -> float | None:
    """``trainer.max_time`` ("DD:HH:MM:SS", {days: .., hours: ..}, null) in seconds."""
    if max_time is None:
        return None
    if OmegaConf.is_config(max_time):
        max_time = OmegaConf.to_container(max_time, resolve=True)
    return Timer(duration=max_time).time_remaining()  # the whole budget: nothing elapsed yet


def _finished_outputs(out: Path, end: dict) -> dict | None:
    """The run's metrics.json when it describes the final step ``end`` names, else None."""
    try:
        result = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    ok = result.get("status") == "ok" and result.get("global_step") == end["global_step"]
    return result if ok else None


def _finished_line(out: Path, end: dict, knob: str, result: dict) -> str:
    """One line: the run is finished, why, where its outputs are, what would continue it."""
    reason = end["reason"]
    if reason == "max_steps":
        why = f"trainer.max_steps={end['max_steps']} reached"
    elif reason == "max_time":
        why = f"its trainer.max_time budget of {end['max_time_s']:g} s used"
    else:
        why = {"early_stopping": "stopped early", "max_epochs": "trainer.max_epochs reached"}
        why = why.get(reason, "stopped")
    figure = (result.get("samples") or {}).get("figure")
    outputs = ["checkpoints/last.ckpt", "metrics.json", *([Path(figure).name] if figure else [])]
    return (
        f"run already finished at step {end['global_step']} ({why}); outputs in {out}: "
        f"{', '.join(outputs)}; raise {knob} to train further"
    )


def _launch_rank() -> int:
    """This process's rank before the Trainer exists (0 without a distributed launcher)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def _scalars(metrics) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def train(cfg: DictConfig) -> dict:
    """Fit, validate and sample the final weights; returns the final metrics dict.

    A rerun of a finished run (its ``last.ckpt`` ended by ``max_steps``, ``max_time`` or early
    stopping) trains nothing: it says where the outputs are, or writes them from ``last.ckpt``
    if they are missing. Raising the limit that ended it (``trainer.max_steps``, or
    ``trainer.max_time`` for a time budget) continues training from ``last.ckpt``.
    """
    start = time.time()
    validate_config(cfg)
    out = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt_path(cfg)
    finished = finished_run(cfg, ckpt_path)
    if finished is not None:
        end, knob = finished
        previous = _finished_outputs(out, end)
        if previous is not None:
            if _launch_rank() == 0:
                print(_finished_line(out, end, knob, previous))
            return previous
    L.seed_everything(int(cfg.seed), workers=True)
    # model=classifier / classifier_mlp: a noise-conditional classifier for task=class
    module = (build_classifier_module if is_classifier_config(cfg) else build_module)(cfg)
    if ckpt_path and finished is None:
        check_resume_checkpoint(module, ckpt_path)
    datamodule = build_datamodule(cfg)
    if _launch_rank() == 0:
        for stale in remove_stale_temporaries(out / "checkpoints"):
            rank_zero_info(f"removed {stale.name}, left by a save that was killed")
    callbacks = build_callbacks(cfg)
    for cb in callbacks:  # the metrics callback scores samples against the run's data
        if isinstance(cb, SampleMetrics) and cb.data is None:
            cb.data = OmegaConf.to_container(cfg.data, resolve=True)
    loggers = build_loggers(cfg)
    trainer = build(
        cfg.trainer,
        "trainer",
        Exception,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
    )
    run_ckpt = next((c for c in callbacks if isinstance(c, RunCheckpoint)), None)
    try:
        if finished is None:
            if ckpt_path:
                rank_zero_info(f"resuming from {ckpt_path}")
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
            step, end = int(trainer.global_step), run_ckpt.end if run_ckpt else None
            last = run_ckpt.last_model_path if run_ckpt else None
        else:  # finished, but killed before its samples and metrics.json were written
            end = finished[0]
            step = int(end["global_step"])
            rank_zero_info(f"{ckpt_path} ends a finished run; writing its samples and metrics")
            module.load_state_dict(read_checkpoint(ckpt_path)["state_dict"])
            last = ckpt_path
        metrics = _scalars(trainer.callback_metrics)
        # pre-empted (SIGTERM/SIGUSR1): last.ckpt is saved; say so and skip the final validation
        # and samples, which would spend the grace period on a half-trained model
        preempted = next((c.requested for c in callbacks if getattr(c, "requested", None)), None)
        validated = getattr(module, "last_val_step", None) == int(trainer.global_step)
        if not preempted and trainer.limit_val_batches != 0 and not validated:
            # val/* of the final weights (the last periodic validation may be older)
            for res in trainer.validate(module, datamodule=datamodule, verbose=False):
                metrics.update(_scalars(res))
        result = {
            "status": "preempted" if preempted else "ok",
            "task": "train",
            "metrics": metrics,
            "global_step": step,
            "checkpoint": {"path": str(Path(last)), "global_step": step} if last else None,
            "stopped_by": end["reason"] if end else ("preemption" if preempted else None),
            "skipped_steps": int(module.skipped_steps),
            "overrides": task_overrides(),
            "tags": list(cfg.get("tags") or []),
            "seed": int(cfg.seed),
            "resumed_from": ckpt_path,
        }
        if preempted:
            result["error"] = f"{preempted} received; last.ckpt saved: rerun the command to resume"
        wants_samples = int(cfg.n_samples) > 0 and module.sampler is not None and not preempted
        if trainer.is_global_zero and wants_samples:
            gen = torch.Generator(device=module.device).manual_seed(int(cfg.seed))
            t0 = time.time()
            res = module.sample(int(cfg.n_samples), generator=gen, progress=True)
            files = write_samples(module.to_unit_range(res.x.float().cpu()), out)
            result["samples"] = {
                "n": int(cfg.n_samples),
                "global_step": step,
                "sampler": module.sampler.describe(),
                "nfe": int(res.nfe),
                "wall_time_s": time.time() - t0,
                **{k: str(v) for k, v in files.items()},
            }
        result["wall_time_s"] = time.time() - start
        if trainer.is_global_zero:
            write_json_atomic(result, out / "metrics.json")
            if "samples" in result:
                print(f"samples: {result['samples']['figure']}")
            print(f"metrics: {out / 'metrics.json'} (step {step})")
        return result
    finally:
        _close_wandb(loggers)


def _close_wandb(loggers) -> None:
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        wandb.finish()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
@entry_point
def main(cfg: DictConfig) -> float:
    result = train(cfg)
    return float(result["metrics"].get(cfg.get("optimized_metric", "val/loss"), float("nan")))


if __name__ == "__main__":
    run_cli(main)
