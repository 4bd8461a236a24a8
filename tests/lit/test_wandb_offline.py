"""``logger=wandb`` works with ``WANDB_MODE=offline`` and no network: config, losses and sample
images land in the offline run; the API key never does."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from cli import TOY_CLI, run_cli

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"
# The validation loss bucketed by the noise level t of the continuous SDE (val_buckets: 4).
BUCKETS = ["val/loss_t_0.00-0.25", "val/loss_t_0.25-0.50", "val/loss_t_0.50-0.75",
           "val/loss_t_0.75-1.00"]  # fmt: skip


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run log (``run-*.wandb``): a 7-byte file header
    (``:W&B``, magic, version), then LevelDB-log framing in 32 KiB blocks: each piece has a
    7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) and a piece header
    never straddles a block end. Each record is a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", data[:7]
    pos, parts, out = 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # padding at the end of a block
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            parts = chunk
        elif kind in (3, 4):
            parts += chunk
            if kind == 4:
                out.append(parts)
    return [pb.Record.FromString(r) for r in out]


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def test_wandb_offline_logs_config_metrics_and_images(tmp_path):
    logs = tmp_path / "logs"
    env = {
        "WANDB_MODE": "offline",
        "WANDB_API_KEY": FAKE_KEY,
        "WANDB_SILENT": "true",
        "WANDB_CACHE_DIR": str(tmp_path / "wb_cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wb"),
    }
    run_cli(
        "train",
        [
            *TOY_CLI,
            "logger=wandb",
            "trainer.max_steps=6",
            "trainer.val_check_interval=3",
            "trainer.log_every_n_steps=1",
            "n_samples=0",
            "sampler.n_steps_each=2",
            "schedule.num_scales=5",
            "callbacks.sample_grid.every_n_steps=3",
            "callbacks.sample_grid.n_samples=8",
            "tags=[test,wandb]",
            f"paths.log_dir={logs}",
        ],
        env=env,
        timeout=400,
    )
    (run_dir,) = list((logs / "train" / "runs").iterdir())
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    # The offline run log: protobuf records (run, config, history), read here record by record.
    (log,) = list(offline[0].glob("run-*.wandb"))
    records = wandb_records(log)
    kinds = [r.WhichOneof("record_type") for r in records]
    (run,) = [r.run for r, k in zip(records, kinds) if k == "run"]
    assert list(run.tags) == ["test", "wandb"]
    config = {
        _key(it): json.loads(it.value_json)
        for r, k in zip(records, kinds)
        if k == "config"
        for it in r.config.update
    }
    assert config["sde"]["_target_"] == "scorelab.sde.VESDE" and "optimizer" in config
    rows = [
        {_key(it): it.value_json for it in r.history.item}
        for r, k in zip(records, kinds)
        if k == "history"
    ]
    assert sum("train/loss" in row for row in rows) == 6  # log_every_n_steps=1
    assert any("samples/nfe" in row for row in rows)
    val_rows = [row for row in rows if "val/loss" in row]
    assert len(val_rows) == 2  # validation at steps 3 and 6
    for row in val_rows:
        # The exact keys, not a prefix: val/loss and each of the four noise-level buckets.
        assert set(BUCKETS) <= set(row), sorted(row)
        buckets = [float(row[b]) for b in BUCKETS]
        total = float(row["val/loss"])
        assert all(math.isfinite(v) for v in [*buckets, total])
        assert min(buckets) <= total <= max(buckets)  # a mean of the buckets' samples
    images = list((offline[0] / "files" / "media" / "images").glob("samples_*.png"))
    assert len(images) == 2
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path
