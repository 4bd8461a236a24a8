"""What the study scripts (``experiments/*/run.py``) share; not part of the scorelab package.

A script imports it after putting ``experiments/`` on ``sys.path``::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _study import study_parser
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch

from scorelab.io import write_text_atomic

# Train overrides that shrink an MNIST run of experiment=mnist_demo to seconds (the studies'
# --smoke, what the tests run).
MNIST_SMOKE = [
    "data.limit=512",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1",
    "callbacks.sample_grid=null",
    "n_samples=4",
    "schedule.num_steps=2",
]


def study_parser(doc: str, here: Path) -> argparse.ArgumentParser:
    """The command line the study scripts share: ``--smoke`` for tiny sizes (what the tests
    run) and ``--out`` (default ``<study>/results``)."""
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (tests)")
    p.add_argument("--out", type=Path, default=Path(here) / "results")
    return p


def parse_study(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``, create ``--out`` and use one torch thread (the toy studies' tensors are
    small: a second thread only contends on a shared CPU)."""
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    return a


def write_results(out: Path, stem: str, data: dict | list, md: str | None = None) -> None:
    """``<stem>.json`` (and ``<stem>.md``, also printed, when given) under ``out``."""
    write_text_atomic(out / f"{stem}.json", json.dumps(data, indent=2) + "\n")
    if md is not None:
        write_text_atomic(out / f"{stem}.md", md)
        print(md)


def run_logged(cmd: list[str], log: Path, cwd: Path) -> float:
    """Run ``cmd`` in ``cwd`` with its output streamed into ``log``; the wall time in seconds.
    A non-zero exit raises, naming the log."""
    t0 = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}; see {log}")
    return time.monotonic() - t0
