"""One thread per test: the oracle scores are many tiny ops, and the cores are shared."""

from thread_helpers import one_thread  # noqa: F401
