"""Fixtures shared by every test directory: tiny data sets in the real on-disk formats.

The helpers live in ``data_files`` (an ordinary module, importable by name from any test); only
the fixtures are re-exported here.
"""

from data_files import celeba_root, cifar_root, mnist_root, no_md5  # noqa: F401
