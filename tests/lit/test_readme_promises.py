"""What the README promises of a training run, each on a tiny in-process run: the TensorBoard
and combined loggers, ``ckpt_path=last``, image ``samples.npz`` in [0, 1], and ``perf=safe_fast``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

from run_helpers import TOY_FAST, compose_cfg
from scorelab.train import train

# The validation loss and its four noise-level buckets (continuous VE SDE of the toy run).
VAL_KEYS = ["val/loss", "val/loss_t_0.00-0.25", "val/loss_t_0.25-0.50", "val/loss_t_0.50-0.75",
            "val/loss_t_0.75-1.00"]  # fmt: skip
TINY = [
    *TOY_FAST,
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "n_samples=0",
    "callbacks.sample_grid=null",
]


def _train(out: Path, overrides: list[str]) -> dict:
    return train(compose_cfg("train", [*TINY, *overrides], out))


def _tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files under ``folder``: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = list(folder.rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _check_tensorboard(folder: Path) -> None:
    scalars = _tensorboard_scalars(folder)
    assert len(scalars["train/loss"]) == 4, scalars.get("train/loss")  # log_every_n_steps=1
    for key in VAL_KEYS:
        assert [step for step, _ in scalars[key]] == [1, 3], key  # validation after steps 2, 4
        assert all(math.isfinite(v) for _, v in scalars[key])


def test_tensorboard_logger_writes_losses_and_buckets(tmp_path: Path) -> None:
    result = _train(tmp_path, ["logger=tensorboard", "trainer.log_every_n_steps=1"])
    assert result["status"] == "ok"
    _check_tensorboard(tmp_path / "tensorboard")
    assert not (tmp_path / "csv").exists()


def test_many_loggers_write_csv_and_tensorboard(tmp_path: Path) -> None:
    result = _train(tmp_path, ["logger=many", "trainer.log_every_n_steps=1"])
    assert result["status"] == "ok"
    _check_tensorboard(tmp_path / "tensorboard")
    (metrics_csv,) = list((tmp_path / "csv").rglob("metrics.csv"))
    with open(metrics_csv) as fh:
        rows = list(csv.DictReader(fh))
    assert set(VAL_KEYS) <= set(rows[0])
    assert sum(bool(r["val/loss"]) for r in rows) == 2
    assert sum(bool(r["train/loss"]) for r in rows) == 4


def test_ckpt_path_last_resumes_the_run(tmp_path: Path) -> None:
    first = _train(tmp_path, [])
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert first["global_step"] == 4 and last.is_file()
    resumed = _train(tmp_path, ["ckpt_path=last", "trainer.max_steps=6"])
    assert resumed["status"] == "ok" and resumed["resumed_from"] == str(last)
    assert resumed["global_step"] == 6
    assert torch.load(last, weights_only=True)["global_step"] == 6


def test_image_samples_npz_lies_in_the_unit_interval(tmp_path: Path, mnist_root: Path) -> None:
    """mnist_demo trains on [-1, 1] data; its samples.npz holds images in [0, 1]."""
    out = tmp_path / "run"
    result = _train_images(out, mnist_root)
    assert result["status"] == "ok" and result["samples"]["n"] == 4
    x = np.load(out / "samples.npz")["samples"]
    assert x.shape == (4, 1, 28, 28) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert (out / "samples_grid.png").is_file()


def _train_images(out: Path, mnist_root: Path) -> dict:
    overrides = [
        "experiment=mnist_demo",
        "debug=smoke",
        f"paths.data_dir={mnist_root}",
        "n_samples=4",
        "schedule.num_steps=2",
        "callbacks.progress=null",
    ]
    return train(compose_cfg("train", overrides, out))


def test_perf_safe_fast_trains_and_its_checkpoint_loads(tmp_path: Path) -> None:
    """perf=safe_fast without torch.compile (compiling takes a minute; the slow test
    test_toy_run_trains_with_the_fast_path_and_resumes_eager compiles): bf16 autocast, fused
    Adam and the per-step non-finite check train, and the checkpoint resumes eagerly."""
    from scorelab.lit.build import load_module

    cfg = compose_cfg("train", [*TINY, "perf=safe_fast", "module.compile=false"], tmp_path)
    assert cfg.trainer.precision == "bf16-mixed" and cfg.optimizer.fused is True
    assert cfg.module.nonfinite == "skip"
    result = train(cfg)
    assert result["status"] == "ok" and result["global_step"] == 4
    assert result["skipped_steps"] == 0 and math.isfinite(result["metrics"]["train/loss"])
    module = load_module(tmp_path / "checkpoints" / "last.ckpt")
    x = torch.randn(8, 2)
    assert torch.isfinite(module.ema_model()(x, torch.full((8,), 0.5))).all()
