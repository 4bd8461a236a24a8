"""One torch thread for tests of many small operations: the machines running the tests share two
cores, and intra-op threads only contend there.

Import :func:`one_thread` into a test module (or a directory's ``conftest.py``) to run each of
its tests on one thread; use :func:`one_torch_thread` around a single block.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(1)``; restore the previous count after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Autouse wherever it is imported: each test there runs on one torch thread."""
    with one_torch_thread():
        yield
