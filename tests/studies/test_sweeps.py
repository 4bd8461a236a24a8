"""Sweep configs: launchers and the Optuna search compose; jobs of one multirun share a group."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from run_helpers import REPO, TOY_FAST, subprocess_env
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


def _train(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "scorelab.train", *args],
        cwd=REPO,
        env={**subprocess_env(), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_joblib_multirun_then_report_on_its_output(tmp_path: Path, capsys):
    """A real ``-m`` sweep through the joblib launcher (two processes), then ``scorelab.report``
    on the multirun directory it wrote: one row per learning rate, each the job's val/loss."""
    logs = tmp_path / "logs"
    _train(
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            *TOY_FAST,
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "n_samples=0",
            "callbacks.sample_grid=null",
            "optimizer.lr=1e-3,1e-2",
            f"paths.log_dir={logs}",
        ],
    )
    (sweep,) = list((logs / "train" / "multiruns").iterdir())
    launcher = OmegaConf.load(sweep / "multirun.yaml").hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher") and launcher.n_jobs == 2
    jobs = sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert len(jobs) == 2
    loss = {}
    for job in jobs:
        m = json.loads((job / "metrics.json").read_text())
        assert m["status"] == "ok" and m["global_step"] == 2
        lr = next(o.split("=")[1] for o in m["overrides"] if o.startswith("optimizer.lr="))
        loss[float(lr)] = m["metrics"]["val/loss"]
    assert set(loss) == {1e-3, 1e-2}

    # The report's command line, in-process (a fresh interpreter costs seconds).
    from scorelab.report import main

    assert (
        main([str(sweep), "--rows", "optimizer.lr", "--metric", "val/loss", "--format", "csv"]) == 0
    )
    table = capsys.readouterr().out
    rows = {float(r["optimizer.lr"]): r for r in csv.DictReader(io.StringIO(table))}
    assert set(rows) == set(loss)
    for lr, row in rows.items():
        assert float(row["mean"]) == pytest.approx(loss[lr], rel=1e-12)
        assert (row["n"], row["failed"], row["missing"]) == ("1", "0", "0")
    best = min(loss, key=loss.get)
    assert [lr for lr, r in rows.items() if r["best"] == "1"] == [best]
