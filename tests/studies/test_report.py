"""scorelab.report on a synthetic multirun directory written by the test."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import pytest

from scorelab.report import build_table, collect_runs, main, parse_overrides, report

SIGMAS = ("1", "20", "auto")
NS = ("10", "100")
SEEDS = (0, 1, 2)


def _value(sigma: str, n: str, seed: int) -> float:
    return {"1": 3.0, "20": 1.0, "auto": 2.0}[sigma] + 0.1 * seed + (0.5 if n == "10" else 0.0)


def _write_run(root: Path, i: int, overrides: list[str], body: dict | None, hydra: bool) -> Path:
    d = root / f"{i}_{','.join(overrides)}"
    (d / ".hydra").mkdir(parents=True)
    if hydra:
        (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if body is not None:
        (d / "metrics.json").write_text(json.dumps(body))
    return d


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """3 σ_max × 2 N × 3 seeds, with these defects:

    - (σ=1, N=10, seed 2) failed; (σ=auto, N=100): every seed failed;
    - (σ=20, N=10, seed 1) has a run directory but no metrics.json (killed);
    - (σ=20, N=100, seed 2) was never launched (no directory at all);
    - (σ=auto, N=10, seed 0) finished without the metric.
    Runs alternate between overrides in metrics.json and in .hydra/overrides.yaml only.
    """
    root = tmp_path / "multirun"
    i = 0
    for sigma in SIGMAS:
        for n in NS:
            for seed in SEEDS:
                i += 1
                ov = [f"sde.sigma_max={sigma}", f"sde.N={n}", f"seed={seed}", "paths.log_dir=/x"]
                if (sigma, n, seed) == ("20", "100", 2):
                    continue
                if (sigma, n, seed) == ("20", "10", 1):
                    _write_run(root, i, ov, None, hydra=True)
                    continue
                if (sigma, n, seed) == ("1", "10", 2) or (sigma, n) == ("auto", "100"):
                    body = {"status": "failed", "error": "ValueError: x", "metrics": {}}
                else:
                    m = {"sw": _value(sigma, n, seed), "other": 1.0}
                    if (sigma, n, seed) == ("auto", "10", 0):
                        del m["sw"]
                    body = {"status": "ok", "metrics": m, "seed": seed}
                in_json = i % 2 == 0
                if in_json:
                    body["overrides"] = ov
                _write_run(root, i, ov, body, hydra=not in_json)
    return root


def _cells(text: str) -> dict[tuple[str, str], dict[str, str]]:
    return {(r["sde.sigma_max"], r["sde.N"]): r for r in csv.DictReader(io.StringIO(text))}


def test_parse_overrides_strips_plus_and_skips_deletions():
    assert parse_overrides(["a.b=1", "+c=x=y", "++d=2", "~e", "f"]) == {
        "a.b": "1",
        "c": "x=y",
        "d": "2",
    }


def test_collect_reads_both_override_sources_and_statuses(sweep: Path):
    runs = collect_runs(sweep)
    assert len(runs) == 17  # 18 jobs, one never launched
    status = [r.status for r in runs]
    assert status.count("failed") == 4 and status.count("missing") == 1
    assert all(r.overrides["sde.sigma_max"] in SIGMAS for r in runs)
    assert {r.seed for r in runs} == {"0", "1", "2"}


def test_csv_aggregation_is_exact(sweep: Path):
    text, _ = report(sweep, "sde.sigma_max", "sw", cols="sde.N", fmt="csv")
    cells = _cells(text)
    full = [_value("1", "100", s) for s in SEEDS]
    c = cells[("1", "100")]
    assert float(c["mean"]) == statistics.fmean(full) == pytest.approx(3.1)
    assert float(c["std"]) == statistics.stdev(full) == pytest.approx(0.1)
    assert (c["n"], c["failed"], c["missing"]) == ("3", "0", "0")
    # one failed seed: mean of the other two
    c = cells[("1", "10")]
    assert float(c["mean"]) == pytest.approx(3.55) and (c["n"], c["failed"]) == ("2", "1")
    # a killed run and a run never launched both count as missing
    assert (cells[("20", "10")]["n"], cells[("20", "10")]["missing"]) == ("2", "1")
    assert (cells[("20", "100")]["n"], cells[("20", "100")]["missing"]) == ("2", "1")
    # a run without the metric is missing, not zero
    assert (cells[("auto", "10")]["n"], cells[("auto", "10")]["missing"]) == ("2", "1")
    assert float(cells[("auto", "10")]["mean"]) == pytest.approx(2.65)
    c = cells[("auto", "100")]
    assert (c["mean"], c["n"], c["failed"]) == ("", "0", "3")
    # best per column, lower is better: σ_max = 20 in both columns
    assert {k for k, r in cells.items() if r["best"] == "1"} == {("20", "10"), ("20", "100")}


def test_higher_is_better_flips_the_bold_cell(sweep: Path):
    table = build_table(collect_runs(sweep), "sde.sigma_max", "sw", "sde.N", lower_is_better=False)
    assert table.best == {("1", "10"), ("1", "100")}


def test_markdown_marks_failed_and_missing(sweep: Path, capsys):
    text, _ = report(sweep, "sde.sigma_max", "sw", cols="sde.N", fmt="md")
    lines = text.splitlines()
    assert lines[0] == "| sde.sigma_max | sde.N=10 | sde.N=100 |"
    row = {ln.split(" | ")[0].strip("| "): ln for ln in lines[2:5]}
    assert row["1"] == "| 1 | 3.55 ± 0.0707 (n=2; failed 1/3) | 3.1 ± 0.1 (n=3) |"
    assert row["20"] == (
        "| 20 | **1.6 ± 0.141** (n=2; missing 1/3) | **1.05 ± 0.0707** (n=2; missing 1/3) |"
    )
    assert row["auto"].endswith("| failed (3/3) |")
    assert "absent" in capsys.readouterr().err  # the run without the metric is reported


def test_latex_is_booktabs_and_escaped(sweep: Path):
    text, _ = report(sweep, "sde.sigma_max", "sw", cols="sde.N", fmt="latex")
    assert "\\begin{tabular}{lcc}" in text and "\\toprule" in text and "\\bottomrule" in text
    assert "sde.sigma\\_max & sde.N=10 & sde.N=100 \\\\" in text
    assert "\\textbf{1.6 $\\pm$ 0.141} {\\scriptsize (n=2; missing 1/3)}" in text
    assert "\\emph{failed (3/3)}" in text
    assert "±" not in text.split("\n", 1)[1]  # only LaTeX math below the comment line


def test_single_column_and_cli_out(sweep: Path, tmp_path: Path):
    out = tmp_path / "t" / "table.md"
    assert main([str(sweep), "--rows", "sde.N", "--metric", "other", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.splitlines()[0] == "| sde.N | other |"
    assert "**1 ± 0** (n=7; failed 1/9, missing 1/9)" in text  # σ pooled: 3 σ × 3 seeds


def test_pooling_other_varying_keys_is_reported(sweep: Path, capsys):
    report(sweep, "sde.N", "other", fmt="csv")
    assert "pooled" in capsys.readouterr().err


def test_empty_directory_is_refused_in_one_line(tmp_path: Path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "empty.csv"
    args = [str(tmp_path / "empty"), "--rows", "a", "--metric", "m", "--format", "csv"]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no runs under {tmp_path / 'empty'}") and err.count("\n") == 1
    assert not out.exists()


def test_bad_arguments_are_one_line_errors(sweep: Path, tmp_path: Path, capsys):
    with pytest.raises(ValueError, match="format must be one of"):
        report(sweep, "sde.N", "sw", fmt="xlsx")
    assert main([str(tmp_path / "nope"), "--rows", "a", "--metric", "m"]) == 2
    assert "is not a directory" in capsys.readouterr().err
