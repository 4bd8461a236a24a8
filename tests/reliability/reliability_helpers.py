"""Start the toy training command in a subprocess (60 steps, checkpoint every 10)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from scorelab.soak import REPO, subprocess_env, train_command

STEPS, EVERY = 60, 10


def popen(log_dir: Path, log: Path, extra: tuple = ()) -> subprocess.Popen:
    """Start the toy training command writing its output into ``log``."""
    with open(log, "w") as fh:
        return subprocess.Popen(
            train_command(log_dir, STEPS, EVERY, extra),
            cwd=REPO,
            env=subprocess_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def run(log_dir: Path, extra: tuple = (), env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the toy training command to its end."""
    return subprocess.run(
        train_command(log_dir, STEPS, EVERY, extra),
        cwd=REPO,
        env=env or subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


# In-process runs: the same settings as the subprocess command, composed with hydra.compose.
def compose_train(
    out: Path, overrides: tuple | list = (), steps: int = 4, every: int = 2, toy: bool = True
):
    """The composed train config of a tiny run writing into ``out`` (``toy``: with the small
    toy-model settings of :data:`scorelab.soak.TOY_ARGS`)."""
    from hydra import compose, initialize_config_dir

    from scorelab.runs import CONF_DIR
    from scorelab.soak import TOY_ARGS

    args = [
        *(TOY_ARGS if toy else ("logger=none", "callbacks.lr_monitor=null", "n_samples=0")),
        "callbacks.progress=null",
        "++trainer.enable_progress_bar=false",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={every}",
        *overrides,
        f"paths.output_dir={out}",
        f"paths.log_dir={out}/logs",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=args)


def train_tiny(out: Path, overrides: tuple | list = (), steps: int = 4, every: int = 2) -> dict:
    """Train a tiny toy run in-process; returns train()'s result dict."""
    from scorelab.train import train

    return train(compose_train(out, overrides, steps, every))
