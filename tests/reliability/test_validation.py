"""Bad configs and data files are refused in one line before any data is loaded or trained.

Each case composes the train config with ``hydra.compose`` and calls ``train()`` with
``Trainer.fit`` replaced by a tripwire; the error must be a ValueError (ConfigError,
CheckpointError) or FileNotFoundError, which the entry point prints as one line with exit
code 2 (checked through the real CLI for one case). ``SAMPLE_CASES`` does the same for
``scorelab.sample`` and ``scorelab.evaluate`` with the sampling and the metrics (and bits/dim)
replaced by tripwires; ``CLI_CASES`` runs the argparse entry points (``scorelab.report``,
``scorelab.convert``, ``scorelab.data.prepare``) and wants exit code 2 with one line.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from hydra.errors import MissingConfigException
from reliability_helpers import compose_train

from data_files import make_mnist_arrays
from run_helpers import run_command
from scorelab.data.prepare import MNIST_FILES, mnist_raw_dir, write_idx
from scorelab.runs import unknown_group_option
from scorelab.train import train

IMAGE = ("data=mnist", "model=unet_small")

# (overrides, expected fragment of the message); "{tmp}" is the test's tmp_path.
CASES = [
    (["sde.sigma_min=60"], "sde: sigma_max must be > sigma_min = 60, got sigma_max = "),
    (["sde.sigma_max=-1"], "sde: sigma_max must be > sigma_min = 0.01, got sigma_max = -1"),
    (["sde.N=0"], "sde: N must be an integer >= 1"),
    (["sde=vp", "sde.beta_min=-1"], "sde: beta_min must be > 0, got -1"),
    (
        ["sampler=pc", "sde=ncsn", "loss=dsm_discrete"],
        "sampler=pc: schedule=sde needs an SDE model",
    ),
    (["sampler=ancestral", "sde=subvp"], "sampler=ancestral is defined for VE and VP only"),
    (["sampler=pc", "sampler.corrector.snr=0"], "snr must be a finite number > 0, got 0"),
    (["sampler=pc", "schedule.n_steps=0"], "schedule: n_steps=0 must be an integer >= 1 or null"),
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
    (["optimizer.lr=-1"], "optimizer.lr=-1 must be > 0 (the step size; 2e-4 is the default)"),
    (
        ["callbacks.lr_monitor={_target_: lightning.pytorch.callbacks.LearningRateMonitor}"],
        "callbacks.lr_monitor (LearningRateMonitor) needs a logger, but logger is empty",
    ),
    (["ckpt_path={tmp}/missing.ckpt"], "checkpoint {tmp}/missing.ckpt does not exist"),
    (["ckpt_path={tmp}/corrupt.ckpt"], "checkpoint {tmp}/corrupt.ckpt is truncated or corrupt"),
    (["ckpt_path=last"], "ckpt_path=last but {tmp}/run/checkpoints/last.ckpt does not exist"),
    ([*IMAGE, "paths.data_dir={tmp}/empty"], "train-images-idx3-ubyte is missing (and 3 more)"),
    ([*IMAGE, "paths.data_dir={mnist}"], "t10k-labels-idx1-ubyte is missing; run `python -m "),
    # ranges upside down and signs that make no sense
    (["sde=vp", "sde.beta_min=20", "sde.beta_max=0.1"], "sde: beta_max must be >= beta_min = 20"),
    (["sde=ncsn", "loss=dsm_discrete", "sde.num_scales=0"], "sde: num_scales must be an integer"),
    (["optimizer.lr=0"], "optimizer.lr=0 must be > 0"),
    (["optimizer.betas=[0.9,1.5]"], "optimizer.betas[1]=1.5 must be in [0, 1)"),
    (["optimizer.weight_decay=-0.1"], "optimizer.weight_decay=-0.1 must be >= 0"),
    (["sampler=heun", "schedule.num_steps=0"], "schedule: num_steps=0 must be an integer >= 2"),
    (["sampler=heun", "schedule.rho=0"], "schedule: rho=0 must be a number > 0"),
    (["sampler=heun", "sampler.s_churn=-1"], "sampler=heun: s_churn must be >= 0, got -1"),
    (
        ["sampler=heun", "schedule.sigma_min=10", "schedule.sigma_max=1"],
        "schedule: sigma_max=1 must be > sigma_min=10; swap them",
    ),
    (
        ["sampler=ode", "sampler.method=rk4"],
        "sampler=ode: method must be one of ('euler', 'heun', 'dopri5'",
    ),
    (["sampler=ode", "sampler.atol=0"], "sampler=ode: atol must be a finite number > 0, got 0"),
    (
        ["sampler=ode", "sampler.method=euler", "schedule.n_steps=0"],
        "schedule: n_steps=0 must be an integer >= 1 or null",
    ),
    (["sampler=ode", "schedule.eps=2"], "schedule.eps=2 must be in (0, T) = (0, 1) for this SDE"),
    (["sampler=pc", "schedule.eps=0"], "schedule: eps=0 must be a number > 0 or null"),
    (
        ["sampler=pc", "sampler.corrector.n_steps=0"],
        "sampler=pc: n_steps must be an integer >= 1, got 0",
    ),
    (["sampler.n_steps_each=0"], "sampler=ald: n_steps_each must be an integer >= 1, got 0"),
    (["sampler.eps=-2e-5"], "sampler=ald: eps must be a finite number > 0, got -2e-05"),
    (
        ["sampler.eps=2e-5", "sampler.step_lr=1e-5"],
        "eps=2e-05 and step_lr=1e-05 both set the Langevin step (step_lr = ε/2); give one",
    ),
    (["schedule.num_scales=1"], "schedule: num_scales=1 must be an integer >= 2"),
    (
        ["sampler=langevin", "sampler.step_size=-1"],
        "sampler=langevin: step_size must be a finite number > 0, got -1",
    ),
    (["sampler=langevin", "schedule.sigma=-1"], "schedule: sigma=-1 must be a number > 0 or null"),
    (["loss.eps=2"], "loss: eps (smallest training time) must be in (0, T) = (0, 1.0), got 2"),
    (
        ["sde=edm", "loss=edm", "model/parametrization=edm", "model.parametrization.sigma_data=0"],
        "model.parametrization: sigma_data=0 must be > 0",
    ),
    (["sde=edm", "loss=edm", "model/parametrization=edm", "loss.p_std=0"], "p_std=0 must be > 0"),
    (["+model.parametrization.time_scale=0"], "model.parametrization.time_scale=0 is not suppor"),
    (["model.parametrization.output=logits"], "output='logits' is not supported; use one of"),
    (["trainer.max_steps=-5"], "trainer.max_steps=-5 must be >= 1, or -1"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be >= 1, or -1 / null"),
    (["trainer.limit_val_batches=-1"], "trainer.limit_val_batches=-1 must be an integer >= 0"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0 must be >= 1"),
    (["trainer.precision=bf16-mix"], "trainer: Precision 'bf16-mix' is invalid. Allowed"),
    (["trainer.max_time=6h"], "trainer: `Timer(duration='6h')` is not a valid duration"),
    (["trainer.devices=0"], "trainer: `Trainer(devices=0)` value is not a valid input"),
    (["callbacks.model_checkpoint.save_top_k=-2"], "callbacks.model_checkpoint: Invalid value"),
    (["module.val_buckets=0"], "module: val_buckets must be >= 1, got 0"),
    (["module.accumulate_grad_batches=0"], "module: accumulate_grad_batches must be an integer"),
    (["data.n_train=0"], "data: n_train=0 and n_val=256 must be >= 1"),
    (["data.dim=3"], "data: dim=3 contradicts 'gmm', which has dim=2"),
    # combinations that do not fit
    (
        ["sampler=ode", "sde=ncsn", "loss=dsm_discrete"],
        "sampler=ode: schedule=sde needs an SDE model",
    ),
    (["sde=ncsn", "loss=edm"], "loss=EDMLoss needs an SDE (sde=edm, ve, vp or subvp), but the "),
    (
        ["sde=ncsn", "loss=dsm_discrete", "model/parametrization=time_eps"],
        "net_cond='time' needs an SDE; with sde=ncsn use 'sigma' or 'index'",
    ),
    (["model/parametrization=index_score"], "num_classes=None must be a positive integer"),
    (
        ["data=mnist", "model=ncsn", "sde=ncsn", "loss=dsm_discrete", "model.net.num_classes=5"],
        "model.net.num_classes=5 differs from sde.num_scales=10",
    ),
    (["data=mnist", "model=ncsn"], "model=ncsn takes its number of levels from sde=ncsn"),
    ([*IMAGE, "model.net.channels=3"], "model.net.channels=3 differs from data.channels=1"),
    (["data=mnist", "model=ddpm"], "image_size=28 is not divisible by 2**(len(ch_mult)-1)=8"),
    ([*IMAGE, "data.scaling=unit"], "data: scaling='unit' must be one of ['zero_one', 'minus_"),
    ([*IMAGE, "data.val_split=-1"], "data: val_split=-1 must be >= 0"),
    ([*IMAGE, "data.limit=0"], "data: limit=0 must be >= 1 or null"),
    (
        ["data=cifar10", "model=unet_small", "paths.data_dir={tmp}/empty"],
        "cifar-10-batches-py/data_batch_1 is missing (and 6",
    ),
    # files that are not what they claim
    (["ckpt_path={tmp}/old_run"], "checkpoint {tmp}/old_run is a directory, not a file; give"),
    (["ckpt_path={tmp}/notes.txt"], "checkpoint {tmp}/notes.txt is truncated or corrupt"),
    (["ckpt_path={tmp}/samples.npz"], "{tmp}/samples.npz is a NumPy .npz archive (samples or"),
    (["ckpt_path={tmp}/plain.pt"], "ckpt_path={tmp}/plain.pt holds no 'state_dict': not a score"),
    (["ckpt_path={tmp}/weights.ckpt"], "holds weights only (no optimizer or loop state"),
    (
        ["ckpt_path={tiny}", "model.net.hidden=64"],
        "ckpt_path={tiny} does not fit this config's model (",
    ),
    (
        [*IMAGE, "paths.data_dir={mnist_truncated}"],
        "train-images-idx3-ubyte holds 50000 bytes, but its header [64, 28, 28] needs 50192",
    ),
    (
        [*IMAGE, "paths.data_dir={mnist_gzipped}"],
        "train-images-idx3-ubyte does not start with the IDX header 00000803 of a uint8 array",
    ),
]


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def tripwire(*args, **kwargs):
        raise AssertionError("Trainer.fit was reached: the error came after data/training")

    monkeypatch.setattr(pl.Trainer, "fit", tripwire)


def bad_files(tmp_path: Path) -> None:
    """Files that are not what a user's command line claims they are."""
    (tmp_path / "corrupt.ckpt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    (tmp_path / "old_run").mkdir()
    (tmp_path / "notes.txt").write_text("lr 2e-4 looked best\n")
    np.savez(tmp_path / "samples.npz", samples=np.zeros((4, 2), np.float32))
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pt")  # a bare tensor dict
    torch.save({"state_dict": {}, "global_step": 0}, tmp_path / "weights.ckpt")  # as converted


def broken_mnist(root: Path, how: str) -> Path:
    """An MNIST root whose training images are truncated or still gzip-compressed."""
    arrays = make_mnist_arrays()
    for key, name in MNIST_FILES.items():
        write_idx(mnist_raw_dir(root) / name, arrays[key])
    images = mnist_raw_dir(root) / MNIST_FILES["train_images"]
    data = images.read_bytes()
    images.write_bytes(data[:50000] if how == "truncated" else gzip.compress(data))
    return root


def fill_paths(s: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Replace the ``{...}`` placeholders of a case; fixtures are made only when named."""
    s = s.replace("{tmp}", str(tmp_path))
    if "{tiny}" in s:
        s = s.replace("{tiny}", str(request.getfixturevalue("tiny_ckpt")))
    for how in ("truncated", "gzipped"):
        if f"{{mnist_{how}}}" in s:
            s = s.replace(f"{{mnist_{how}}}", str(broken_mnist(tmp_path / how, how)))
    return s


@pytest.mark.parametrize(("overrides", "expected"), CASES, ids=lambda v: str(v)[:60])
def test_bad_input_is_refused_in_one_line_before_data(
    tmp_path: Path,
    mnist_root: Path,
    request: pytest.FixtureRequest,
    overrides: list,
    expected: str,
) -> None:
    bad_files(tmp_path)
    (mnist_raw_dir(mnist_root) / MNIST_FILES["test_labels"]).unlink()  # one file missing

    def fill(s: str) -> str:
        s = fill_paths(s, request, tmp_path)
        return s.replace("{mnist}", str(mnist_root))

    overrides = [fill(o) for o in overrides]  # may train tiny_ckpt: before the tripwire
    request.getfixturevalue("no_training")
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
        "unknown sampler option 'bogus' in 'sampler=bogus'; choose one of: ald, ancestral, dpmpp, "
        "em, heun, langevin, ode, pc, reverse_diffusion"
    )
    assert "'bogus' in 'model=mlp,bogus'" in unknown_group_option(["model=mlp,bogus"])
    for fine in (["sampler=pc", "model=mlp,unet_small", "sampler=null", "seed=3"],
                 ["hydra/launcher=joblib", "+experiment=toy_gmm", "--help", "-m"]):  # fmt: skip
        assert unknown_group_option(fine) is None


def test_cli_prints_the_one_line_and_exits_2(tmp_path: Path) -> None:
    proc = run_command(
        [sys.executable, "-m", "scorelab.train", "sde.N=0", f"paths.log_dir={tmp_path}"]
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert lines[-1] == (
        "error: sde: N must be an integer >= 1 (number of discretisation steps), got 0"
    )
    assert [x for x in lines if x.startswith("error")] == lines[-1:]  # besides Lightning's info


# ----------------------------------------------------------------------- sample and evaluate
# (entry point, overrides, expected fragment); "{ck}" is a 4-step toy checkpoint (tiny_ckpt),
# "{tmp}" holds the files of bad_files() and the samples of sample_files().
SAMPLE_CASES = [
    ("sample", ["model=mlp"], "give ckpt_path=PATH to sample a trained model, or model=oracle"),
    ("sample", [], "model=oracle needs a sampler: pass sampler=ald, pc, ode, heun"),
    ("sample", ["data=two_moons", "sampler=pc"], "needs an analytic mixture (data=gmm), got data"),
    ("sample", ["sampler=pc", "n_samples=0"], "n_samples=0 must be >= 1"),
    ("sample", ["sampler=pc", "batch_size=0"], "batch_size=0 must be >= 1"),
    ("sample", ["sampler=pc", "seed=-1"], "seed=-1 must be in [0, 2**32 - 1]"),
    (
        "sample",
        ["sde=ncsn", "sampler=ode"],
        "sampler=ode: schedule=sde needs an SDE model (sde=edm, ve, vp or",
    ),
    ("sample", ["sde=subvp", "sampler=ancestral"], "sampler=ancestral is defined for VE and VP"),
    ("sample", ["sampler=dpmpp", "sampler.order=4"], "order must be 1, 2 or 3 for DPM-Solver++"),
    (
        "sample",
        ["sampler=dpmpp", "+sampler.s_churn=1"],
        "sampler.s_churn is not a keyword of dpmpp_multistep (its keywords: order, form)",
    ),
    ("sample", ["sampler=heun", "schedule.rho=-1"], "schedule: rho=-1 must be a number > 0"),
    ("sample", ["sampler=pc", "data.weights=[0.5,0.6]"], "weights must be >= 0 and sum to 1"),
    ("sample", ["sampler=pc", "sde=vp", "sde.beta_max=0.01"], "beta_max must be >= beta_min"),
    ("sample", ["ckpt_path={tmp}/missing.ckpt"], "checkpoint not found: {tmp}/missing.ckpt"),
    ("sample", ["ckpt_path={tmp}/old_run"], "checkpoint {tmp}/old_run is a directory, not a"),
    ("sample", ["ckpt_path={tmp}/notes.txt"], "{tmp}/notes.txt is truncated or corrupt (not a"),
    ("sample", ["ckpt_path={tmp}/samples.npz"], "{tmp}/samples.npz is a NumPy .npz archive"),
    ("sample", ["ckpt_path={tmp}/plain.pt"], "{tmp}/plain.pt has no 'state_dict': not a scorelab"),
    ("sample", ["ckpt_path={tmp}/weights.ckpt"], "{tmp}/weights.ckpt carries no scorelab_config"),
    ("sample", ["ckpt_path={ck}", "sde=vp"], "carries its own sde, which 'sde=vp' cannot replace"),
    ("sample", ["ckpt_path={ck}", "sde.sigma_min=100"], "sigma_max must be > sigma_min = 100"),
    ("sample", ["ckpt_path={ck}", "sampler=heun", "schedule.num_steps=0"], "num_steps=0 must be"),
    ("sample", ["ckpt_path={ck}", "sampler=pc", "schedule.eps=2"], "schedule.eps=2 must be in (0,"),
    ("sample", ["ckpt_path={ck}", "n_samples=-1"], "n_samples=-1 must be >= 1"),
    ("evaluate", ["metrics=[]"], "metrics=[] selects nothing; name metrics or use metrics=null"),
    ("evaluate", ["sampler=pc", "metrics=[fid]"], "metric 'fid' does not apply to data gmm (2,)"),
    ("evaluate", ["sampler=pc", "n_samples=1"], "n_samples=1 is fewer than the 2 that metrics"),
    ("evaluate", ["sampler=pc", "batch_size=0"], "batch_size=0 must be >= 1"),
    ("evaluate", ["sampler=pc", "toy.n_projections=0"], "toy.n_projections=0 must be >= 1"),
    ("evaluate", ["sampler=pc", "toy.n_reference=1"], "toy.n_reference=1 must be >= 2"),
    ("evaluate", ["samples_path={tmp}/missing.npz"], "samples_path={tmp}/missing.npz does not"),
    ("evaluate", ["samples_path={tmp}/notes.txt"], "must be a .npz file or an image folder"),
    ("evaluate", ["samples_path={tmp}/arrays.npz"], "has arrays ['x'], not 'samples'; save with"),
    ("evaluate", ["samples_path={tmp}/points3d.npz"], "samples have shape (10, 3), but data gmm"),
    ("evaluate", ["samples_path={tmp}/nan.npz"], "samples contain non-finite values"),
    ("evaluate", ["samples_path={tmp}/old_run"], "holds no .png/.jpg/.jpeg/.bmp/.webp images"),
    ("evaluate", ["data=mnist", "samples_path={tmp}/samples.npz"], "but data mnist needs (N, 1,"),
    ("evaluate", ["samples_path={tmp}/samples.npz", "metrics=[bpd]"], "bpd needs a model, not"),
    ("evaluate", ["metrics=[bpd]", "sde=ncsn"], "bpd needs a model trained with an SDE"),
    ("evaluate", ["metrics=[bpd]", "bpd.repeats=0"], "bpd.repeats must be >= 1"),
    ("evaluate", ["metrics=[bpd]", "bpd.split=train"], "bpd.split='train': toy data has one"),
    ("evaluate", ["metrics=[bpd]", "bpd.method=rk4"], "bpd.method='rk4' is not an ODE solver"),
    ("evaluate", ["metrics=[bpd]", "bpd.rtol=0"], "bpd.rtol=0 must be > 0"),
    ("evaluate", ["metrics=[bpd]", "bpd.divergence=hutchinson"], "bpd.divergence='hutchinson"),
    ("evaluate", ["metrics=[bpd]", "bpd.eps=1"], "bpd.eps=1 must be in (0, T) = (0, 1)"),
    ("evaluate", ["metrics=[bpd]", "bpd.n=1"], "bpd.n=1 must be >= 2"),
    ("evaluate", ["ckpt_path={tmp}/plain.pt"], "{tmp}/plain.pt has no 'state_dict'"),
    (
        "evaluate",
        ["ckpt_path={ck}", "sampler=heun", "sampler.s_churn=-1"],
        "s_churn must be >= 0, got -1",
    ),
    ("evaluate", ["ckpt_path={ck}", "metrics=[bpd]", "bpd.batch_size=0"], "bpd.batch_size must"),
]


def sample_files(tmp_path: Path) -> None:
    np.savez(tmp_path / "arrays.npz", x=np.zeros((10, 2), np.float32))
    np.savez(tmp_path / "points3d.npz", samples=np.zeros((10, 3), np.float32))
    np.savez(tmp_path / "nan.npz", samples=np.full((10, 2), np.nan, np.float32))


@pytest.fixture
def no_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sampling, the metrics' reference data and computation, and bits/dim become tripwires."""
    import scorelab.evaluate
    import scorelab.sample

    def tripwire(*args, **kwargs):
        raise AssertionError("sampling or metrics were reached: the error came after the work")

    build_suite = scorelab.evaluate.build_metric_suite

    def suite_with_tripwires(*args, **kwargs):
        suite = build_suite(*args, **kwargs)
        suite.prepare = suite.compute = tripwire
        return suite

    monkeypatch.setattr(scorelab.sample, "draw", tripwire)
    monkeypatch.setattr(scorelab.evaluate, "build_metric_suite", suite_with_tripwires)
    monkeypatch.setattr(scorelab.evaluate, "bits_per_dim_eval", tripwire)


@pytest.mark.parametrize(("task", "overrides", "expected"), SAMPLE_CASES, ids=lambda v: str(v)[:60])
def test_bad_sampling_input_is_refused_in_one_line_before_sampling(
    tmp_path: Path, request: pytest.FixtureRequest, task: str, overrides: list, expected: str
) -> None:
    from hydra import compose, initialize_config_dir

    from scorelab.evaluate import evaluate
    from scorelab.runs import CONF_DIR
    from scorelab.sample import sample

    bad_files(tmp_path)
    sample_files(tmp_path)

    def fill(s: str) -> str:
        s = fill_paths(s, request, tmp_path)
        return s.replace("{ck}", str(request.getfixturevalue("tiny_ckpt"))) if "{ck}" in s else s

    overrides = [fill(o) for o in overrides]  # may train tiny_ckpt: before the tripwire
    request.getfixturevalue("no_sampling")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(task, overrides=[*overrides, f"paths.output_dir={tmp_path}/out"])
        with pytest.raises((ValueError, FileNotFoundError)) as err:
            sample(cfg, overrides) if task == "sample" else evaluate(cfg)
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert fill(expected) in msg


# ------------------------------------------------------------- report, convert, data.prepare
def _sweep(root: Path) -> Path:
    """Two finished runs of a learning-rate sweep."""
    for i, lr in enumerate(("1e-4", "2e-4")):
        run = root / "sweep" / str(i)
        run.mkdir(parents=True)
        record = {"status": "ok", "overrides": [f"optimizer.lr={lr}"], "metrics": {"val/loss": i}}
        (run / "metrics.json").write_text(json.dumps(record))
    return root / "sweep"


REPORT = ("--rows", "optimizer.lr", "--metric", "val/loss")
# (module, argv, expected fragment of the one line)
CLI_CASES = [
    ("report", ["{tmp}/old_run", *REPORT], "no runs under {tmp}/old_run (no metrics.json or"),
    ("report", ["{tmp}/nope", *REPORT], "{tmp}/nope is not a directory; give a Hydra multirun"),
    ("report", ["{tmp}/notes.txt", *REPORT], "{tmp}/notes.txt is not a directory"),
    (
        "report",
        ["{sweep}", "--rows", "optimizer.learning_rate", "--metric", "val/loss"],
        "--rows optimizer.learning_rate is set by none of the 2 runs; their overrides set: opti",
    ),
    ("report", ["{sweep}", *REPORT, "--cols", "seed"], "--cols seed is set by none of the 2 runs"),
    (
        "report",
        ["{sweep}", "--rows", "optimizer.lr", "--metric", "val_loss"],
        "--metric val_loss is in none of the 2 finished runs; their metrics: val/loss",
    ),
    ("report", ["{sweep}", *REPORT, "--digits", "0"], "digits must be >= 1, got 0"),
    ("report", ["{sweep}", *REPORT, "--out", "{tmp}/old_run"], "--out {tmp}/old_run is a direct"),
    (
        "convert",
        ["--format", "ncsn", "--experiment", "ncsn_mnist", "--official", "{tmp}/missing.pth"],
        "official checkpoint not found: {tmp}/missing.pth",
    ),
    (
        "convert",
        ["--format", "ncsn", "--experiment", "ncsn_mnist", "--official", "{tmp}/old_run"],
        "official checkpoint is a directory: {tmp}/old_run",
    ),
    (
        "convert",
        ["--format", "ncsn", "--experiment", "ncsn_mnst", "--official", "{tmp}/plain.pt"],
        "--experiment 'ncsn_mnst' is not an experiment; choose one of:",
    ),
    (
        "convert",
        [
            "--format",
            "ncsn",
            "--experiment",
            "ncsn_mnist",
            "--official",
            "{tmp}/plain.pt",
            "--out",
            "{tmp}/old_run",
        ],
        "--out {tmp}/old_run is a directory; give a file name",
    ),  # fmt: skip
    ("prepare", ["mnist", "--root", "{tmp}/notes.txt"], "--root {tmp}/notes.txt is a file"),
    (
        "prepare",
        ["mnist", "--root", "{mnist_truncated}"],
        "train-images-idx3-ubyte holds 50000 bytes, but its header [64, 28, 28] needs 50192",
    ),
]


@pytest.mark.parametrize(("module", "argv", "expected"), CLI_CASES, ids=lambda v: str(v)[:60])
def test_bad_command_line_is_refused_in_one_line_with_exit_2(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture,
    module: str,
    argv: list,
    expected: str,
) -> None:
    from scorelab import convert, report
    from scorelab.data import prepare

    bad_files(tmp_path)
    sweep = _sweep(tmp_path)

    def fill(s: str) -> str:
        return fill_paths(s, request, tmp_path).replace("{sweep}", str(sweep))

    argv = [fill(a) for a in argv]
    if module == "convert":
        argv += [] if "--out" in argv else ["--out", str(tmp_path / "converted.ckpt")]
    main = {"report": report.main, "convert": convert.main, "prepare": prepare.main}[module]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("error: ") and fill(expected) in err
