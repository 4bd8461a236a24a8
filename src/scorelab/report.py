"""Tables from a Hydra multirun: ``python -m scorelab.report MULTIRUN_DIR --rows KEY --cols KEY
--metric NAME [--format md|latex|csv] [--out FILE]``.

Every run directory under ``MULTIRUN_DIR`` (one holding ``metrics.json`` or
``.hydra/overrides.yaml``) is one run. Its settings come from the ``overrides`` list of
``metrics.json``, else from ``.hydra/overrides.yaml``. Runs that share the row and column values
are aggregated over seeds as mean ± sample std with their count n. Failed runs
(``status: failed``) and missing ones (a run directory without ``metrics.json``, or fewer seeds in
a cell than in the sweep) are shown in the cell, never dropped silently. The best cell of each
column is bold (lowest by default; ``--higher-is-better`` flips it).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scorelab.io import write_text_atomic

FORMATS = ("md", "latex", "csv")
DEFAULT = "(default)"


@dataclass
class Run:
    """One job of a sweep: its directory, status (ok | failed | missing), settings, metrics."""

    path: Path
    status: str
    overrides: dict[str, str]
    metrics: dict[str, float]
    seed: str | None = None
    error: str | None = None


@dataclass
class Cell:
    """The runs of one (row, column) setting."""

    values: list[float] = field(default_factory=list)
    failed: int = 0
    missing: int = 0
    no_metric: int = 0
    seeds: set[str] = field(default_factory=set)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        if not self.values:
            return None
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def total(self) -> int:
        return self.n + self.failed + self.missing + self.no_metric


@dataclass
class Table:
    row_key: str
    col_key: str | None
    metric: str
    rows: list[str]
    cols: list[str]
    cells: dict[tuple[str, str], Cell]
    best: set[tuple[str, str]]
    lower_is_better: bool


# ---------------------------------------------------------------------------------------------
# Collecting runs
# ---------------------------------------------------------------------------------------------


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["a.b=1", "+c=x", "~d"]`` -> ``{"a.b": "1", "c": "x"}`` (deletions are skipped)."""
    out: dict[str, str] = {}
    for item in items:
        item = str(item)
        if item.startswith("~") or "=" not in item:
            continue
        key, value = item.split("=", 1)
        out[key.lstrip("+")] = value
    return out


def _read_overrides(run_dir: Path, metrics: dict | None) -> dict[str, str]:
    if metrics is not None and isinstance(metrics.get("overrides"), list):
        return parse_overrides(metrics["overrides"])
    f = run_dir / ".hydra" / "overrides.yaml"
    if f.is_file():
        return parse_overrides(yaml.safe_load(f.read_text()) or [])
    return {}


def _numeric_metrics(data: dict) -> dict[str, float]:
    """``metrics`` of a metrics.json, plus its numeric top-level fields (e.g. wall_time_s)."""
    out = {
        k: float(v)
        for k, v in data.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k != "seed"
    }
    for k, v in (data.get("metrics") or {}).items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def collect_runs(root: str | Path) -> list[Run]:
    """Every run under ``root``: directories with ``metrics.json`` or ``.hydra/overrides.yaml``."""
    root = Path(root)
    dirs = {p.parent for p in root.rglob("metrics.json") if ".hydra" not in p.parts}
    dirs |= {p.parent.parent for p in root.rglob(".hydra/overrides.yaml")}
    runs = []
    for d in sorted(dirs):
        mfile = d / "metrics.json"
        data = None
        if mfile.is_file():
            try:
                data = json.loads(mfile.read_text())
            except json.JSONDecodeError as err:
                print(f"warning: unreadable {mfile} ({err}); counted as missing", file=sys.stderr)
        overrides = _read_overrides(d, data)
        if data is None:
            runs.append(Run(d, "missing", overrides, {}, overrides.get("seed")))
            continue
        status = "ok" if data.get("status", "ok") == "ok" else "failed"
        seed = overrides.get("seed", None if data.get("seed") is None else str(data["seed"]))
        runs.append(
            Run(d, status, overrides, _numeric_metrics(data), seed, error=data.get("error"))
        )
    return runs


# ---------------------------------------------------------------------------------------------
# Aggregating
# ---------------------------------------------------------------------------------------------


def _sort_key(v: str) -> tuple:
    """Numbers first in numeric order, then other strings in natural order."""
    try:
        return (0, float(v), "")
    except ValueError:
        parts = re.split(r"(\d+)", v)
        return (1, 0.0, tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts))


def _varying_keys(runs: list[Run]) -> set[str]:
    keys = {k for r in runs for k in r.overrides}
    return {k for k in keys if len({r.overrides.get(k) for r in runs}) > 1}


def build_table(
    runs: list[Run],
    rows: str,
    metric: str,
    cols: str | None = None,
    lower_is_better: bool = True,
    warn=None,
) -> Table:
    """Aggregate ``metric`` over the runs that share the ``rows`` and ``cols`` override values."""
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    cells: dict[tuple[str, str], Cell] = {}
    for r in runs:
        key = (r.overrides.get(rows, DEFAULT), r.overrides.get(cols, DEFAULT) if cols else metric)
        cell = cells.setdefault(key, Cell())
        if r.seed is not None:
            cell.seeds.add(r.seed)
        if r.status == "failed":
            cell.failed += 1
        elif r.status == "missing":
            cell.missing += 1
        elif metric in r.metrics and math.isfinite(r.metrics[metric]):
            cell.values.append(r.metrics[metric])
        else:
            cell.no_metric += 1
    row_vals = sorted({k[0] for k in cells}, key=_sort_key)
    col_vals = sorted({k[1] for k in cells}, key=_sort_key)
    # Every cell of the grid should hold one run per seed of the sweep.
    all_seeds = {r.seed for r in runs if r.seed is not None}
    expected = max([len(all_seeds)] + [c.total for c in cells.values()])
    for rv in row_vals:
        for cv in col_vals:
            cell = cells.setdefault((rv, cv), Cell())
            cell.missing += max(0, expected - cell.total)

    no_metric = sum(c.no_metric for c in cells.values())
    ok = sum(1 for r in runs if r.status == "ok")
    if ok and no_metric:
        have = sorted({m for r in runs for m in r.metrics})
        warn(
            f"metric {metric!r} is absent (or not finite) in {no_metric} of {ok} finished runs; "
            f"those cells count it as missing. Metrics present: {', '.join(have) or 'none'}"
        )
    pooled = _varying_keys(runs) - {rows, cols, "seed"}
    if pooled:
        warn(
            f"runs that differ in {', '.join(sorted(pooled))} are pooled into the same cells; "
            "pass one of them as --rows/--cols or report a narrower directory"
        )
    best = set()
    for cv in col_vals:
        means = [(cells[(rv, cv)].mean, rv) for rv in row_vals if cells[(rv, cv)].n]
        if means:
            target = (min if lower_is_better else max)(m for m, _ in means)
            best |= {(rv, cv) for m, rv in means if m == target}
    return Table(rows, cols, metric, row_vals, col_vals, cells, best, lower_is_better)


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def _num(v: float, digits: int) -> str:
    return f"{v:.{digits}g}"


def _cell_parts(cell: Cell, digits: int) -> tuple[str | None, str]:
    """(the 'mean ± std' string or None, the note about n / failed / missing runs)."""
    bad = []
    if cell.failed:
        bad.append(f"failed {cell.failed}/{cell.total}")
    lost = cell.missing + cell.no_metric
    if lost:
        bad.append(f"missing {lost}/{cell.total}")
    if not cell.n:
        if cell.failed and not lost:
            return None, f"failed ({cell.failed}/{cell.total})"
        if lost and not cell.failed:
            return None, "missing" if lost == cell.total else f"missing ({lost}/{cell.total})"
        return None, ", ".join(bad)
    note = f"n={cell.n}" + ("; " + ", ".join(bad) if bad else "")
    if cell.n == 1:
        return _num(cell.mean, digits), note
    return f"{_num(cell.mean, digits)} ± {_num(cell.std, digits)}", note


def _col_header(table: Table, cv: str) -> str:
    return f"{table.col_key}={cv}" if table.col_key else cv


def to_markdown(table: Table, digits: int = 3) -> str:
    head = [table.row_key] + [_col_header(table, cv) for cv in table.cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rv in table.rows:
        out = [rv]
        for cv in table.cols:
            value, note = _cell_parts(table.cells[(rv, cv)], digits)
            if value is None:
                out.append(note)
                continue
            if (rv, cv) in table.best:
                value = f"**{value}**"
            out.append(f"{value} ({note})")
        lines.append("| " + " | ".join(out) + " |")
    order = "lower" if table.lower_is_better else "higher"
    lines.append("")
    lines.append(
        f"{table.metric}: mean ± std over seeds (n runs); bold: best per column ({order} is "
        "better)."
    )
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(s: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in s)


def to_latex(table: Table, digits: int = 3) -> str:
    order = "lower" if table.lower_is_better else "higher"
    lines = [
        f"% {latex_escape(table.metric)}: mean $\\pm$ std over seeds; bold: best per column "
        f"({order} is better). Needs \\usepackage{{booktabs}}.",
        "\\begin{tabular}{l" + "c" * len(table.cols) + "}",
        "\\toprule",
        " & ".join(
            [latex_escape(table.row_key)]
            + [latex_escape(_col_header(table, cv)) for cv in table.cols]
        )
        + " \\\\",
        "\\midrule",
    ]
    for rv in table.rows:
        out = [latex_escape(rv)]
        for cv in table.cols:
            value, note = _cell_parts(table.cells[(rv, cv)], digits)
            if value is None:
                out.append(f"\\emph{{{latex_escape(note)}}}")
                continue
            value = value.replace(" ± ", " $\\pm$ ")
            if (rv, cv) in table.best:
                value = f"\\textbf{{{value}}}"
            out.append(f"{value} {{\\scriptsize ({latex_escape(note)})}}")
        lines.append(" & ".join(out) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_csv(table: Table, digits: int | None = None) -> str:
    """Long format, full precision: one line per cell."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = "metric mean std n failed missing best".split()
    w.writerow([table.row_key, table.col_key or "column", *head])
    for rv in table.rows:
        for cv in table.cols:
            c = table.cells[(rv, cv)]
            mean, std = ("" if v is None else repr(v) for v in (c.mean, c.std))
            best = int((rv, cv) in table.best)
            w.writerow(
                [rv, cv, table.metric, mean, std, c.n, c.failed, c.missing + c.no_metric, best]
            )
    return buf.getvalue()


RENDER = {"md": to_markdown, "latex": to_latex, "csv": to_csv}


def check_keys(runs: list[Run], rows: str, metric: str, cols: str | None = None) -> None:
    """Refuse a ``--rows``/``--cols`` key that no run sets and a metric no finished run has
    (a typo would otherwise give a one-cell table of "(default)" or of "missing")."""
    keys = sorted({k for r in runs for k in r.overrides})
    for flag, key in (("--rows", rows), ("--cols", cols)):
        if key is not None and keys and not any(key in r.overrides for r in runs):
            raise ValueError(
                f"{flag} {key} is set by none of the {len(runs)} runs; their overrides set: "
                f"{', '.join(keys)}"
            )
    ok = [r for r in runs if r.status == "ok"]
    if ok and not any(metric in r.metrics for r in ok):
        have = sorted({m for r in ok for m in r.metrics})
        raise ValueError(
            f"--metric {metric} is in none of the {len(ok)} finished runs; their metrics: "
            f"{', '.join(have) or 'none'}"
        )


def report(
    root: str | Path,
    rows: str,
    metric: str,
    cols: str | None = None,
    fmt: str = "md",
    lower_is_better: bool = True,
    digits: int = 3,
) -> tuple[str, list[Run]]:
    """The rendered table of a multirun directory, and the runs it was built from."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    if digits < 1:
        raise ValueError(f"digits must be >= 1, got {digits}")
    runs = collect_runs(root)
    if not runs:
        raise ValueError(
            f"no runs under {root} (no metrics.json or .hydra/overrides.yaml below it); point at "
            "a Hydra multirun directory, e.g. logs/train/multiruns/<date_time>"
        )
    check_keys(runs, rows, metric, cols)
    table = build_table(runs, rows, metric, cols, lower_is_better)
    return RENDER[fmt](table, digits), runs


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m scorelab.report",
        description="Aggregate a Hydra multirun's metrics.json files into a table.",
    )
    p.add_argument("root", help="multirun directory (searched recursively)")
    p.add_argument("--rows", required=True, help="override key for the rows, e.g. sde.sigma_max")
    p.add_argument("--cols", default=None, help="override key for the columns (optional)")
    p.add_argument("--metric", required=True, help="metric name, e.g. val/loss")
    p.add_argument("--format", choices=FORMATS, default="md")
    p.add_argument("--out", default=None, help="write here instead of stdout")
    p.add_argument("--digits", type=int, default=3, help="significant digits (md, latex)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--lower-is-better", dest="lower", action="store_true", default=True)
    g.add_argument("--higher-is-better", dest="lower", action="store_false")
    a = p.parse_args(argv)
    if not Path(a.root).is_dir():
        print(
            f"error: {a.root} is not a directory; give a Hydra multirun directory", file=sys.stderr
        )
        return 2
    if a.out and Path(a.out).is_dir():
        print(
            f"error: --out {a.out} is a directory; give a file name, e.g. "
            f"{Path(a.out) / 'table.md'}",
            file=sys.stderr,
        )
        return 2
    try:
        text, runs = report(a.root, a.rows, a.metric, a.cols, a.format, a.lower, a.digits)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(a.out), text)
        print(f"table: {a.out} ({len(runs)} runs)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
