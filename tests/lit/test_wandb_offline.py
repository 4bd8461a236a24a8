"""``logger=wandb`` works with ``WANDB_MODE=offline`` and no network: config, losses and sample
images land in the offline run; the API key never does."""

from __future__ import annotations

from cli import TOY_CLI, run_cli

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"


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
            "sampler.num_scales=5",
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
    # The offline run log holds protobuf records (config, history) with their keys as raw
    # strings; wandb sync uploads it later.
    (log,) = list(offline[0].glob("run-*.wandb"))
    records = log.read_bytes()
    for needle in (
        b"scorelab.sde.VESDE",
        b"optimizer",
        b"train/loss",
        b"val/loss",
        b"samples/nfe",
        b"wandb",
    ):
        assert needle in records, needle
    images = list((offline[0] / "files" / "media" / "images").glob("samples_*.png"))
    assert len(images) == 2
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path
