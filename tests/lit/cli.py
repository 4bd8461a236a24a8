"""Run the entry points as a user does: ``python -m scorelab.<task> overrides...``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from run_helpers import TOY_FAST

REPO = Path(__file__).resolve().parents[2]
TOY_CLI = TOY_FAST


def run_cli(
    task: str,
    overrides: list[str],
    *,
    env: dict | None = None,
    timeout: int = 300,
    check: bool = True,
) -> subprocess.CompletedProcess:
    full_env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}:{REPO / 'tests' / 'lit'}",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    proc = subprocess.run(
        [sys.executable, "-m", f"scorelab.{task}", *overrides],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"scorelab.{task} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
            f"stderr:\n{proc.stderr[-3000:]}"
        )
    return proc
