"""A checkpoint is sampled from what it holds: training saves ``sigma_max: auto`` as the number
NCSNv2's rule gives on the training data, and sampling reads the file once and builds the score
model, its noise process and the sampler only (no loss, optimizer, EMA copy, module or data).
``sampler.KEY=VALUE`` reaches the checkpoint's own sampler without a ``+``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException

from run_helpers import REPO, TOY_FAST, compose_cfg, subprocess_env
from scorelab.io import CheckpointError
from scorelab.lit.sampling_model import checkpoint_sampler_keys
from scorelab.sample import sample

# The tiny run samples with PC, 3 steps of predictor + corrector: 6 score evaluations.
TRAIN = [*TOY_FAST, "logger=none", "callbacks.lr_monitor=null", "callbacks.sample_grid=null",
         "n_samples=0", "trainer.max_steps=2", "trainer.val_check_interval=2",
         "sampler=pc", "schedule.n_steps=3"]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step toy run on data=gmm (512 training points, batch 64) with sde=ve's sigma_max
    left at data=gmm's ``auto``."""
    from scorelab.train import train

    out = tmp_path_factory.mktemp("auto")
    cfg = compose_cfg("train", TRAIN, out)
    assert cfg.sde.sigma_max == "auto"
    train(cfg)
    return out / "checkpoints" / "last.ckpt"


def technique_1(points: np.ndarray) -> float:
    """Song & Ermon (2020), Technique 1: the largest Euclidean distance between two training
    points, by brute force over all pairs (rounded to 2 decimals, as the config documents)."""
    diff = points[:, None, :] - points[None, :, :]
    return round(float(np.sqrt((diff**2).sum(-1)).max()), 2)


def test_training_saves_sigma_max_as_the_number_of_ncsnv2s_rule(run: Path) -> None:
    from scorelab.data.toy import ToyDataModule

    saved = torch.load(run, map_location="cpu", weights_only=True)["scorelab_config"]["sde"]
    # The training set of the run: data=gmm with TOY_FAST's 512 points, seed 0. One pass of the
    # loader (8 batches of 64, shuffled) holds every one of them.
    dm = ToyDataModule(name="gmm", weights=[0.2, 0.8], means=[[-5.0, -5.0], [5.0, 5.0]],
                       stds=[1.0, 1.0], n_train=512, batch_size=64, seed=0)  # fmt: skip
    dm.setup("fit")
    expected = technique_1(dm.train_data.double().numpy())
    assert expected > 10 * 2**0.5  # the two modes at (-5,-5) and (5,5) lie 14.1 apart
    assert isinstance(saved["sigma_max"], float) and saved["sigma_max"] == expected


class Counter:
    def __init__(self) -> None:
        self.calls = 0


@pytest.fixture
def tripwires(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Count torch.load; building a loss, an optimizer, an EMA copy, a ScoreModule, a data
    module or the sigma_max rule raises."""
    import scorelab.lit.build
    import scorelab.losses
    from scorelab.data.toy import ToyDataModule
    from scorelab.lit.ema import EMAModel
    from scorelab.lit.module import ScoreModule

    loads = Counter()
    real_load = torch.load

    def counting_load(*args, **kwargs):
        loads.calls += 1
        return real_load(*args, **kwargs)

    def tripwire(*args, **kwargs):
        raise AssertionError("sampling built a part of the training stack")

    monkeypatch.setattr(torch, "load", counting_load)
    losses = [c for c in vars(scorelab.losses).values() if isinstance(c, type)]
    for cls in [c for c in losses if c.__module__ == "scorelab.losses"]:
        monkeypatch.setattr(cls, "__init__", tripwire)
    for cls in (torch.optim.Optimizer, EMAModel, ScoreModule, ToyDataModule):
        monkeypatch.setattr(cls, "__init__", tripwire)
    for name in ("build_loss", "build_datamodule", "auto_sigma_max", "build_module"):
        monkeypatch.setattr(scorelab.lit.build, name, tripwire)
    return loads


def _sample(ckpt: Path, cli: list[str], out: Path) -> dict:
    cli = [f"ckpt_path={ckpt}", "n_samples=4", *cli]
    return sample(compose_cfg("sample", cli, out), overrides=cli)


def test_sampling_a_checkpoint_loads_it_once_and_builds_no_training_parts(
    run: Path, tmp_path: Path, tripwires: Counter
) -> None:
    info = _sample(run, [], tmp_path)
    assert tripwires.calls == 1
    assert info["sampler"]["name"] == "pc" and info["nfe"] == 2 * 3  # the checkpoint's own
    x = np.load(tmp_path / "samples.npz")["samples"]
    assert x.shape == (4, 2) and np.isfinite(x).all()


def test_the_raw_weights_and_the_ema_weights_are_the_checkpoints(run: Path) -> None:
    from omegaconf import OmegaConf

    from scorelab.lit.sampling_model import load_sampling_model

    state = torch.load(run, map_location="cpu", weights_only=True)["state_dict"]
    for use_ema, prefix in ((True, "ema.module."), (False, "model.")):
        cfg = OmegaConf.create({"ckpt_path": str(run), "use_ema": use_ema})
        model = load_sampling_model(cfg, overrides=[]).model
        mine = model.state_dict()
        assert mine and all(torch.equal(v, state[prefix + k]) for k, v in mine.items())
        assert torch.equal(model.data_moments.mean, state["data_moments.mean"])
        assert model.data_moments.known  # the mixture's exact moments, saved by training


def test_a_checkpoint_with_sigma_max_auto_is_refused_without_reading_data(
    run: Path, tmp_path: Path, tripwires: Counter
) -> None:
    ckpt = torch.load(run, map_location="cpu", weights_only=True)
    ckpt["scorelab_config"]["sde"]["sigma_max"] = "auto"
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    with pytest.raises(CheckpointError) as err:
        _sample(old, [], tmp_path / "a")
    msg = str(err.value)
    assert "\n" not in msg and "sde.sigma_max='auto'" in msg and "sde.sigma_max=VALUE" in msg
    # The fix the message names works, and still reads no data.
    assert _sample(old, ["sde.sigma_max=15.0"], tmp_path / "b")["nfe"] == 6


def test_sampler_keys_on_a_checkpoint_need_no_plus(run: Path, tmp_path: Path) -> None:
    ck = f"ckpt_path={run}"
    # The entry points' rewrite: only with a checkpoint and no sampler=NAME.
    assert checkpoint_sampler_keys([ck, "schedule.n_steps=5", "seed=1"]) == [
        ck,
        "++schedule.n_steps=5",
        "seed=1",
    ]
    for args in (["schedule.n_steps=5"], [ck, "sampler=pc", "schedule.n_steps=5"],
                 [ck, "+schedule.n_steps=5"],
                 ["ckpt_path=null", "schedule.n_steps=5"]):  # fmt: skip
        assert checkpoint_sampler_keys(args) == args
    # Hydra alone refuses the plain key: sample.yaml has no sampler.
    with pytest.raises(ConfigCompositionException, match="schedule"):
        compose_cfg("sample", [ck, "schedule.n_steps=5"], tmp_path)
    plain = checkpoint_sampler_keys([ck, "schedule.n_steps=5"])
    assert _sample(run, plain[1:], tmp_path / "a")["nfe"] == 2 * 5
    assert _sample(run, ["+schedule.n_steps=4"], tmp_path / "b")["nfe"] == 2 * 4  # still works
    # With an experiment, whose sampler keys exist: ++ overrides them for the checkpoint's.
    cli = checkpoint_sampler_keys([ck, "experiment=toy_gmm", "schedule.n_steps=2"])
    assert _sample(run, cli[1:], tmp_path / "c")["nfe"] == 2 * 2


def test_pc_starts_uniformly_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sampler=pc init=uniform``: the PC sampler starts uniformly on [init.low, init.high]
    (it once accepted a uniform start and ignored it)."""
    from scorelab.sampling.start import Start

    starts = []
    real = Start.__call__

    def spy(self, *args, **kwargs):
        x, info = real(self, *args, **kwargs)
        starts.append(x.clone())
        return x, info

    monkeypatch.setattr(Start, "__call__", spy)
    start = ["init=uniform", "init.low=3", "init.high=4"]
    cli = ["model=oracle", "sampler=pc", *start, "schedule.n_steps=1", "sde.sigma_max=20",
           "n_samples=256"]  # fmt: skip
    info = sample(compose_cfg("sample", cli, tmp_path), overrides=cli)
    assert info["sampler"]["start"] == {"kind": "uniform", "low": 3.0, "high": 4.0}
    (x,) = starts
    assert x.shape == (256, 2) and bool(((x >= 3) & (x <= 4)).all())
    assert abs(float(x.mean()) - 3.5) < 0.05  # a prior N(0, 20²) start would be far off


@pytest.mark.slow
def test_sample_cli_takes_sampler_keys_on_a_checkpoint(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "scorelab.sample", f"ckpt_path={run}", "schedule.n_steps=2",
           "n_samples=4", f"hydra.run.dir={out}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "sample_info.json").read_text())["nfe"] == 2 * 2
