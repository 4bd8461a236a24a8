"""Tiny data sets written in the real on-disk formats that torchvision reads (helpers and
fixtures; tests/conftest.py re-exports the fixtures)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets.celeba
import torchvision.datasets.cifar
from PIL import Image

from scorelab.data.layout import MNIST_FILES, mnist_raw_dir
from scorelab.data.prepare import write_idx

N_MNIST_TRAIN, N_MNIST_TEST = 64, 16


def make_mnist_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Random uint8 digits: every image distinct and containing the values 0 and 255."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", N_MNIST_TRAIN), ("test", N_MNIST_TEST)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        x[:, 0, 0], x[:, 0, 1] = 0, 255
        out[f"{split}_images"] = x
        out[f"{split}_labels"] = (np.arange(n) % 10).astype(np.uint8)
    return out


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    arrays = make_mnist_arrays()
    for key, name in MNIST_FILES.items():
        write_idx(mnist_raw_dir(tmp_path) / name, arrays[key])
    return tmp_path


@pytest.fixture
def no_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision checks CIFAR-10's and CelebA's files against the real MD5s; the tiny
    fixtures can only pass an existence check."""

    def exists(fpath: str, md5: str | None = None) -> bool:
        return os.path.isfile(fpath)

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", exists)
    monkeypatch.setattr(torchvision.datasets.celeba, "check_integrity", exists)


CIFAR_PER_BATCH, CIFAR_TEST = 8, 8


def make_cifar_batches(seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = CIFAR_TEST if name == "test_batch" else CIFAR_PER_BATCH
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)  # rows: R, G, B planes
        batches[name] = {"batch_label": name, "data": data, "labels": list(range(n))}
    return batches


@pytest.fixture
def cifar_root(tmp_path: Path, no_md5: None) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, batch in make_cifar_batches().items():
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                            "horse", "ship", "truck"]}  # fmt: skip
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return tmp_path


CELEBA_PARTITION = [0, 0, 0, 0, 1, 1, 2, 2]  # 4 train, 2 valid, 2 test


@pytest.fixture
def celeba_root(tmp_path: Path, no_md5: None) -> Path:
    """Eight 178×218 aligned-face stand-ins: white inside the central 140×140 crop, black
    outside, so the crop can be checked."""
    folder = tmp_path / "celeba"
    img_dir = folder / "img_align_celeba"
    img_dir.mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(len(CELEBA_PARTITION))]
    w, h, c = 178, 218, 140
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    top, left = (h - c) // 2, (w - c) // 2
    arr[top : top + c, left : left + c] = 255
    for name in names:
        Image.fromarray(arr).save(img_dir / name, quality=95)
    attrs = [f"Attr{k}" for k in range(40)]
    lines = {
        "list_eval_partition.txt": [f"{n} {p}" for n, p in zip(names, CELEBA_PARTITION)],
        "identity_CelebA.txt": [f"{n} {i + 1}" for i, n in enumerate(names)],
        "list_bbox_celeba.txt": [str(len(names)), "image_id x_1 y_1 width height"]
        + [f"{n} 10 20 100 120" for n in names],
        "list_landmarks_align_celeba.txt": [
            str(len(names)),
            "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
            "rightmouth_x rightmouth_y",
        ]
        + [f"{n} 69 109 106 113 77 142 73 152 108 154" for n in names],
        "list_attr_celeba.txt": [str(len(names)), " ".join(attrs)]
        + [f"{n} " + " ".join("1" if k % 2 else "-1" for k in range(40)) for n in names],
    }
    for fname, rows in lines.items():
        (folder / fname).write_text("\n".join(rows) + "\n")
    return tmp_path
