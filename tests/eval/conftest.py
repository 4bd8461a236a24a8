"""One thread per test: the machines running the tests share two cores."""

from thread_helpers import one_thread  # noqa: F401
