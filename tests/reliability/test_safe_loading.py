"""Checkpoints load with ``weights_only=True``; no unrestricted unpickling in src/; secrets from
the environment never reach configs, logs or checkpoints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from reliability_helpers import TOY_ARGS, run_dir

from run_helpers import REPO, run_command, subprocess_env


def test_real_checkpoint_loads_with_weights_only(tiny_ckpt: Path) -> None:
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "loops", "scorelab_config",
                "scorelab_rng", "ToyDataModule"):  # fmt: skip
        assert key in ckpt, key
    assert ckpt["global_step"] == 4
    assert any(k.startswith("ema.module.") for k in ckpt["state_dict"])
    assert isinstance(ckpt["scorelab_rng"]["torch"], torch.Tensor)


def _call_text(source: str, start: int) -> str:
    """The text of the call whose '(' is at or after ``start``, up to its matching ')'."""
    i, depth = source.index("(", start), 0
    for j in range(i, len(source)):
        depth += {"(": 1, ")": -1}.get(source[j], 0)
        if depth == 0:
            return source[i : j + 1]
    raise AssertionError("unbalanced call")


def _git_grep(pattern: str) -> list[tuple[str, int]]:
    out = subprocess.run(
        ["git", "grep", "-n", "-E", pattern, "--", "src/"],
        cwd=REPO, capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return [(line.split(":", 2)[0], int(line.split(":", 2)[1])) for line in out.splitlines()]


def test_no_unrestricted_pickle_in_src() -> None:
    # every torch.load passes weights_only=True
    loads = _git_grep(r"torch\.load\(")
    assert loads, "git grep found no torch.load at all: is this a git checkout?"
    for path in sorted({p for p, _ in loads}):
        source = (REPO / path).read_text()
        for m in re.finditer(r"torch\.load\(", source):  # calls, and mentions in docstrings
            call = _call_text(source, m.start())
            assert "weights_only=True" in call, f"{path}: torch.load{call}"
    # no plain pickle/dill/joblib loads, no numpy pickles
    banned = r"pickle\.loads?\(|dill|cloudpickle|joblib\.load|allow_pickle=True"
    assert _git_grep(banned) == []
    # the one Unpickler is the restricted one of the MNIST preparation, with find_class
    users = {p for p, _ in _git_grep(r"Unpickler")}
    assert users == {"src/scorelab/data/prepare.py"}
    assert "def find_class" in (REPO / "src/scorelab/data/prepare.py").read_text()


def test_wandb_api_key_never_written_to_the_run_dir(tmp_path: Path) -> None:
    secret = "f4k3" + "0123456789abcdef" * 2 + "f4k3"  # 40 characters, like a real key
    env = {
        **subprocess_env(),
        "WANDB_API_KEY": secret,
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path / "wandb_home"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb_config"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb_cache"),
    }
    args = [a for a in TOY_ARGS if not a.startswith(("logger=", "callbacks.lr_monitor"))]
    proc = run_command(
        [sys.executable, "-m", "scorelab.train", *args, "logger=wandb", "trainer.max_steps=4",
         "trainer.val_check_interval=2", f"paths.log_dir={tmp_path}/logs"],
        env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert secret not in proc.stdout + proc.stderr
    run = run_dir(tmp_path / "logs")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files), "no offline W&B run was written"
    assert any(p.name == "last.ckpt" for p in files) and (run / ".hydra/config.yaml").is_file()
    leaks = [p for p in files if secret.encode() in p.read_bytes()]
    assert leaks == []
    assert os.environ.get("WANDB_API_KEY") != secret  # the test did not leak it into pytest
