"""A run pre-empted (SIGTERM) before its first periodic checkpoint is resumed by rerunning its
command, and the resumed run keeps writing ``last.ckpt``: not a versioned ``last-v1.ckpt``
beside a stale ``last.ckpt`` that the next rerun, ``ckpt_path=last`` and sampling would read."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import torch
from reliability_helpers import STEPS, popen, progress_step, run, run_dir

# The first periodic checkpoint comes late (step 50 of 60), so a pre-emption at step 3 or later
# lands before it even when this test's poll lags behind a fast toy run.
EVERY = 50


def test_sigterm_before_the_first_save_then_rerun_updates_last_ckpt(tmp_path: Path) -> None:
    log = tmp_path / "first.log"
    proc = popen(tmp_path, log, every=EVERY)
    deadline = time.monotonic() + 300
    while progress_step(log.read_text(errors="replace")) < 3:  # before the save at EVERY
        assert proc.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, "the run did not reach step 3"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, log.read_text()[-2000:]
    ckpts = run_dir(tmp_path) / "checkpoints"
    first = int(torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"])
    assert 3 <= first < EVERY  # the pre-emption save, not a periodic one

    done = run(tmp_path, every=EVERY)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "resuming from" in done.stdout + done.stderr
    assert sorted(p.name for p in ckpts.glob("last*.ckpt")) == ["last.ckpt"]
    assert int(torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"]) == STEPS
