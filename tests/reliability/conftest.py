"""One uninterrupted reference run of the toy command, shared by the kill and pre-emption tests
(each subprocess run costs seconds of start-up)."""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_helpers import run, run_dir


@pytest.fixture(scope="session")
def reference_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``last.ckpt`` of an uninterrupted run of the toy command."""
    log_dir = tmp_path_factory.mktemp("reference")
    proc = run(log_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir(log_dir) / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``last.ckpt`` of a 4-step in-process toy run (32-unit MLP)."""
    from reliability_helpers import train_tiny

    out = tmp_path_factory.mktemp("tiny")
    train_tiny(out)
    return out / "checkpoints" / "last.ckpt"
