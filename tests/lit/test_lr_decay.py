"""module.lr_decay: the learning rate after warm-up, checked against its closed form and
through a real (tiny) fit, and a bad value refused when the module is built."""

from __future__ import annotations

import math

import pytest

from run_helpers import TOY_FAST, bare_trainer, compose_cfg
from scorelab.lit.build import ConfigError, build_datamodule, build_module
from scorelab.lit.module import lr_factor


def test_lr_factor_closed_form():
    # warm-up: (step + 1) / warmup, as before
    assert [lr_factor(s, warmup=4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    # cosine over the 10 steps after a warm-up of 2: half a cosine from 1 down to 0 at step 12
    for s in (2, 5, 7, 12):
        want = 0.5 * (1 + math.cos(math.pi * (s - 2) / 10))
        assert lr_factor(s, warmup=2, decay="cosine", total=12) == pytest.approx(want)
    assert lr_factor(7, warmup=2, decay="cosine", total=12) == pytest.approx(0.5)
    assert lr_factor(7, warmup=2, decay="linear", total=12) == pytest.approx(0.5)
    assert lr_factor(12, warmup=2, decay="linear", total=12) == 0.0
    assert lr_factor(5, warmup=0, decay="none", total=12) == 1.0


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_lr_after_a_fit_follows_the_decay(tmp_path, decay):
    steps, warm, lr = 8, 2, 1e-2
    cfg = compose_cfg(
        "train",
        [
            *TOY_FAST,
            f"module.lr_decay={decay}",
            f"module.warmup_steps={warm}",
            f"optimizer.lr={lr}",
        ],
        tmp_path,
    )
    module, dm = build_module(cfg), build_datamodule(cfg)
    seen: list[float] = []
    step = module.training_step

    def record(batch, batch_idx):
        seen.append(module.optimizers().param_groups[0]["lr"])
        return step(batch, batch_idx)

    module.training_step = record
    bare_trainer(steps).fit(module, datamodule=dm)
    frac = [(s - warm) / (steps - warm) for s in range(warm, steps)]
    shape = [0.5 * (1 + math.cos(math.pi * f)) if decay == "cosine" else 1 - f for f in frac]
    want = [lr * (s + 1) / warm for s in range(warm)] + [lr * v for v in shape]
    assert seen == pytest.approx(want, rel=1e-6)


def test_bad_lr_decay_is_refused(tmp_path):
    cfg = compose_cfg("train", [*TOY_FAST, "module.lr_decay=exponential"], tmp_path)
    with pytest.raises(ConfigError, match=r"lr_decay must be one of .*'exponential'"):
        build_module(cfg)
