"""The samplers' defaults against their former ones, with exact scores of Gaussian mixtures.

1. Deterministic samplers on the default VE SDE (σ_min 0.01, σ_max by NCSNv2's rule on 2000
   points, as data=gmm's ``auto``): ``sampler=ode`` (dopri5) and ``sampler=heun`` (18 steps),
   started from N(0, σ_max² I) (``init=prior``, the former default) and from the Gaussian with the
   VE marginal's moments (``init=auto``, the default).
2. Annealed Langevin on SDE models with toy_gmm's schedule (50 levels × 20 steps): down to
   σ(1e-5) with ε = 0.2 σ_L² (former) against the level from the data's scale with ε = 0.4 σ_L².
3. EDM-Heun on VP / sub-VP over the SDE's σ range (former) against EDM's [0.002, 80].

Per run: the largest mode-weight error, the largest per-mode mean error and spread error (in
units of that mode's std, per coordinate), with points assigned to their most probable mode.
Writes benchmarks/results/deterministic_start.{json,md}.

    PYTHONPATH=src python benchmarks/deterministic_start.py [--n 20000] [--seeds 2]   (~1.5 min)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from scorelab import toy
from scorelab.io import write_json_atomic, write_text_atomic
from scorelab.lit.build import sampler_from_config as sampler_of
from scorelab.nets.precond import OracleScoreModel
from scorelab.sde import VESDE, VPSDE, subVPSDE

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the mixtures and errors of the test
from mixture_helpers import FAR_MEAN_MIXTURES, mode_errors, ve_oracle  # noqa: E402

MIXTURES = {
    "2-D, 0.3/0.7": FAR_MEAN_MIXTURES["2d-two-modes"],
    "2-D, 0.15/0.35/0.5": FAR_MEAN_MIXTURES["2d-three-modes"],
    "8-D, 0.25/0.75": FAR_MEAN_MIXTURES["8d-two-modes"],
    "NCSN's 2-D, 0.2/0.8": toy.ncsn_toy_mixture(),
}


def run(driver, model, n: int, seeds: int) -> dict[str, float]:
    """The mean over seeds of each error."""
    rows = []
    for seed in range(seeds):
        x = driver(model, (n, model.mixture.dim), generator=torch.Generator().manual_seed(seed)).x
        rows.append(mode_errors(model.mixture, x))
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []

    def add(section, mixture, sde, sampler, setting, res):
        rows.append(dict(section=section, mixture=mixture, sde=sde, sampler=sampler, **res))
        rows[-1]["setting"] = setting
        print(f"{section:9s} {mixture:20s} {sde:12s} {sampler:5s} {setting:28s} {res}", flush=True)

    for name, mix in MIXTURES.items():
        model = ve_oracle(mix)
        smax = model.noise.sigma_max
        for sampler in ("ode", "heun"):
            for init in ("prior", "auto"):
                label = "N(0, σ_max² I) (former)" if init == "prior" else "moments (default)"
                res = run(sampler_of(sampler, f"init={init}"), model, args.n, args.seeds)
                add("start", name, f"VE σ_max={smax:g}", sampler, label, res)

    mix, mname = MIXTURES["2-D, 0.3/0.7"], "2-D, 0.3/0.7"
    ald = ("sampler.n_steps_each=20", "schedule.num_scales=50", "init.low=-4", "init.high=16")
    sdes = {"VE σ_max=16.46": VESDE(0.01, 16.46, 1000), "VP": VPSDE(), "sub-VP": subVPSDE()}
    for sde_name, sde in sdes.items():
        model = OracleScoreModel(mix, sde)
        lo = sde.sigma(torch.tensor([1e-5], dtype=torch.float64)).item()
        former = sampler_of("ald", *ald, f"schedule.sigma_min={lo}", f"sampler.eps={0.2 * lo**2}")
        res = run(former, model, args.n, args.seeds)
        add("ald", mname, sde_name, "ald", f"σ_L = σ(1e-5) = {lo:.2g} (former)", res)
        new = sampler_of("ald", *ald)
        res = run(new, model, args.n, args.seeds)
        sigma_l = float(new.schedule(model).kwargs["sigmas"][-1])
        add("ald", mname, sde_name, "ald", f"σ_L = {sigma_l:.3g} (default)", res)
        if sde_name.startswith("VE"):
            continue
        off = sampler_of("heun", "schedule.clamp_sigma_min=null", "schedule.clamp_sigma_max=null")
        lo, hi = off.schedule.sigma_range(model.noise)
        res = run(off, model, args.n, args.seeds)
        add("heun", mname, sde_name, "heun", f"σ {hi:.3g}…{lo:.2g} (former)", res)
        res = run(sampler_of("heun"), model, args.n, args.seeds)
        add("heun", mname, sde_name, "heun", "σ 80…0.002 (default)", res)

    out = ROOT / "benchmarks" / "results"
    write_json_atomic(
        {"n": args.n, "seeds": args.seeds, "rows": rows}, out / "deterministic_start.json"
    )
    lines = [
        f"n = {args.n} samples, mean over {args.seeds} seeds; errors are the largest over modes "
        "(weights absolute; means and spreads in units of the mode's std, per coordinate).",
        "",
        "| what | mixture | SDE | sampler | setting | weight error | mean error | spread error |",
        "|---|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['section']} | {r['mixture']} | {r['sde']} | {r['sampler']} | {r['setting']} | "
            f"{r['weight']:.3f} | {r['mean']:.3f} | {r['spread']:.3f} |"
        )
    write_text_atomic(out / "deterministic_start.md", "\n".join(lines) + "\n")
    print(f"wrote {out / 'deterministic_start.md'}")


if __name__ == "__main__":
    main()
