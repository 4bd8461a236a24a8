"""Result files (JSON, tables, arrays, figures) are replaced whole or not at all."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from scorelab.io import atomic_output, save_npz_atomic, write_json_atomic, write_text_atomic

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


# Calls that write a file: a method name, or ``module.function`` for the module-level writers.
WRITE_METHODS = {"write_text", "write_bytes", "savefig", "save", "save_image"}
WRITE_FUNCTIONS = {
    ("json", "dump"),
    ("np", "save"),
    ("np", "savez"),
    ("np", "savez_compressed"),
    ("np", "savetxt"),
    ("torch", "save"),
}

# Functions allowed to write outside ``atomic_output``, and why.
WRITES_ALLOWED = {
    # Hand-made temporary + fsync + rename: the checkpoint writer atomic_output is built beside.
    "src/scorelab/io.py::atomic_torch_save",
    # Temporary file renamed over the target.
    "src/scorelab/data/prepare.py::write_idx",
    "src/scorelab/metrics/fid.py::save_statistics",
    "src/scorelab/metrics/fid_weights.py::install_weights",
    # An empty weights file in a throw-away TemporaryDirectory.
    "src/scorelab/metrics/fid_weights.py::_skeleton",
    # Subprocess logs streamed while the child runs (not results).
    "benchmarks/soak.py::run_to_end",
    "benchmarks/soak.py::soak",
    # A kernel control file (/proc/self/clear_refs).
    "benchmarks/bench_nets.py::__enter__",
    # Synthetic CIFAR-10 input files in a throw-away temporary directory (not results).
    "benchmarks/bench_train.py::write_fake_cifar",
    # Subprocess logs streamed while the child runs (not results).
    "experiments/_study.py::run_logged",
}


def _write_kind(call: ast.Call) -> str | None:
    """What ``call`` writes with, or None when it writes no file."""
    f = call.func
    if isinstance(f, ast.Attribute):
        base = f.value.id if isinstance(f.value, ast.Name) else None
        if (base, f.attr) in WRITE_FUNCTIONS:
            return f"{base}.{f.attr}"
        if f.attr in WRITE_METHODS:
            return f".{f.attr}"
    if isinstance(f, ast.Name) and f.id in {"open", "save_image"}:
        if f.id == "save_image":
            return "save_image"
        mode = call.args[1] if len(call.args) > 1 else None
        mode = next((k.value for k in call.keywords if k.arg == "mode"), mode)
        if isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+"):
            return f"open(..., {mode.value!r})"
    return None


def _is_atomic_block(node: ast.AST) -> bool:
    return isinstance(node, ast.With) and any(
        isinstance(item.context_expr, ast.Call)
        and getattr(item.context_expr.func, "id", getattr(item.context_expr.func, "attr", ""))
        == "atomic_output"
        for item in node.items
    )


def in_place_writes(path: Path, rel: str) -> list[str]:
    """Every file write in ``path`` that is neither inside ``with atomic_output(...)`` nor in a
    function of :data:`WRITES_ALLOWED`, as ``file:line kind``."""
    found: list[str] = []

    def visit(node: ast.AST, func: str, atomic: bool) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            func = node.name
        atomic = atomic or _is_atomic_block(node)
        if isinstance(node, ast.Call) and not atomic:
            kind = _write_kind(node)
            if kind and f"{rel}::{func}" not in WRITES_ALLOWED:
                found.append(f"{rel}:{node.lineno} {kind} in {func}")
        for child in ast.iter_child_nodes(node):
            visit(child, func, atomic)

    visit(ast.parse(path.read_text()), "<module>", False)
    return found


def test_the_scan_sees_every_kind_of_write() -> None:
    """Each way of writing a file in place is caught; the same call inside atomic_output is not."""
    writes = [
        "Path(p).write_text('x')",
        "Path(p).write_bytes(b'x')",
        "fig.savefig(p)",
        "img.save(p)",
        "save_image(x, p)",
        "json.dump(obj, fh)",
        "np.save(p, a)",
        "np.savez(p, a=a)",
        "np.savez_compressed(p, a=a)",
        "torch.save(obj, p)",
        "open(p, 'w')",
        "open(p, mode='wb')",
        "open(p, 'a')",
    ]
    for call in writes:
        body = f"def f(p):\n    {call}\n"
        assert len(_scan_source(body)) == 1, call
        atomic = f"def f(p):\n    with atomic_output(p) as tmp:\n        {call}\n"
        assert _scan_source(atomic) == [], call
    assert _scan_source("def f(p):\n    open(p)\n    open(p, 'rb')\n") == []


def _scan_source(text: str) -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.py"
        path.write_text(text)
        return in_place_writes(path, "m.py")


@pytest.mark.parametrize("folder", ["src", "benchmarks", "experiments"])
def test_no_result_file_is_written_in_place(folder: str) -> None:
    """``Path.write_text``, ``open(..., "w")``, ``json.dump``, ``np.save(z)``, ``torch.save`` and
    ``fig.savefig`` truncate the old file first; a kill mid-write then leaves half a result.
    Everything goes through :mod:`scorelab.io` (or a temporary renamed into place) instead."""
    offenders = []
    for path in sorted((REPO / folder).rglob("*.py")):
        offenders += in_place_writes(path, str(path.relative_to(REPO)))
    assert offenders == []


def test_every_allowed_writer_still_exists() -> None:
    """A stale entry in the allow-list would silently allow a new function of that name."""
    for entry in WRITES_ALLOWED:
        rel, func = entry.split("::")
        tree = ast.parse((REPO / rel).read_text())
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert func in names, entry
