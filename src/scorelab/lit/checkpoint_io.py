"""Atomic checkpoint writes (a kill during a save never leaves a truncated file), a cheap
structural check of a checkpoint file, and a one-line description of state-dict mismatches."""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same directory, fsync, then rename over
    ``path``. A reader sees either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporaries that a kill during :func:`atomic_torch_save` left in ``folder``
    (``.<name>.ckpt.<random>.tmp``) and return them. Call before training starts, when no
    save can be in flight; the finished checkpoints are never touched."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.glob(".*.ckpt.*.tmp") if p.is_file())
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def check_checkpoint_file(path: str | Path) -> str | None:
    """Why ``path`` cannot be a complete ``torch.save`` checkpoint, or None if it looks whole.

    Reads only the zip directory at the end of the file (no unpickling), so it is cheap enough
    to run before any data is loaded: a missing file, a truncated file (the directory is
    written last) and a file that is not a torch archive are all caught.
    """
    path = Path(path)
    if not path.is_file():
        return f"checkpoint {path} does not exist; give an existing .ckpt file"
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        return (
            f"checkpoint {path} is truncated or corrupt (not a complete torch archive: {err}); "
            "use another checkpoint (e.g. last.ckpt of the same run) or retrain"
        )
    if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return f"checkpoint {path} is a zip file without data.pkl: not a torch checkpoint"
    return None


def describe_state_mismatch(own: Mapping[str, Any], saved: Mapping[str, Any]) -> str | None:
    """One line listing missing, unexpected and differently shaped keys of ``saved`` against
    ``own`` (both state dicts), or None when they fit."""

    def order(keys: set[str]) -> list[str]:  # private aliases (e.g. ``_forward.``) listed last
        return sorted(keys, key=lambda k: (any(p.startswith("_") for p in k.split(".")), k))

    missing = order(set(own) - set(saved))
    unexpected = order(set(saved) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(saved[k].shape)} vs model {tuple(own[k].shape)}"
        for k in order(set(own) & set(saved))
        if hasattr(saved[k], "shape") and saved[k].shape != own[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)}: {', '.join(missing[:8])}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:8])}")
    if shapes:
        parts.append(f"shape mismatches {len(shapes)}: {'; '.join(shapes[:5])}")
    return " | ".join(parts) if parts else None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes through :func:`atomic_torch_save` and reads with
    ``weights_only=True``."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict:
        from scorelab.lit.build import read_checkpoint

        return read_checkpoint(path)
