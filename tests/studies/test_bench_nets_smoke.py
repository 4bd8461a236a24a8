"""The network benchmark runs end to end and writes a consistent JSON + Markdown pair."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks" / "bench_nets.py"


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(BENCH), *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


# Slow (about 10 s, three fresh interpreters): the fast suite still starts the script through
# test_bad_arguments_are_refused_in_one_line, and tests/nets checks the networks it times.
@pytest.mark.slow
def test_one_network_two_modes_in_fresh_processes(tmp_path: Path) -> None:
    _run(
        *("--nets", "unet_small", "--modes", "fp32", "bf16", "--steps", "2", "--warmup", "1"),
        *("--threads", "1", "--peak-seconds", "0.4", "--min-time", "0"),
        *("--out", str(tmp_path), "--tag", "t"),
    )
    report = json.loads((tmp_path / "nets_cpu_t.json").read_text())
    assert set(report["peaks"]) == {"fp32", "bf16"}
    assert all(v["flops"] > 1e8 for v in report["peaks"].values())
    rows = report["results"]
    assert [(r["net"], r["mode"]) for r in rows] == [("unet_small", "fp32"), ("unet_small", "bf16")]
    for r in rows:
        assert 0.6e6 < r["params"] < 0.63e6  # unet_small: 0.62M
        assert len(r["step_s"]) == 2 and r["img_per_s"] == pytest.approx(4 / r["median_step_s"])
        # FLOPs are counted once (first mode) and shared: the same network does the same work.
        assert r["fwd_bwd_flops_per_img"] == rows[0]["fwd_bwd_flops_per_img"] > 1e8
        achieved = r["img_per_s"] * r["fwd_bwd_flops_per_img"]
        assert 0 < r["fraction_of_fp32_peak"] <= achieved / report["peaks"]["fp32"]["flops"]
        assert r["peak_mem_mib"] > 1  # weights, Adam state and activations are resident
    md = (tmp_path / "nets_cpu_t.md").read_text()
    assert md.count("| unet_small |") == 2 and "of bf16 peak" in md
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries


def test_bad_arguments_are_refused_in_one_line(tmp_path: Path) -> None:
    proc = _run("--batch", "0", "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and "--batch 0: must be >= 1" in proc.stderr
    assert not list(tmp_path.iterdir())
