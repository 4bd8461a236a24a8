"""What the study scripts (``experiments/*/run.py``) share; not part of the scorelab package.

A script imports it after putting ``experiments/`` on ``sys.path``::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _study import study_parser
"""

from __future__ import annotations

import argparse
from pathlib import Path


def study_parser(doc: str, here: Path) -> argparse.ArgumentParser:
    """The command line the study scripts share: ``--smoke`` for tiny sizes (what the tests
    run) and ``--out`` (default ``<study>/results``)."""
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (tests)")
    p.add_argument("--out", type=Path, default=Path(here) / "results")
    return p
