"""DPM-Solver++ multistep, published form against Taylor form, with exact answers.

1. Gaussian data N(μ, diag s²): the error of the end point against the closed-form
   probability-flow solution, on log-uniform levels from σ = 80 to 0.002, as the levels double.
2. An oracle two-mode mixture on EDM's schedule from the moment-matched start: the mode weight
   and the largest per-mode mean error (in units of that mode's std) against NFE.

    PYTHONPATH=src python benchmarks/dpm_solver_forms.py

Writes ``benchmarks/results/dpm_solver_forms.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from scorelab import schedules  # noqa: E402
from scorelab.io import write_text_atomic  # noqa: E402
from scorelab.sampling.dpm_solver import dpmpp_multistep  # noqa: E402
from scorelab.toy import GaussianMixture, oracle_sigma_score  # noqa: E402

VARIANTS = [(1, "taylor"), (2, "dpm-solver"), (2, "taylor"), (3, "dpm-solver"), (3, "taylor")]


def gaussian_errors(levels: list[int]) -> dict:
    f64 = torch.float64
    mu, s = torch.tensor([1.5, -0.7], dtype=f64), torch.tensor([0.5, 1.3], dtype=f64)

    def score(y, sig):
        sig = sig[:, None]
        return (mu + s**2 / (s**2 + sig**2) * (y - mu) - y) / sig**2

    smax, smin = 80.0, 0.002
    y0 = mu + smax * torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=f64)
    y_end = mu + torch.sqrt((s**2 + smin**2) / (s**2 + smax**2)) * (y0 - mu)
    d_end = mu + s**2 / (s**2 + smin**2) * (y_end - mu)
    out = {}
    for order, form in VARIANTS:
        errs = []
        for n in levels:
            sig = torch.exp(torch.linspace(math.log(smax), math.log(smin), n, dtype=f64))
            x = dpmpp_multistep(score, y0.clone(), sig, order=order, form=form).x
            errs.append((x - d_end).abs().max().item())
        out[f"{order}M {form}"] = errs
    return out


def mixture_errors(nfes: list[int], n: int) -> dict:
    mix = GaussianMixture([0.35, 0.65], [[-3.0, 1.0], [2.5, -1.5]], [0.6, 0.8])
    data = mix.sample(20000, generator=torch.Generator().manual_seed(5))
    score = oracle_sigma_score(mix)
    means, stds = torch.tensor([[-3.0, 1.0], [2.5, -1.5]]), [0.6, 0.8]
    out = {}
    for order, form in VARIANTS:
        rows = []
        for nfe in nfes:
            sig = schedules.karras_sigmas(nfe, 0.002, 80.0)
            mean, std = schedules.moment_matched_start(data, float(sig[0]))
            x0 = mean + std * torch.randn(n, 2, generator=torch.Generator().manual_seed(1))
            x = dpmpp_multistep(score, x0, sig, order=order, form=form).x
            left = x[:, 0] < 0
            err = max(
                ((x[sel].mean(0) - means[k]).abs().max() / stds[k]).item()
                for k, sel in enumerate((left, ~left))
            )
            rows.append({"nfe": nfe, "weight": left.double().mean().item(), "mean_err": err})
        out[f"{order}M {form}"] = rows
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--n", type=int, default=4000, help="mixture samples per run")
    args = p.parse_args(argv)
    levels, nfes = [10, 20, 40, 80], [10, 15, 20, 25, 30, 40]
    gauss, mixture = gaussian_errors(levels), mixture_errors(nfes, args.n)
    result = {
        "machine": f"{platform.processor() or platform.machine()}; torch {torch.__version__}",
        "gaussian": {"levels": levels, "max_abs_error": gauss},
        "mixture": {"weights": [0.35, 0.65], "n": args.n, "runs": mixture},
    }
    lines = [
        "# DPM-Solver++ multistep: published and Taylor forms",
        "",
        f"Machine: {result['machine']}. Command: `python benchmarks/dpm_solver_forms.py`.",
        "",
        "Gaussian data, error against the closed-form flow (max abs), and the observed order "
        "log2(e_N / e_2N):",
        "",
        "| solver | " + " | ".join(f"{n} levels" for n in levels) + " | orders |",
        "|---|" + "---:|" * (len(levels) + 1),
    ]
    for name, errs in gauss.items():
        rates = ", ".join(f"{math.log2(errs[i] / errs[i + 1]):.2f}" for i in range(len(errs) - 1))
        lines.append(f"| {name} | " + " | ".join(f"{e:.2e}" for e in errs) + f" | {rates} |")
    lines += [
        "",
        f"Oracle mixture 0.35/0.65 ({args.n} samples, EDM schedule, moment-matched start): "
        "weight of the first mode / largest per-mode mean error in std units:",
        "",
        "| solver | " + " | ".join(f"{n} NFE" for n in nfes) + " |",
        "|---|" + "---:|" * len(nfes),
    ]
    for name, rows in mixture.items():
        cells = " | ".join(f"{r['weight']:.3f} / {r['mean_err']:.3f}" for r in rows)
        lines.append(f"| {name} | {cells} |")
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "dpm_solver_forms.json", json.dumps(result, indent=1) + "\n")
    write_text_atomic(args.out / "dpm_solver_forms.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
