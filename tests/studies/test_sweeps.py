"""Sweep configs: launchers and the Optuna search compose; jobs of one multirun share a group."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from scorelab.runs import CONF_DIR, sweep_group


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
        ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
    ],
)
def test_launchers_compose(launcher: str, target: str):
    cfg = _compose([f"hydra/launcher={launcher}"])
    assert cfg.hydra.launcher._target_ == target


def test_optuna_search_composes_with_its_space():
    cfg = _compose(["hparams_search=toy_optuna"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "minimize"
    assert set(sweeper.params) == {"optimizer.lr", "model.net.hidden", "model.net.n_layers"}
    assert cfg.optimized_metric == "val/loss" and cfg.n_samples == 0


def test_sweep_group_is_shared_by_the_jobs_of_one_multirun():
    cfg = _compose(["logger=wandb"])
    assert cfg.logger.wandb.group == "train"  # outside a multirun: the task name
    with open_dict(cfg):
        cfg.hydra.mode = "MULTIRUN"
        cfg.hydra.sweep.dir = "/logs/train/multiruns/2026-01-02_03-04-05"
    try:
        HydraConfig.instance().set_config(cfg)
        assert sweep_group("train") == "train/2026-01-02_03-04-05"
        resolved = OmegaConf.to_container(cfg.logger, resolve=True)
        assert resolved["wandb"]["group"] == "train/2026-01-02_03-04-05"
    finally:
        HydraConfig.instance().cfg = None


def test_explicit_wandb_group_wins():
    cfg = _compose(["logger=wandb", "wandb_group=ablation-1"])
    assert cfg.logger.wandb.group == "ablation-1"
