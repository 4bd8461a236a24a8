"""Train -> checkpoint -> sample, through the command-line entry points."""

from __future__ import annotations

import json

import numpy as np
import torch
from cli import TOY_CLI, run_cli

from scorelab.io import read_checkpoint
from scorelab.lit.build import load_module


def test_train_checkpoint_sample_roundtrip(tmp_path):
    logs = tmp_path / "logs"
    run_cli(
        "train",
        [
            *TOY_CLI,
            "trainer.max_steps=40",
            "trainer.val_check_interval=20",
            "n_samples=32",
            "sampler.n_steps_each=5",
            "schedule.num_scales=10",
            "callbacks.sample_grid.every_n_steps=20",
            "callbacks.sample_grid.n_samples=8",
            f"paths.log_dir={logs}",
        ],
    )
    (run_dir,) = list((logs / "train" / "runs").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["global_step"] == 40
    assert np.load(run_dir / "samples.npz")["samples"].shape == (32, 2)
    assert (run_dir / "samples_scatter.png").stat().st_size > 1000
    assert (run_dir / "samples" / "step_0000020.png").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    ckpt = run_dir / "checkpoints" / "last.ckpt"

    # Plain containers only: the default weights_only=True load works, EMA weights are inside.
    raw = torch.load(ckpt, weights_only=True)
    assert any(k.startswith("ema.module.") for k in raw["state_dict"])
    # The weights are stored once under model.* (plus the EMA copy), with the data's moments.
    assert {k.split(".")[0] for k in raw["state_dict"]} <= {
        "model",
        "ema",
        "skipped_steps",
        "data_moments",
    }
    # NCSN's mixture 0.2 N((-5,-5), I) + 0.8 N((5,5), I): mean 3 and variance 1 + 25 - 9 = 17
    # per coordinate, known exactly from the mixture the toy data module draws from
    sd = raw["state_dict"]
    assert torch.allclose(sd["data_moments.mean"], torch.tensor([3.0, 3.0]))
    assert torch.allclose(sd["data_moments.var"], torch.tensor([17.0, 17.0]))
    assert sd["data_moments.exact"]
    assert raw["global_step"] == 40
    module = load_module(ckpt)
    assert module.data_shape == (2,)
    assert read_checkpoint(ckpt)["scorelab_config"]["sde"]["_target_"] == "scorelab.sde.VESDE"

    out = tmp_path / "sample_out"
    proc = run_cli(
        "sample", [f"ckpt_path={ckpt}", "sampler=heun", "n_samples=50", f"hydra.run.dir={out}"]
    )
    x = np.load(out / "samples.npz")["samples"]
    assert x.shape == (50, 2) and np.isfinite(x).all()
    info = json.loads((out / "sample_info.json").read_text())
    assert info["nfe"] == 35 and info["sampler"]["name"] == "heun"
    start = info["sampler"]["start"]  # Heun starts from the data's moments the checkpoint holds
    assert start["kind"] == "moments" and start["source"] == "exact (analytic)"
    assert abs(start["mean_norm"] - 18**0.5) < 1e-5
    assert "samples.npz" in proc.stdout

    # Weights gone non-finite: sampling refuses in one line (exit 3) and writes nothing.
    ema_weight = next(k for k in raw["state_dict"] if k.startswith("ema.module."))
    raw["state_dict"][ema_weight].fill_(float("nan"))
    bad_ckpt = tmp_path / "nan.ckpt"
    torch.save(raw, bad_ckpt)
    bad_out = tmp_path / "nan_out"
    proc = run_cli(
        "sample", [f"ckpt_path={bad_ckpt}", "n_samples=8", f"hydra.run.dir={bad_out}"], check=False
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: sampling gave non-finite values in 8 of 8 samples"), line
    assert not (bad_out / "samples.npz").exists() and not (bad_out / "sample_info.json").exists()


def test_oracle_sampling_and_training_share_mixture_overrides(tmp_path):
    mixture = ["data.weights=[0.5,0.5]", "data.means=[[-4.0,0.0],[4.0,0.0]]", "data.stds=[0.5,0.5]"]
    out = tmp_path / "oracle"
    run_cli(
        "sample",
        [
            "model=oracle",
            "data=gmm",
            "sde=vp",
            "sampler=heun",
            "n_samples=400",
            *mixture,
            f"hydra.run.dir={out}",
        ],
    )
    x = np.load(out / "samples.npz")["samples"]
    assert x.shape == (400, 2)
    left = (x[:, 0] < 0).mean()
    assert abs(left - 0.5) < 0.08, left
    assert np.abs(np.abs(x[:, 0]).mean() - 4.0) < 0.3
    assert np.abs(x[:, 1]).mean() < 0.6

    logs = tmp_path / "logs"
    run_cli(
        "train",
        [
            *TOY_CLI,
            *mixture,
            "trainer.max_steps=5",
            "trainer.val_check_interval=5",
            "n_samples=0",
            f"paths.log_dir={logs}",
        ],
    )
    (run_dir,) = list((logs / "train" / "runs").iterdir())
    cfg = json.loads(
        json.dumps(
            torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["scorelab_config"]
        )
    )
    assert cfg["data"]["means"] == [[-4.0, 0.0], [4.0, 0.0]]
    assert cfg["data"]["weights"] == [0.5, 0.5]
