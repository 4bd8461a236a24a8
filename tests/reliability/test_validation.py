"""Bad configs and data files are refused in one line before any data is loaded or trained.

Each case composes the train config with ``hydra.compose`` and calls ``train()`` with
``Trainer.fit`` replaced by a tripwire; the error must be a ValueError (ConfigError,
CheckpointError) or FileNotFoundError, which the entry point prints as one line with exit
code 2 (checked through the real CLI for one case).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
from hydra.errors import MissingConfigException
from reliability_helpers import compose_train

from scorelab.data.prepare import MNIST_FILES, mnist_raw_dir
from scorelab.runs import unknown_group_option
from scorelab.soak import REPO, subprocess_env
from scorelab.train import train

IMAGE = ("data=mnist", "model=unet_small")

# (overrides, expected fragment of the message); "{tmp}" is the test's tmp_path.
CASES = [
    (["sde.sigma_min=60"], "sde: sigma_max must be > sigma_min = 60, got sigma_max = "),
    (["sde.sigma_max=-1"], "sde: sigma_max must be > sigma_min = 0.01, got sigma_max = -1"),
    (["sde.N=0"], "sde: N must be an integer >= 1"),
    (["sde=vp", "sde.beta_min=-1"], "sde: beta_min must be > 0, got -1"),
    (["sampler=pc", "sde=ncsn", "loss=dsm_discrete"], "sampler=pc needs an SDE model"),
    (["sampler=ancestral", "sde=subvp"], "sampler=ancestral is defined for VE and VP only"),
    (["sampler=pc", "sampler.corrector.snr=0"], "snr must be a finite number > 0, got 0"),
    (["sampler=pc", "sampler.n_steps=0"], "sampler: n_steps must be >= 1 or null"),
    (["loss=dsm_discrete", "sde=ve"], "needs discrete σ levels (sde=ncsn), but sde is VESDE"),
    ([*IMAGE, "model.net.image_size=32"], "model.net.image_size=32 differs from data.image_size"),
    (["model=unet_small"], "UNetSmall is an image network but data gmm is points; use model=mlp"),
    (["data=mnist", "model=mlp"], "model=mlp works on points but data is images"),
    (["model.net.hidden=0"], "model.net: hidden=0 must be a positive integer"),
    (["data.weights=[0.3,0.3]"], "data: weights must be >= 0 and sum to 1, got [0.3, 0.3]"),
    (["data.means=[[0,0],[1,1],[2,2]]"], "data: means must have shape (K, D) with K = "),
    (["data.stds=[1.0,-1.0]"], "data: stds must all be > 0"),
    (["data.batch_size=0"], "data: batch_size=0 and eval_batch_size=None must be >= 1"),
    (["data.batch_size=100000"], "data: batch_size=100000 exceeds n_train=10000; lower it"),
    (["data=two_moons", "data.noise=-1"], "data: noise=-1 must be >= 0"),
    (["n_samples=-1"], "n_samples must be >= 0, got -1"),
    (["seed=-1"], "seed must be in [0, 2**32 - 1], got -1"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 trains nothing; use >= 1"),
    (["trainer.val_check_interval=0"], "trainer.val_check_interval must be an integer >= 1"),
    (["module.ema_decay=1.5"], "module: ema_decay must be in [0, 1), got 1.5"),
    (["module.nonfinite=bogus"], "module: nonfinite must be one of ('skip', 'stop', 'off')"),
    (["module.warmup_steps=-1"], "module: warmup_steps must be >= 0, got -1"),
    (["module.grad_clip=-1"], "module: grad_clip must be >= 0 (0 disables clipping)"),
    (["module.compile=fastest"], "module: module.compile='fastest' is not a torch.compile mode"),
    (
        ["+trainer.accumulate_grad_batches=4"],
        "trainer.accumulate_grad_batches=4 does not work with this module's manual optimisation; "
        "use module.accumulate_grad_batches=4 instead",
    ),
    (
        ["module.accumulate_grad_batches=3"],
        "trainer.val_check_interval=2 is not a multiple of module.accumulate_grad_batches=3; "
        "validation and checkpoints must fall at the end of an accumulation cycle: use 3",
    ),
    (["optimizer.lr=-1"], "optimizer: Invalid learning rate: -1"),
    (
        ["callbacks.lr_monitor={_target_: lightning.pytorch.callbacks.LearningRateMonitor}"],
        "callbacks.lr_monitor (LearningRateMonitor) needs a logger, but logger is empty",
    ),
    (["ckpt_path={tmp}/missing.ckpt"], "checkpoint {tmp}/missing.ckpt does not exist"),
    (["ckpt_path={tmp}/corrupt.ckpt"], "checkpoint {tmp}/corrupt.ckpt is truncated or corrupt"),
    (["ckpt_path=last"], "ckpt_path=last but {tmp}/run/checkpoints/last.ckpt does not exist"),
    ([*IMAGE, "paths.data_dir={tmp}/empty"], "train-images-idx3-ubyte is missing (and 3 more)"),
    ([*IMAGE, "paths.data_dir={mnist}"], "t10k-labels-idx1-ubyte is missing; run `python -m "),
]


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def tripwire(*args, **kwargs):
        raise AssertionError("Trainer.fit was reached: the error came after data/training")

    monkeypatch.setattr(pl.Trainer, "fit", tripwire)


@pytest.mark.parametrize(("overrides", "expected"), CASES, ids=lambda v: str(v)[:60])
def test_bad_input_is_refused_in_one_line_before_data(
    tmp_path: Path, mnist_root: Path, no_training: None, overrides: list, expected: str
) -> None:
    (tmp_path / "corrupt.ckpt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    (mnist_raw_dir(mnist_root) / MNIST_FILES["test_labels"]).unlink()  # one file missing

    def fill(s: str) -> str:
        return s.replace("{tmp}", str(tmp_path)).replace("{mnist}", str(mnist_root))

    overrides = [fill(o) for o in overrides]
    toy = not any(o.startswith(("data=", "model=")) for o in overrides)
    cfg = compose_train(tmp_path / "run", overrides, toy=toy)
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        train(cfg)
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert fill(expected) in msg
    if "idx" in expected:  # a missing data file: named, with the command that fixes it
        assert "`make data`" in msg


def test_unknown_config_option_is_one_line_before_hydra(tmp_path: Path) -> None:
    """Hydra refuses an unknown group option while composing, in several lines; the entry
    points check it first (run_cli) and print one line listing the choices."""
    with pytest.raises(MissingConfigException, match="Could not find 'sampler/bogus'"):
        compose_train(tmp_path, ["sampler=bogus"])
    assert unknown_group_option(["sampler=bogus", "seed=1"]) == (
        "unknown sampler option 'bogus' in 'sampler=bogus'; choose one of: ald, ancestral, em, "
        "dpmpp, heun, langevin, ode, pc, reverse_diffusion"
    )
    assert "'bogus' in 'model=mlp,bogus'" in unknown_group_option(["model=mlp,bogus"])
    for fine in (["sampler=pc", "model=mlp,unet_small", "sampler=null", "seed=3"],
                 ["hydra/launcher=joblib", "+experiment=toy_gmm", "--help", "-m"]):  # fmt: skip
        assert unknown_group_option(fine) is None


def test_cli_prints_the_one_line_and_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "scorelab.train", "sde.N=0", f"paths.log_dir={tmp_path}"],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert lines[-1] == (
        "error: sde: N must be an integer >= 1 (number of discretisation steps), got 0"
    )
    assert [x for x in lines if x.startswith("error")] == lines[-1:]  # besides Lightning's info
