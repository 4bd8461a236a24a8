"""Train a score model: ``python -m scorelab.train experiment=NAME [overrides]``.

Writes checkpoints (``checkpoints/last.ckpt`` and the best), the resolved config
(``.hydra/config.yaml``), samples (``samples.npz`` and a grid or scatter PNG) and
``metrics.json`` into the Hydra run directory. Rerunning the same command resumes.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf

from scorelab.lit.build import (
    ConfigError,
    build_datamodule,
    build_module,
    validate_config,
)
from scorelab.lit.checkpoint_io import AtomicCheckpointIO, remove_stale_temporaries
from scorelab.runs import CONF_DIR, entry_point, run_cli, task_overrides, write_json_atomic

# The module updates its weights and EMA inside training_step (manual optimisation), so a
# checkpoint taken after the step is the state we want; Lightning's advice does not apply.
warnings.filterwarnings("ignore", message=".*ModelCheckpoint with manual optimization.*")


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``null``: resume from this run's last.ckpt if present; ``last``: require it; else a path."""
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
    if not Path(ck).is_file():
        raise ConfigError(f"ckpt_path={ck} does not exist; give an existing .ckpt file")
    return str(ck)


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]


def build_loggers(cfg: DictConfig) -> list:
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    for lg in loggers:
        if hasattr(lg, "log_hyperparams"):
            lg.log_hyperparams(_public_config(cfg))
    return loggers


def _public_config(cfg: DictConfig) -> dict:
    """The resolved config without Hydra internals, for loggers."""
    c = OmegaConf.to_container(cfg, resolve=True)
    c.pop("hydra", None)
    return c


def train(cfg: DictConfig) -> dict:
    """Fit, then sample; returns the final metrics dict."""
    start = time.time()
    validate_config(cfg)
    L.seed_everything(int(cfg.seed), workers=True)
    module = build_module(cfg)
    datamodule = build_datamodule(cfg)
    ckpt_path = resolve_ckpt_path(cfg)
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0:
        for stale in remove_stale_temporaries(Path(cfg.paths.output_dir) / "checkpoints"):
            rank_zero_info(f"removed {stale.name}, left by a save that was killed")
    callbacks = build_callbacks(cfg)
    loggers = build_loggers(cfg)
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    out = Path(cfg.paths.output_dir)
    try:
        if ckpt_path:
            rank_zero_info(f"resuming from {ckpt_path}")
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        # pre-empted (SIGTERM/SIGUSR1): last.ckpt is saved; say so and skip the final samples,
        # which would spend the grace period on a half-trained model
        preempted = next((c.requested for c in callbacks if getattr(c, "requested", None)), None)
        result = {
            "status": "preempted" if preempted else "ok",
            "task": "train",
            "metrics": metrics,
            "global_step": int(trainer.global_step),
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
            from scorelab.sample import write_samples

            gen = torch.Generator(device=module.device).manual_seed(int(cfg.seed))
            t0 = time.time()
            res = module.sample(int(cfg.n_samples), generator=gen, progress=True)
            files = write_samples(module.to_unit_range(res.x.float().cpu()), out)
            result["samples"] = {
                "n": int(cfg.n_samples),
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
            print(f"metrics: {out / 'metrics.json'}")
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
