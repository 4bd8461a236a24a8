"""Where the image data sets live on disk (torchvision's layouts under a data root), and which
of their files are missing. The data modules check these before loading; ``scorelab.data.prepare``
writes them."""

from __future__ import annotations

import struct
from pathlib import Path

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

CIFAR10_FILES = (
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
    "test_batch",
    "batches.meta",
)
CELEBA_FILES = (
    "img_align_celeba/",
    "list_eval_partition.txt",
    "list_attr_celeba.txt",
    "identity_CelebA.txt",
    "list_bbox_celeba.txt",
    "list_landmarks_align_celeba.txt",
)


def mnist_raw_dir(root: str | Path) -> Path:
    """``<root>/MNIST/raw``, the folder torchvision's ``MNIST`` reads."""
    return Path(root) / "MNIST" / "raw"


def missing_mnist_files(root: str | Path) -> list[Path]:
    """The MNIST IDX files that torchvision needs and that are absent under ``root``."""
    raw = mnist_raw_dir(root)
    return [raw / name for name in MNIST_FILES.values() if not (raw / name).is_file()]


def missing_cifar10_files(root: str | Path) -> list[Path]:
    """The files of ``<root>/cifar-10-batches-py`` that torchvision's ``CIFAR10`` needs."""
    folder = Path(root) / "cifar-10-batches-py"
    return [folder / name for name in CIFAR10_FILES if not (folder / name).is_file()]


def missing_celeba_files(root: str | Path) -> list[Path]:
    """The files of ``<root>/celeba`` that torchvision's ``CelebA`` needs."""
    folder = Path(root) / "celeba"
    missing = []
    for name in CELEBA_FILES:
        path = folder / name
        ok = path.is_dir() if name.endswith("/") else path.is_file()
        if not ok:
            missing.append(path)
    return missing


def _idx_problem(path: Path, ndim: int) -> str | None:
    """Why ``path`` is not a complete uint8 IDX file with ``ndim`` dimensions, or None. Reads
    the header only: the magic number, the dimensions, and the size they imply."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(4 + 4 * ndim)
    if len(head) < 4 + 4 * ndim or head[:4] != bytes((0, 0, 0x08, ndim)):
        got = head[:4].hex() or "nothing"
        return f"does not start with the IDX header 000008{ndim:02x} of a uint8 array (got {got})"
    dims = struct.unpack(f">{ndim}I", head[4:])
    want = 4 + 4 * ndim + _prod(dims)
    if size != want:
        return f"holds {size} bytes, but its header {list(dims)} needs {want} (truncated?)"
    if ndim == 3 and dims[1:] != (28, 28):
        return f"holds images of {dims[1]}x{dims[2]}, not MNIST's 28x28"
    return None


def corrupt_mnist_files(root: str | Path) -> list[tuple[Path, str]]:
    """The MNIST IDX files under ``root`` that exist but cannot be read, with the reason."""
    raw = mnist_raw_dir(root)
    bad = []
    for key, name in MNIST_FILES.items():
        path = raw / name
        if path.is_file():
            problem = _idx_problem(path, 3 if key.endswith("images") else 1)
            if problem:
                bad.append((path, problem))
    return bad


def _prod(dims) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out
