"""Files on disk: atomic writes of results and checkpoints, and checkpoint reading.

A kill during a write never leaves half a file: every result (JSON, tables, figures, arrays)
goes through :func:`atomic_output` and every checkpoint through :func:`atomic_torch_save`.
Checkpoints are read with ``torch.load(weights_only=True)`` only, with one-line errors naming
the file. This module imports nothing else of scorelab, so every layer may use it; torch is
imported only by the checkpoint functions, so the text writers (``scorelab.report``) start in a
fraction of a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


# ----------------------------------------------------------------------------- result files
@contextlib.contextmanager
def atomic_output(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (suffix ``suffix``, default ``path``'s) and
    rename it onto ``path`` when the block succeeds.

    A kill or an error part-way leaves either the previous file or the new one, never half
    of one, and no temporary file behind. Every result file (JSON, tables, figures, arrays)
    is written this way."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def write_json_atomic(obj: Any, path: str | Path, *, indent: int = 2) -> Path:
    """Write JSON atomically (see :func:`write_text_atomic`)."""
    text = json.dumps(obj, indent=indent, sort_keys=True, default=_jsonable) + "\n"
    return write_text_atomic(path, text)


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def save_npz_atomic(path: str | Path, **arrays: np.ndarray) -> Path:
    """``np.savez`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        np.savez(tmp, **arrays)
    return Path(path)


# ----------------------------------------------------------------------------- checkpoints
class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit; names the file."""


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`atomic_output`, with fsync of the file and its directory.
    A reader sees either the old file or the complete new one."""
    import torch

    with atomic_output(path, suffix=".tmp") as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    dir_fd = os.open(Path(path).parent, os.O_RDONLY)
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


def checkpoint_path_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be a checkpoint file, or None (see :func:`check_checkpoint_file`);
    a directory and a NumPy archive are named as what they are."""
    p = Path(path)
    if p.is_dir():
        inside = p / "checkpoints" / "last.ckpt"
        hint = (
            f"{inside}" if inside.is_file() else "the .ckpt file inside it (checkpoints/last.ckpt)"
        )
        return f"checkpoint {p} is a directory, not a file; give {hint}"
    if p.is_file() and p.suffix == ".npz":
        return (
            f"checkpoint {p} is a NumPy .npz archive (samples or statistics), not a checkpoint; "
            "give a run's .ckpt file (checkpoints/last.ckpt)"
        )
    return check_checkpoint_file(p)


def read_checkpoint(path: str | Path, *, mmap: bool = False) -> dict:
    """``torch.load(weights_only=True)`` with one-line errors naming the file; ``mmap``: the
    tensors are memory-mapped from the file and read only when used (e.g. the weights that are
    loaded, not the optimizer state)."""
    import torch

    path = Path(path)
    if path.is_dir() or path.suffix == ".npz":
        raise CheckpointError(checkpoint_path_problem(path))
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    problem = check_checkpoint_file(path)  # the zip directory only: a text file, an empty one
    if problem:
        raise CheckpointError(problem)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(err).__name__}: {first[:200]}); "
            "use another checkpoint (e.g. last.ckpt of the same run) or retrain"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"checkpoint {path} has no 'state_dict': not a scorelab checkpoint; give a run's "
            "checkpoints/last.ckpt, or convert official weights with python -m scorelab.convert"
        )
    return ckpt


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
