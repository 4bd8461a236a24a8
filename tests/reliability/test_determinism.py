"""With a seed, CPU training and sampling give identical results run to run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from reliability_helpers import train_tiny

from scorelab.runs import CONF_DIR
from scorelab.sample import sample


def _weights(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def _sample(ckpt: Path, out: Path) -> np.ndarray:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "sample",
            overrides=[f"ckpt_path={ckpt}", "n_samples=16", "sampler=pc", "schedule.n_steps=20",
                       "seed=3", f"paths.output_dir={out}", f"paths.log_dir={out}/logs"],
        )  # fmt: skip
    sample(cfg)
    return np.load(out / "samples.npz")["samples"]


def test_two_seeded_runs_give_identical_weights_and_samples(tmp_path: Path) -> None:
    overrides = ["seed=7", "n_samples=16", "sampler=pc", "schedule.n_steps=20"]
    runs = [train_tiny(tmp_path / f"run{i}", overrides, steps=6, every=3) for i in range(2)]
    assert runs[0]["metrics"] == runs[1]["metrics"]
    a, b = (_weights(tmp_path / f"run{i}" / "checkpoints" / "last.ckpt") for i in range(2))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the samples drawn at the end of training
    s0, s1 = (np.load(tmp_path / f"run{i}" / "samples.npz")["samples"] for i in range(2))
    assert s0.shape == (16, 2) and np.isfinite(s0).all() and np.array_equal(s0, s1)
    # and python -m scorelab.sample on the checkpoint, twice
    ckpt = tmp_path / "run0" / "checkpoints" / "last.ckpt"
    x0, x1 = _sample(ckpt, tmp_path / "s0"), _sample(ckpt, tmp_path / "s1")
    assert x0.shape == (16, 2) and np.array_equal(x0, x1)
    # a different seed does change the samples (the check above is not vacuous)
    other = train_tiny(tmp_path / "run2", ["seed=8", *overrides[1:]], steps=6, every=3)
    assert other["metrics"] != runs[0]["metrics"]
