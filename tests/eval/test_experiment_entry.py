"""``experiment=NAME`` in ``scorelab.sample`` and ``scorelab.evaluate``: the experiment's data,
SDE and sampler come along (e.g. with the oracle); a checkpoint's own settings win over the
experiment's, with the command line's keys on top.

The expected values are read off ``conf/experiment/toy_gmm.yaml`` (annealed Langevin with 20
steps at each of 50 levels, VE SDE with sigma_min 0.1) and the group files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from run_helpers import REPO, TOY_FAST, compose_cfg, subprocess_env
from scorelab.lit.build import ConfigError
from scorelab.lit.sampling_model import load_sampling_model
from scorelab.runs import CONF_DIR, own_group_settings
from scorelab.sample import sample

# toy_gmm's sampler: annealed Langevin, n_steps_each x num_scales evaluations.
TOY_ALD_NFE = 20 * 50


def _compose(config: str, cli: list[str], out: Path):
    """The config an entry point sees for ``cli``, as ``scorelab.runs.entry_point`` hands it
    to the task (the sampler named on the command line with its own settings)."""
    extra = [f"paths.output_dir={out}", f"paths.log_dir={out}/logs"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config, overrides=[*cli, *extra])
        return own_group_settings(cfg, config, [*cli, *extra])


def _cli(task: str, args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", f"scorelab.{task}", *args]
    return subprocess.run(
        cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )


def test_experiment_settings_come_along_and_the_tasks_own_keys_win(tmp_path: Path) -> None:
    cfg = _compose("sample", ["experiment=toy_gmm", "model=oracle"], tmp_path)
    assert cfg.sde.sigma_min == 0.1 and cfg.data.batch_size == 256  # the experiment's
    assert cfg.sampler.n_steps_each == 20 and cfg.schedule.num_scales == 50
    assert cfg.model.oracle is True  # model=oracle on the command line wins
    assert cfg.n_samples == 64  # sample.yaml's own, not the experiment's 1000
    ev = _compose("evaluate", ["experiment=mnist_demo"], tmp_path)
    assert ev.data.scaling == "minus_one_one"  # the demo's data settings ...
    assert ev.n_samples == 1000  # ... but evaluate.yaml's sample count, not the demo's 100


def test_a_sampler_named_on_the_command_line_comes_with_its_own_settings(tmp_path) -> None:
    cfg = _compose("sample", ["experiment=toy_gmm", "model=oracle", "sampler=pc"], tmp_path)
    pc = compose_cfg("sample", ["sampler=pc"], tmp_path).sampler
    assert cfg.sampler == pc  # none of annealed Langevin's keys leak into PC
    cli = ["experiment=toy_gmm", "sampler=pc", "schedule.n_steps=7"]
    assert _compose("sample", cli, tmp_path).schedule.n_steps == 7
    # Naming the experiment's own sampler keeps the experiment's settings for it.
    cfg = _compose("sample", ["experiment=toy_gmm", "sampler=ald"], tmp_path)
    assert cfg.sampler.n_steps_each == 20 and cfg.schedule.num_scales == 50


def test_sample_oracle_of_an_experiment_uses_its_sampler(tmp_path: Path) -> None:
    cli = ["experiment=toy_gmm", "model=oracle", "n_samples=64"]
    info = sample(_compose("sample", cli, tmp_path), overrides=cli)
    assert info["nfe"] == TOY_ALD_NFE and info["sampler"]["name"] == "ald"
    x = np.load(tmp_path / "samples.npz")["samples"]
    # NCSN's mixture: 0.2 N((-5,-5), I) + 0.8 N((5,5), I); 64 points, both modes hit.
    assert x.shape == (64, 2) and 0 < (x[:, 0] < 0).sum() < 64


def test_sample_cli_experiment_oracle_pc(tmp_path: Path) -> None:
    """The command of the report: it used to end in Hydra's "Could not override 'experiment'"."""
    out = tmp_path / "run"
    proc = _cli("sample", ["experiment=toy_gmm", "model=oracle", "sampler=pc", "n_samples=16",
                           "sde.N=50", f"hydra.run.dir={out}"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "sample_info.json").read_text())
    assert info["sampler"]["name"] == "pc" and info["nfe"] == 2 * 50  # predictor + corrector
    assert np.load(out / "samples.npz")["samples"].shape == (16, 2)


def test_evaluate_cli_experiment_oracle_pc(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["experiment=toy_gmm", "model=oracle", "sampler=pc", "n_samples=200", "sde.N=50",
            "metrics=[sliced_w2]", "toy.n_reference=400", f"hydra.run.dir={out}"]  # fmt: skip
    proc = _cli("evaluate", args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["source"] == {"kind": "oracle"} and m["n_samples"] == 200
    assert m["sampler"]["name"] == "pc" and m["nfe"] == 100
    assert np.isfinite(m["metrics"]["sliced_w2"])


@pytest.fixture(scope="module")
def toy_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-step run sampled by PC with 3 steps (6 evaluations); toy_gmm uses annealed Langevin."""
    from scorelab.train import train

    out = tmp_path_factory.mktemp("ckpt")
    cli = [*TOY_FAST, "logger=none", "callbacks.lr_monitor=null", "callbacks.sample_grid=null",
           "n_samples=0", "trainer.max_steps=4", "trainer.val_check_interval=2",
           "sampler=pc", "schedule.n_steps=3"]  # fmt: skip
    train(compose_cfg("train", cli, out))
    return out / "checkpoints" / "last.ckpt"


def _nfe(ckpt: Path, cli: list[str], out: Path) -> int:
    cli = [f"ckpt_path={ckpt}", "n_samples=8", *cli]
    return sample(_compose("sample", cli, out), overrides=cli)["nfe"]


def test_a_checkpoints_settings_win_over_the_experiments(toy_ckpt: Path, tmp_path: Path) -> None:
    # Its own sampler (PC, 2 x 3), not the experiment's (annealed Langevin, 20 x 50) ...
    assert _nfe(toy_ckpt, ["experiment=toy_gmm"], tmp_path / "a") == 2 * 3
    # ... with the command line's keys on top ...
    assert _nfe(toy_ckpt, ["experiment=toy_gmm", "+schedule.n_steps=5"], tmp_path / "b") == 10
    assert _nfe(toy_ckpt, ["sampler=pc", "schedule.n_steps=4"], tmp_path / "c") == 8
    # ... or another sampler the command line names: the experiment's settings for it apply.
    cli = ["experiment=toy_gmm", "sampler=ald", "schedule.num_scales=5"]
    assert _nfe(toy_ckpt, cli, tmp_path / "d") == 20 * 5

    # Its SDE (the default VE's sigma_min 0.01, not toy_gmm's 0.1), keys of the command line on top.
    cli = [f"ckpt_path={toy_ckpt}", "experiment=toy_gmm", "sde.N=50"]
    loaded = load_sampling_model(_compose("sample", cli, tmp_path / "e"), cli)
    assert loaded.config["sde"]["sigma_min"] == 0.01 and loaded.config["sde"]["N"] == 50
    assert loaded.config["data"]["batch_size"] == 64  # TOY_FAST's, not toy_gmm's 256


def test_a_checkpoint_refuses_another_sde_in_one_line(toy_ckpt: Path, tmp_path: Path) -> None:
    cli = [f"ckpt_path={toy_ckpt}", "sde=vp"]
    with pytest.raises(ConfigError) as err:
        load_sampling_model(_compose("sample", cli, tmp_path), cli)
    msg = str(err.value)
    assert "\n" not in msg and "'sde=vp'" in msg and "sde.NAME=VALUE" in msg
