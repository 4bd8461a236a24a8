"""Whenever training ends, ``last.ckpt`` holds the final step, and a rerun of a finished run
trains nothing.

Tiny in-process toy runs (32-unit MLP) whose end does not fall on a checkpoint: max_steps=25
with checkpoints every 10, a wall-clock budget, early stopping. The samples written at the end
of training must be reproduced bit for bit by ``scorelab.sample`` on ``last.ckpt`` with the
same seed, and a run continued from it must equal an uninterrupted one bit for bit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from reliability_helpers import compare_weights, run_dir, train_command, train_tiny

from run_helpers import run_command
from scorelab.lit.callbacks import END_KEY
from scorelab.runs import CONF_DIR
from scorelab.sample import sample

# Samples at the end of training, with a cheap annealed Langevin (2 x 10 steps).
SAMPLES = ("n_samples=32", "sampler.n_steps_each=2", "schedule.num_scales=10")
STEPS, EVERY = 25, 10  # the last periodic checkpoint is at step 20


def _last(out: Path) -> Path:
    return out / "checkpoints" / "last.ckpt"


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _sample_checkpoint(ckpt: Path, out: Path, n: int = 32, seed: int = 0) -> np.ndarray:
    """``scorelab.sample ckpt_path=ckpt`` (in-process): the checkpoint's own sampler."""
    cli = [f"ckpt_path={ckpt}", f"n_samples={n}", f"seed={seed}"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "sample", overrides=[*cli, f"paths.output_dir={out}", f"paths.log_dir={out}/logs"]
        )
    sample(cfg, overrides=cli)
    return np.load(out / "samples.npz")["samples"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run that ends at step 25, between two checkpoints (every 10 steps)."""
    out = tmp_path_factory.mktemp("finished")
    train_tiny(out, SAMPLES, steps=STEPS, every=EVERY)
    return out


def test_max_steps_between_checkpoints_leaves_last_ckpt_at_the_final_step(
    finished: Path, tmp_path: Path
) -> None:
    ckpt = _load(_last(finished))
    assert ckpt["global_step"] == STEPS
    assert ckpt[END_KEY]["reason"] == "max_steps" and ckpt[END_KEY]["global_step"] == STEPS
    # The full state, as in the periodic saves: EMA, optimizer, schedule, RNG.
    assert any(k.startswith("ema.module.") for k in ckpt["state_dict"])
    adam = ckpt["optimizer_states"][0]["state"]
    assert adam and all(int(s["step"]) == STEPS for s in adam.values())  # 25 Adam steps taken
    assert ckpt["lr_schedulers"][0]["last_epoch"] == STEPS
    assert "torch" in ckpt["scorelab_rng"]
    # The periodic checkpoint kept (the best by val/loss) is older.
    (periodic,) = (finished / "checkpoints").glob("step_*.ckpt")
    assert _load(periodic)["global_step"] in (10, 20)

    m = _metrics(finished)
    assert m["status"] == "ok" and m["global_step"] == STEPS and m["stopped_by"] == "max_steps"
    assert m["checkpoint"] == {"path": str(_last(finished)), "global_step": STEPS}
    assert m["samples"]["global_step"] == STEPS
    assert "val/loss" in m["metrics"]

    # scorelab.sample on last.ckpt reproduces the end-of-training samples bit for bit ...
    trained = np.load(finished / "samples.npz")["samples"]
    again = _sample_checkpoint(_last(finished), tmp_path / "last")
    assert trained.shape == (32, 2) and np.array_equal(trained, again)
    # ... which the older checkpoint does not (the comparison can fail).
    assert not np.array_equal(trained, _sample_checkpoint(periodic, tmp_path / "older"))


def test_raising_max_steps_continues_from_the_final_step_bit_for_bit(
    finished: Path, tmp_path: Path
) -> None:
    run = tmp_path / "continued"
    shutil.copytree(finished, run)  # a moved run directory: its checkpoints name the old one
    resumed = train_tiny(run, SAMPLES, steps=40, every=EVERY)
    assert resumed["resumed_from"] == str(_last(run)) and resumed["global_step"] == 40
    straight = train_tiny(tmp_path / "straight", SAMPLES, steps=40, every=EVERY)
    assert straight["global_step"] == 40
    a, b = _last(run), _last(tmp_path / "straight")
    cmp = compare_weights(a, b)
    assert cmp["equal"], f"differing tensors {cmp['differing']}, max |diff| {cmp['max_abs_diff']}"
    ca, cb = _load(a), _load(b)
    for key in ("exp_avg", "exp_avg_sq"):
        for i, state in ca["optimizer_states"][0]["state"].items():
            assert torch.equal(state[key], cb["optimizer_states"][0]["state"][i][key])
    assert torch.equal(ca["scorelab_rng"]["torch"], cb["scorelab_rng"]["torch"])
    assert np.array_equal(np.load(run / "samples.npz")["samples"],
                          np.load(tmp_path / "straight" / "samples.npz")["samples"])  # fmt: skip


def test_rerun_of_a_finished_run_trains_nothing(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "rerun"
    shutil.copytree(finished, run)
    files = sorted(p for p in run.rglob("*") if p.is_file())
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    capsys.readouterr()
    result = train_tiny(run, SAMPLES, steps=STEPS, every=EVERY)
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1, printed
    assert printed[0].startswith(f"run already finished at step {STEPS} ")
    assert str(run) in printed[0] and "raise trainer.max_steps" in printed[0]
    assert result == _metrics(finished)
    assert sorted(p for p in run.rglob("*") if p.is_file()) == files
    # nothing written: no training, no samples, no metrics
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before

    # A lower max_steps is finished too.
    assert train_tiny(run, SAMPLES, steps=STEPS - 5, every=EVERY)["global_step"] == STEPS


def test_finished_run_without_its_outputs_writes_them_from_last_ckpt(
    finished: Path, tmp_path: Path
) -> None:
    """Killed after the final save, before the samples and metrics.json: a rerun writes them
    from last.ckpt, bit for bit the same, without training."""
    run = tmp_path / "killed_late"
    shutil.copytree(finished, run)
    (run / "metrics.json").unlink()
    (run / "samples.npz").unlink()
    ckpt_bytes = _last(run).read_bytes()
    result = train_tiny(run, SAMPLES, steps=STEPS, every=EVERY)
    assert _last(run).read_bytes() == ckpt_bytes
    assert result["global_step"] == STEPS and result["stopped_by"] == "max_steps"
    assert np.array_equal(np.load(run / "samples.npz")["samples"],
                          np.load(finished / "samples.npz")["samples"])  # fmt: skip
    assert result["metrics"]["val/loss"] == _metrics(finished)["metrics"]["val/loss"]


def test_run_stopped_by_max_time_leaves_last_ckpt_at_its_final_step(tmp_path: Path, capsys) -> None:
    out = tmp_path / "budget"
    budget = ["trainer.max_time='00:00:00:02'", *SAMPLES]
    result = train_tiny(out, budget, steps=1_000_000, every=50)
    step = result["global_step"]
    assert result["stopped_by"] == "max_time" and 0 < step < 1_000_000
    ckpt = _load(_last(out))
    assert ckpt["global_step"] == step
    assert ckpt[END_KEY] == {"reason": "max_time", "global_step": step,
                             "max_steps": 1_000_000, "max_time_s": 2.0}  # fmt: skip
    assert _metrics(out)["checkpoint"]["global_step"] == step
    trained = np.load(out / "samples.npz")["samples"]
    assert np.array_equal(trained, _sample_checkpoint(_last(out), tmp_path / "s"))

    # Rerun: the budget is used up, raising max_steps alone would not help.
    capsys.readouterr()
    assert train_tiny(out, budget, steps=1_000_000, every=50)["global_step"] == step
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"run already finished at step {step} ")
    assert "raise trainer.max_time" in line
    # A larger budget continues from the final step.
    more = train_tiny(out, ["trainer.max_time='00:00:00:03'", *SAMPLES], steps=1_000_000, every=50)
    assert more["resumed_from"] == str(_last(out)) and more["global_step"] > step
    assert _load(_last(out))["global_step"] == more["global_step"]


def test_early_stopping_saves_the_final_step_and_counts_as_finished(tmp_path: Path) -> None:
    stop = ("+callbacks.early_stop={_target_:lightning.pytorch.callbacks.EarlyStopping,"
            "monitor:'val/loss',stopping_threshold:1.0e9}")  # fmt: skip
    out = tmp_path / "early"
    result = train_tiny(out, [stop, *SAMPLES], steps=40, every=EVERY)
    assert result["stopped_by"] == "early_stopping" and result["global_step"] == EVERY
    assert _load(_last(out))[END_KEY]["reason"] == "early_stopping"
    again = train_tiny(out, [stop, *SAMPLES], steps=40, every=EVERY)
    assert again == result


def test_cli_rerun_prints_one_line_exits_0_and_raising_max_steps_continues(
    tmp_path: Path,
) -> None:
    """The command line: the run directory does not depend on trainer.max_steps."""
    logs = tmp_path / "logs"

    def cli(steps: int) -> subprocess.CompletedProcess:
        return run_command(train_command(logs, steps, EVERY, SAMPLES))

    first = cli(STEPS)
    assert first.returncode == 0, first.stderr[-3000:]
    run = run_dir(logs)
    stamp = _last(run).stat().st_mtime_ns
    again = cli(STEPS)
    assert again.returncode == 0, again.stderr[-3000:]
    lines = again.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"run already finished at step {STEPS} ")
    assert f"outputs in {run}: checkpoints/last.ckpt, metrics.json" in lines[0]
    assert "Trainer.fit" not in again.stderr and _last(run).stat().st_mtime_ns == stamp

    more = cli(30)
    assert more.returncode == 0, more.stderr[-3000:]
    assert run_dir(logs) == run and f"resuming from {_last(run)}" in more.stderr
    assert _metrics(run)["global_step"] == 30 and _load(_last(run))["global_step"] == 30
