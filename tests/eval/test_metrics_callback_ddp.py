"""SampleMetrics under real CPU DDP (two gloo ranks): each rank draws its share, the gathered
features give one value, and the checkpoint kept by it is written once (slow: ~70 s)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eval_helpers import TOY_TRAIN

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_ranks_log_one_value_and_keep_the_best_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scorelab.train",
            *TOY_TRAIN,
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.max_steps=6",
            "trainer.val_check_interval=3",
            "n_samples=0",
            "callbacks=metrics",
            "callbacks.sample_metrics.n_samples=101",
            "callbacks.sample_grid=null",
            "sampler.n_steps_each=2",
            "schedule.num_scales=10",
            f"hydra.run.dir={out}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 101 samples over 2 ranks: 51 each, gathered and cut to 101.
    assert "(n=101, NFE 20" in proc.stdout + proc.stderr
    rows = list(csv.DictReader(open(next(out.rglob("metrics.csv")))))
    steps = [int(r["step"]) for r in rows if r.get("val/sliced_w2")]
    assert steps == [3, 6]  # logged once per evaluation, by rank 0
    assert len(list((out / "checkpoints").glob("best_sliced_w2_step_*.ckpt"))) == 1
