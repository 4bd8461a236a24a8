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
