"""A run killed with SIGKILL, or pre-empted with SIGTERM/SIGUSR1, resumes bit for bit.

Real subprocess runs of the toy command (60 steps, checkpoint every 10). The resumed run's final
``last.ckpt`` must equal an uninterrupted run's bit for bit: step, model and EMA weights,
optimizer, LR schedule, data-sampler position and RNG states (CPU, same thread count, same
command: nothing is left to chance once all of these are restored).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import torch
from reliability_helpers import (
    EVERY,
    STEPS,
    checkpoint_step,
    compare_weights,
    popen,
    run,
    run_dir,
    train_tiny,
    wait_for_step,
)

# Everything a resume restores, by checkpoint key (the data module's key is its class name).
# Left out: "callbacks" and "scorelab_config" hold the run's own paths, "loops" Lightning's
# progress counters (validation and restarts count differently; global_step covers training).
RESTORED = ("global_step", "epoch", "state_dict", "optimizer_states", "lr_schedulers",
            "ToyDataModule", "scorelab_rng")  # fmt: skip


def differences(a, b, where: str = "") -> list[str]:
    """Paths at which two checkpoint values differ (tensors bit for bit)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)
        )
        return [] if same else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where} keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{where} length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def assert_same_training_state(reference: Path, final: Path) -> None:
    """Step, weights, EMA, optimizer, LR schedule, data-sampler position and RNG states of two
    checkpoints are identical, bit for bit."""
    ca = torch.load(reference, map_location="cpu", weights_only=True)
    cb = torch.load(final, map_location="cpu", weights_only=True)
    for key in RESTORED:
        assert key in ca and key in cb, key
    assert ca["optimizer_states"][0]["state"], "the optimizer has moments to compare"
    assert set(cb["scorelab_rng"]) == {"torch", "python", "numpy"}
    assert differences({k: ca[k] for k in RESTORED}, {k: cb[k] for k in RESTORED}) == []


def _assert_same_as_reference(reference: Path, log_dir: Path) -> None:
    final = run_dir(log_dir) / "checkpoints" / "last.ckpt"
    cmp = compare_weights(reference, final)
    assert cmp["steps"] == (STEPS, STEPS)
    assert any(k.startswith("ema.") for k in torch.load(final, weights_only=True)["state_dict"])
    assert cmp["equal"], f"differing tensors {cmp['differing']}, max |diff| {cmp['max_abs_diff']}"
    assert_same_training_state(reference, final)


def test_sigkill_after_step_30_checkpoint_then_rerun_resumes_bit_for_bit(
    tmp_path: Path, reference_ckpt: Path
) -> None:
    log_dir = tmp_path / "logs"
    proc = popen(log_dir, tmp_path / "killed.log")
    try:
        saved = wait_for_step(log_dir, 30, proc, timeout=300)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    left = checkpoint_step(run_dir(log_dir) / "checkpoints" / "last.ckpt")
    assert left is not None and 30 <= left < STEPS and left % EVERY == 0 and left >= saved

    done = run(log_dir)  # the same command: lands in the same run dir and resumes
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run_dir(log_dir) / "metrics.json").read_text())
    assert metrics["resumed_from"].endswith("last.ckpt") and metrics["global_step"] == STEPS
    _assert_same_as_reference(reference_ckpt, log_dir)


def test_sigterm_saves_last_ckpt_exits_0_and_rerun_resumes_bit_for_bit(
    tmp_path: Path, reference_ckpt: Path
) -> None:
    """SIGUSR1 takes the same path; it is tested in-process in test_preemption.py."""
    sig = signal.SIGTERM
    log_dir = tmp_path / "logs"
    proc = popen(log_dir, tmp_path / "signalled.log")
    try:
        wait_for_step(log_dir, EVERY, proc, timeout=300)
        proc.send_signal(sig)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "signalled.log").read_text(errors="replace")
    assert proc.returncode == 0, log[-3000:]
    assert f"{sig.name} received: saved" in log
    stopped = checkpoint_step(run_dir(log_dir) / "checkpoints" / "last.ckpt")
    assert stopped is not None and EVERY <= stopped < STEPS
    metrics = json.loads((run_dir(log_dir) / "metrics.json").read_text())
    assert metrics["global_step"] == stopped and metrics["status"] == "preempted"
    assert "rerun the command to resume" in metrics["error"]

    done = run(log_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from {run_dir(log_dir) / 'checkpoints' / 'last.ckpt'}" in done.stderr
    metrics = json.loads((run_dir(log_dir) / "metrics.json").read_text())
    assert metrics["global_step"] == STEPS and metrics["status"] == "ok"
    _assert_same_as_reference(reference_ckpt, log_dir)


def test_resume_from_a_checkpoint_written_inside_validation(tmp_path: Path) -> None:
    """The first checkpoint (step 10) is written in on_validation_end, because ModelCheckpoint
    defers it until its monitored val/loss exists: inside validation's forked RNG stream. The
    checkpoint must still carry the training stream (in-process, cheap)."""
    whole = train_tiny(tmp_path / "whole", steps=20, every=10)
    train_tiny(tmp_path / "split", steps=10, every=10)
    resumed = train_tiny(tmp_path / "split", steps=20, every=10)
    assert resumed["resumed_from"] == str(tmp_path / "split" / "checkpoints" / "last.ckpt")
    assert whole["global_step"] == resumed["global_step"] == 20
    whole_ckpt = tmp_path / "whole" / "checkpoints" / "last.ckpt"
    split_ckpt = tmp_path / "split" / "checkpoints" / "last.ckpt"
    cmp = compare_weights(whole_ckpt, split_ckpt)
    assert cmp["equal"], f"differing tensors {cmp['differing']}, max |diff| {cmp['max_abs_diff']}"
    assert_same_training_state(whole_ckpt, split_ckpt)
