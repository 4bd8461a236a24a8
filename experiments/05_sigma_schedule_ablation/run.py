"""σ-schedule ablation on the 2-D mixture: Hydra multiruns over sde.sigma_max, N and σ_min, with
the exact (oracle) score and a briefly trained MLP, scored by sliced Wasserstein and mode-weight
error; tables by ``python -m scorelab.report``.

python experiments/05_sigma_schedule_ablation/run.py [--smoke] [--out DIR] [--work DIR]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/: _study
from _study import parse_study, study_parser, write_results  # noqa: E402

from scorelab.io import write_json_atomic, write_text_atomic
from scorelab.metrics.toy import mode_weight_error, mode_weights, sliced_wasserstein
from scorelab.report import report
from scorelab.toy import ncsn_toy_mixture

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

ORACLE = ["model=oracle", "data=gmm", "sde=ve", "sampler=pc", "batch_size=4096"]
TRAINED = [
    "experiment=toy_gmm",
    "sampler=pc",  # with PC's own settings, not toy_gmm's annealed-Langevin keys
    "callbacks=none",
    "logger=csv",
    "++trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
# Each sweep: name -> (entry point, its fixed Hydra overrides, table rows, table cols).
SWEEPS = {
    "oracle_sigma_max_N": ("scorelab.sample", ORACLE, "sde.sigma_max", "sde.N"),
    "oracle_sigma_min": ("scorelab.sample", ORACLE, "sde.sigma_min", "sde.sigma_max"),
    "trained_sigma_max": ("scorelab.train", TRAINED, "sde.sigma_max", "sde.N"),
}
# Per size: the swept overrides of each sweep that runs, as on the command line.
FULL = {
    "n_samples": 1000,
    "sweeps": {
        "oracle_sigma_max_N": "sde.sigma_max=1,5,20,auto,100 sde.N=10,100,300 seed=0,1,2",
        "oracle_sigma_min": "sde.sigma_min=0.001,0.01,0.1,0.5 sde.sigma_max=20,100 sde.N=100 "
        "seed=0,1,2",
        "trained_sigma_max": "sde.sigma_max=1,5,20,auto,100 sde.N=100 trainer.max_steps=400 "
        "trainer.val_check_interval=200 seed=0,1",
    },
}
SMOKE = {
    "n_samples": 64,
    "sweeps": {
        "oracle_sigma_max_N": "sde.sigma_max=5,auto sde.N=10 seed=0",
        "trained_sigma_max": "sde.sigma_max=auto sde.N=5 trainer.max_steps=1 "
        "trainer.val_check_interval=1 trainer.limit_val_batches=1 seed=0",
    },
}
# Tabled metrics (all lower is better); w_small_mode (weight of the 0.2 mode) stays in metrics.json.
METRICS = {"sw": "sliced W2 to exact samples", "mode_err": "max |ŵ_k − w_k|"}


def multirun(module: str, overrides: list[str], sweep_dir: Path, n: int) -> None:
    """One Hydra multirun (basic launcher) of a scorelab entry point into ``sweep_dir``."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "OMP_NUM_THREADS": "1",
        "PROJECT_ROOT": str(ROOT),
    }
    cmd = [
        sys.executable,
        "-m",
        module,
        "-m",
        *overrides,
        f"n_samples={n}",
        f"hydra.sweep.dir={sweep_dir}",
        "tags=[sigma_ablation]",
    ]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)


def evaluate(sweep_dir: Path, n: int) -> int:
    """Score each run's samples.npz against exact samples; record them in its metrics.json.

    Sample runs get a metrics.json here; train runs have one, and the metrics are merged into
    it. Failed runs (``status: failed``) are left as they are.
    """
    mix = ncsn_toy_mixture()
    ref = mix.sample(max(n, 1000), generator=torch.Generator().manual_seed(12345))
    done = 0
    for npz in sorted(sweep_dir.rglob("samples.npz")):
        run = npz.parent
        mfile = run / "metrics.json"
        data = json.loads(mfile.read_text()) if mfile.is_file() else {"status": "ok"}
        if data.get("status") == "failed":
            continue
        x = torch.from_numpy(np.load(npz)["samples"]).double()
        ok = bool(torch.isfinite(x).all())
        metrics = {
            "sw": sliced_wasserstein(x, ref, generator=torch.Generator().manual_seed(0)).item()
            if ok
            else float("nan"),
            "mode_err": mode_weight_error(x, mix.means, mix.weights).item(),
            "w_small_mode": mode_weights(x, mix.means)[0].item(),
        }
        data.setdefault("metrics", {}).update(metrics)
        write_json_atomic(data, mfile)
        done += 1
    return done


def noise_floor(n: int) -> float:
    """Sliced W2 between two independent sets of exact samples of size n."""
    mix = ncsn_toy_mixture()
    ref = mix.sample(max(n, 1000), generator=torch.Generator().manual_seed(12345))
    x = mix.sample(n, generator=torch.Generator().manual_seed(7))
    return sliced_wasserstein(x, ref, generator=torch.Generator().manual_seed(0)).item()


def main(argv: list[str] | None = None) -> dict:
    p = study_parser(__doc__, HERE)
    p.add_argument(
        "--work",
        type=Path,
        default=None,
        help="where the multirun directories go (default: a temporary directory)",
    )
    a = parse_study(p, argv)
    size = SMOKE if a.smoke else FULL
    work = a.work or Path(tempfile.mkdtemp(prefix="sigma_ablation_"))
    n = size["n_samples"]
    floor = noise_floor(n)
    summary = {"n_samples": n, "sw_noise_floor": floor, "work_dir": str(work), "tables": {}}
    for name, swept in size["sweeps"].items():
        module, fixed, rows, cols = SWEEPS[name]
        overrides = [*fixed, *swept.split()]
        sweep_dir = work / name
        if sweep_dir.exists():
            shutil.rmtree(sweep_dir)
        multirun(module, overrides, sweep_dir, n)
        evaluated = evaluate(sweep_dir, n)
        for metric, what in METRICS.items():
            text, runs = report(sweep_dir, rows, metric, cols=cols, fmt="md")
            target = a.out / f"{name}_{metric}.md"
            write_text_atomic(target, f"### {name}: {what}\n\n{text}")
            summary["tables"][f"{name}_{metric}"] = target.name
        csv_text, _ = report(sweep_dir, rows, "sw", cols=cols, fmt="csv")
        write_text_atomic(a.out / f"{name}_sw.csv", csv_text)
        summary[name] = {
            "command": f"python -m {module} -m {' '.join(overrides)} n_samples={n}",
            "runs": len(runs),
            "evaluated": evaluated,
        }
        print(f"{name}: {evaluated}/{len(runs)} runs evaluated", flush=True)
    write_results(a.out, "summary", summary)
    return summary


if __name__ == "__main__":
    main()
