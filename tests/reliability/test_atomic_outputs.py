"""Result files (JSON, tables, arrays, figures) are replaced whole or not at all."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from scorelab.runs import atomic_output, save_npz_atomic, write_json_atomic, write_text_atomic

REPO = Path(__file__).resolve().parents[2]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_failed_write_keeps_previous_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    write_json_atomic({"fid": 3.0}, target)
    with pytest.raises(RuntimeError, match="killed"), atomic_output(target) as tmp:
        tmp.write_text('{"fid": ')  # half a file, then the writer dies
        raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"fid": 3.0}
    assert _leftovers(tmp_path) == []


def test_temporary_keeps_the_suffix_so_writers_pick_the_format(tmp_path: Path) -> None:
    with atomic_output(tmp_path / "grid.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "grid.png").read_bytes() == b"x"
    save_npz_atomic(tmp_path / "samples.npz", samples=np.arange(3))
    assert np.load(tmp_path / "samples.npz")["samples"].tolist() == [0, 1, 2]
    write_text_atomic(tmp_path / "sub" / "table.md", "| a |\n")
    assert (tmp_path / "sub" / "table.md").read_text() == "| a |\n"
    assert _leftovers(tmp_path) == []


def test_figures_are_written_atomically(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scorelab.plots import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = save_figure(fig, tmp_path / "curve.png")
    plt.close(fig)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("folder", ["src", "benchmarks", "experiments"])
def test_no_result_file_is_written_in_place(folder: str) -> None:
    """``Path.write_text`` and ``fig.savefig`` truncate the old file first; a kill mid-write
    then leaves half a result. Everything goes through :mod:`scorelab.runs` instead."""
    offenders = []
    for path in sorted((REPO / folder).rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"write_text", "savefig"}
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} .{node.func.attr}")
    # save_figure itself calls savefig on the temporary path.
    allowed = [o for o in offenders if o.startswith("src/scorelab/plots.py:")]
    assert offenders == allowed, offenders
