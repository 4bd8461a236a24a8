"""Atomic checkpoint writes and one-line errors for truncated, corrupt or mismatched files."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from reliability_helpers import compose_train

import scorelab.train
from run_helpers import REPO, run_command, subprocess_env
from scorelab.io import CheckpointError, read_checkpoint
from scorelab.lit.build import load_module
from scorelab.lit.callbacks import AtomicCheckpointIO
from scorelab.train import train


def _tmp_leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_crash_inside_save_keeps_the_previous_last_ckpt(
    tmp_path: Path, tiny_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = read_checkpoint(tiny_ckpt)
    last = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(ckpt, last)
    before = last.read_bytes()
    real_save = torch.save

    def save_half_then_crash(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.seek(0)
        f.truncate(len(before) // 2)  # half the bytes are on disk when the "crash" comes
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_crash)
    newer = {**ckpt, "global_step": ckpt["global_step"] + 1}
    with pytest.raises(OSError, match="No space left"):
        AtomicCheckpointIO().save_checkpoint(newer, last)
    monkeypatch.undo()

    assert last.read_bytes() == before
    assert read_checkpoint(last)["global_step"] == ckpt["global_step"]
    assert load_module(last).skipped_steps.item() == 0
    assert _tmp_leftovers(tmp_path) == []


WRITER = """
import sys, torch
from scorelab.io import atomic_torch_save
k = 0
while True:
    k += 1
    atomic_torch_save({"k": k, "w": torch.full((2_000_000,), float(k))}, sys.argv[1])
    print(k, flush=True)
"""


def test_sigkill_during_writes_never_leaves_a_truncated_file(tmp_path: Path) -> None:
    """A writer saving 8 MB checkpoints back to back is killed while it writes."""
    path = tmp_path / "last.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(3):  # let a few saves complete, so the kill lands mid-way through one
            assert proc.stdout.readline(), "writer died"
        time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    saved = torch.load(path, weights_only=True)
    assert saved["k"] >= 3
    assert torch.equal(saved["w"], torch.full((2_000_000,), float(saved["k"])))


def _truncated(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return dst


def _garbage(src: Path, dst: Path) -> Path:
    dst.write_bytes(os.urandom(4096))
    return dst


def _empty(src: Path, dst: Path) -> Path:
    dst.write_bytes(b"")
    return dst


def _flipped(src: Path, dst: Path) -> Path:
    """Whole zip directory, but the pickle's bytes damaged."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("data.pkl"))
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start : start + 64] = b"\xff" * 64
    dst.write_bytes(bytes(data))
    return dst


BAD_FILES = [_truncated, _garbage, _empty, _flipped]


@pytest.mark.parametrize("damage", BAD_FILES, ids=lambda f: f.__name__.strip("_"))
def test_damaged_checkpoint_gives_one_line_checkpoint_error_naming_the_file(
    tmp_path: Path, tiny_ckpt: Path, damage
) -> None:
    bad = damage(tiny_ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError) as err:
        load_module(bad)
    msg = str(err.value)
    assert str(bad) in msg and "\n" not in msg
    assert "truncated or corrupt" in msg


def test_sample_cli_with_corrupt_checkpoint_prints_one_line_and_exits_2(
    tmp_path: Path, tiny_ckpt: Path
) -> None:
    bad = _truncated(tiny_ckpt, tmp_path / "bad.ckpt")
    proc = run_command(
        [sys.executable, "-m", "scorelab.sample", f"ckpt_path={bad}", f"paths.log_dir={tmp_path}"]
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: checkpoint") and str(bad) in lines[0]
    assert "truncated or corrupt" in lines[0]


def _no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(cfg):
        raise AssertionError("the data module was built before the error")

    monkeypatch.setattr(scorelab.train, "build_datamodule", refuse)


def test_train_with_corrupt_ckpt_path_fails_before_data(
    tmp_path: Path, tiny_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = _truncated(tiny_ckpt, tmp_path / "bad.ckpt")
    _no_data(monkeypatch)
    with pytest.raises(CheckpointError, match=f"checkpoint {bad} is truncated or corrupt"):
        train(compose_train(tmp_path / "run", [f"ckpt_path={bad}"]))


def test_implicit_resume_from_a_corrupt_last_ckpt_names_the_file(
    tmp_path: Path, tiny_ckpt: Path
) -> None:
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    bad = _flipped(tiny_ckpt, out / "checkpoints" / "last.ckpt")
    with pytest.raises(CheckpointError) as err:
        train(compose_train(out))
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_checkpoint_of_another_architecture_lists_the_mismatched_keys(
    tmp_path: Path, tiny_ckpt: Path
) -> None:
    # load_module rebuilds from the config inside the file: give it a config that disagrees
    ckpt = read_checkpoint(tiny_ckpt)
    ckpt["scorelab_config"]["model"]["net"]["hidden"] = 48
    other = tmp_path / "other.ckpt"
    torch.save(ckpt, other)
    with pytest.raises(CheckpointError) as err:
        load_module(other)
    msg = str(err.value)
    assert "\n" not in msg and str(other) in msg
    assert re.search(r"shape mismatches \d+: ", msg)  # 5 in the model, 5 in its EMA
    assert "net.layers.0.weight: checkpoint (32, 34) vs model (48, 34)" in msg

    # resuming training with a different network: one line too, not a per-tensor traceback
    with pytest.raises(CheckpointError) as err:
        train(compose_train(tmp_path / "run", [f"ckpt_path={tiny_ckpt}", "model.net.hidden=48"]))
    msg = str(err.value)
    assert "\n" not in msg and str(tiny_ckpt) in msg and "shape mismatches" in msg


def test_rerun_removes_temporaries_of_a_killed_save_and_resumes(tmp_path: Path) -> None:
    """A kill inside a save leaves ``.last.ckpt.<random>.tmp``; the next run deletes it (the
    finished checkpoints stay) and resumes from last.ckpt."""
    from reliability_helpers import train_tiny

    out = tmp_path / "run"
    assert train_tiny(out, steps=4, every=2)["global_step"] == 4
    ckpts = out / "checkpoints"
    stale = ckpts / ".last.ckpt.k1ll3d.tmp"
    stale.write_bytes(b"PK\x03\x04 half a checkpoint")
    result = train_tiny(out, steps=6, every=2)
    assert result["global_step"] == 6 and result["resumed_from"] == str(ckpts / "last.ckpt")
    assert not stale.exists()
    assert (ckpts / "last.ckpt").is_file()
    assert _tmp_leftovers(ckpts) == []
