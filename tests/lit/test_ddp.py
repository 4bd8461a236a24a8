"""A 2-process CPU DDP fit (gloo): both ranks train on different shards, stay in sync, and one
checkpoint is written."""

from __future__ import annotations

import json

from cli import TOY_CLI, run_cli


def _ddp_run(tmp_path, overrides: list[str]) -> tuple[list[dict], object]:
    """Train the toy model on 2 CPU ranks (gloo) with a probe callback; returns each rank's
    record and the run directory."""
    probe, logs = tmp_path / "probe", tmp_path / "logs"
    run_cli(
        "train",
        [
            *TOY_CLI,
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            *overrides,
            "+callbacks.probe._target_=rank_probe.RankProbe",
            f"+callbacks.probe.out_dir={probe}",
            f"paths.log_dir={logs}",
        ],
        timeout=400,
    )
    records = [json.loads((probe / f"rank_{r}.json").read_text()) for r in (0, 1)]
    (run_dir,) = list((logs / "train" / "runs").iterdir())
    return records, run_dir


def test_cpu_ddp_two_ranks(tmp_path):
    records, run_dir = _ddp_run(
        tmp_path,
        [
            "trainer.max_steps=6",
            "trainer.val_check_interval=3",
            "n_samples=8",
            "sampler.n_steps_each=2",
            "schedule.num_scales=5",
            "callbacks.sample_grid.every_n_steps=3",
            "callbacks.sample_grid.n_samples=6",
        ],
    )
    assert [r["world"] for r in records] == [2, 2]
    assert [r["steps"] for r in records] == [6, 6]
    # Different shards of data, identical weights after every all-reduce.
    assert records[0]["first_batch_sum"] != records[1]["first_batch_sum"]
    assert abs(records[0]["checksum"] - records[1]["checksum"]) < 1e-9
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("last*.ckpt")) == ["last.ckpt"]
    # Samples are drawn per rank and gathered on rank 0 into one figure per step.
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == [
        "step_0000003.png",
        "step_0000006.png",
    ]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 6


def test_cpu_ddp_with_gradient_accumulation(tmp_path):
    """Two ranks, two batches per optimizer step: the first batch's backward skips the
    all-reduce (no_sync), the second reduces the accumulated sum, so the ranks still end with
    identical weights, and max_steps counts optimizer steps."""
    records, run_dir = _ddp_run(
        tmp_path,
        [
            "trainer.max_steps=3",
            "trainer.val_check_interval=2",
            "module.accumulate_grad_batches=2",
            "n_samples=0",
            "callbacks.sample_grid=null",
        ],
    )
    assert [r["steps"] for r in records] == [6, 6]  # batches seen per rank
    assert [r["global_step"] for r in records] == [3, 3]  # optimizer steps
    assert abs(records[0]["checksum"] - records[1]["checksum"]) < 1e-9
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 3
