"""The kill-and-resume harness: the toy training command (in a subprocess, 60 steps,
checkpoint every 10, or in-process), checkpoint polling, and the bit-for-bit comparison of two
checkpoints. ``benchmarks/soak.py`` runs the same harness at length."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from run_helpers import REPO, run_command, subprocess_env
from scorelab.lit.rng import RNG_KEY

STEPS, EVERY = 60, 10

# A small, fast toy run: mixture data, a 32-unit MLP, VE SDE, checkpoints every `every` steps.
TOY_ARGS = (
    "model.net.hidden=32",
    "model.net.n_layers=2",
    "data.n_val=256",
    "trainer.accelerator=cpu",
    "trainer.limit_val_batches=1",
    "trainer.enable_model_summary=false",
    "callbacks.sample_grid=null",
    "callbacks.progress.refresh_rate=1",
    "logger=none",
    "callbacks.lr_monitor=null",
    "n_samples=0",
)


def train_command(
    log_dir: str | Path, steps: int, every: int, extra: tuple = (), accelerator: str = "cpu"
) -> list[str]:
    """The ``python -m scorelab.train`` command of a toy run writing under ``log_dir``."""
    return [
        sys.executable,
        "-m",
        "scorelab.train",
        *(
            a if not a.startswith("trainer.accelerator=") else f"trainer.accelerator={accelerator}"
            for a in TOY_ARGS
        ),
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={every}",
        *extra,
        f"paths.log_dir={log_dir}",
    ]


def run_dir(log_dir: str | Path) -> Path:
    """The single run directory under ``log_dir`` (``train/runs/<name from overrides>``)."""
    runs = sorted((Path(log_dir) / "train" / "runs").iterdir())
    if len(runs) != 1:
        raise RuntimeError(f"expected one run directory under {log_dir}, found {runs}")
    return runs[0]


def last_checkpoint(log_dir: str | Path) -> Path | None:
    runs = Path(log_dir) / "train" / "runs"
    found = sorted(runs.glob("*/checkpoints/last.ckpt")) if runs.is_dir() else []
    return found[0] if found else None


def checkpoint_step(path: str | Path | None) -> int | None:
    """``global_step`` stored in a checkpoint, or None if there is none (or it is unreadable)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # noqa: BLE001 - a missing or unreadable file means "no step yet"
        return None


def wait_for_step(log_dir: Path, step: int, proc: subprocess.Popen, timeout: float) -> int:
    """Poll ``last.ckpt`` under ``log_dir`` until it holds ``>= step``; returns that step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = checkpoint_step(last_checkpoint(log_dir))
        if got is not None and got >= step:
            return got
        if proc.poll() is not None:
            raise RuntimeError(f"run exited with code {proc.returncode} before step {step}")
        time.sleep(0.05)
    raise TimeoutError(f"no checkpoint at step >= {step} under {log_dir} after {timeout:.0f} s")


def compare_weights(a: str | Path, b: str | Path) -> dict:
    """Compare the model and EMA weights and the step of two checkpoints."""
    ca = torch.load(a, map_location="cpu", weights_only=True)
    cb = torch.load(b, map_location="cpu", weights_only=True)
    sa, sb = ca["state_dict"], cb["state_dict"]
    diff, max_abs = [], 0.0
    for key in sorted(set(sa) | set(sb)):
        if key not in sa or key not in sb or sa[key].shape != sb[key].shape:
            diff.append(key)
            max_abs = float("inf")
        elif not torch.equal(sa[key], sb[key]):
            diff.append(key)
            max_abs = max(max_abs, float((sa[key].double() - sb[key].double()).abs().max()))
    rng_a, rng_b = ca.get(RNG_KEY) or {}, cb.get(RNG_KEY) or {}
    rng_equal = {
        part: same_state(rng_a.get(part), rng_b.get(part))
        for part in sorted(set(rng_a) | set(rng_b))
    }
    return {
        "equal": not diff and ca["global_step"] == cb["global_step"],
        "rng_equal": rng_equal,
        "steps": (int(ca["global_step"]), int(cb["global_step"])),
        "n_tensors": len(sa),
        "differing": diff,
        "max_abs_diff": max_abs,
    }


def same_state(a, b) -> bool:
    """Equality of two saved states: nested dicts, lists and tuples of tensors or plain values."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    return a == b


_PROGRESS = re.compile(r"(\d+)/(\d+) \[")


def progress_step(log: str) -> int:
    """The last ``k`` of the ``k/N`` TQDM training bar ("Epoch ...") in ``log`` (0 if none)."""
    steps = [
        int(m.group(1))
        for part in re.split(r"[\r\n]", log)
        if part.lstrip().startswith("Epoch")
        for m in _PROGRESS.finditer(part)
    ]
    return max(steps, default=0)


def popen(log_dir: Path, log: Path, extra: tuple = (), every: int = EVERY) -> subprocess.Popen:
    """Start the toy training command writing its output into ``log``."""
    with open(log, "w") as fh:
        return subprocess.Popen(
            train_command(log_dir, STEPS, every, extra),
            cwd=REPO,
            env=subprocess_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def run(
    log_dir: Path, extra: tuple = (), env: dict | None = None, every: int = EVERY
) -> subprocess.CompletedProcess:
    """Run the toy training command to its end."""
    return run_command(train_command(log_dir, STEPS, every, extra), env)


# In-process runs: the same settings as the subprocess command, composed with hydra.compose.
def compose_train(
    out: Path, overrides: tuple | list = (), steps: int = 4, every: int = 2, toy: bool = True
):
    """The composed train config of a tiny run writing into ``out`` (``toy``: with the small
    toy-model settings of :data:`TOY_ARGS`)."""
    from hydra import compose, initialize_config_dir

    from scorelab.runs import CONF_DIR

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
