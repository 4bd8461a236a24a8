"""Fixtures shared by every test directory: tiny data sets in the real on-disk formats.

The helpers live in ``data_files`` (an ordinary module, importable by name from any test); only
the fixtures are re-exported here.
"""

import os

from data_files import celeba_root, cifar_root, mnist_root, no_md5  # noqa: F401


def pytest_configure(config) -> None:
    """Under pytest-xdist (``make test`` runs ``-n 2``) each worker, and every process it starts,
    computes on one thread: the workers already use the cores, and intra-op threads on top of
    them only contend."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ["MKL_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
