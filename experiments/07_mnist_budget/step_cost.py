"""CPU cost of one training step of the demo recipe and its wider / deeper variants.

Builds each recipe's ScoreModule through the package's own config and builder and times the
module's training step (loss under the recipe's bf16 autocast, backward, gradient clipping,
Adam, EMA) on a batch of 128 MNIST-shaped images, with the step builder of
``benchmarks/profile_step.py``. The recipes are timed in turn, round after round, so a busy
machine slows them alike; the median of the rounds is reported.

    python experiments/07_mnist_budget/step_cost.py --recipes edm_ema99_lr1e-3 edm_ch32 edm_blocks2
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import RECIPES  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "profile_step", HERE.parents[1] / "benchmarks" / "profile_step.py"
)
profile_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile_step)


def step_fn(recipe: str, batch: int):
    """The recipe's training step (no LR schedule: a constant-lr step costs the same)."""
    overrides = [o for o in RECIPES[recipe] if not o.startswith("module.lr_decay")]
    step, module = profile_step.build_step([*overrides, "optimizer.fused=false"], batch)
    return step, sum(p.numel() for p in module.model.parameters())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", nargs="+", default=["edm_ema99_lr1e-3", "edm_ch32", "edm_blocks2"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="steps per recipe per round")
    args = p.parse_args()
    torch.manual_seed(0)
    fns = {r: step_fn(r, args.batch) for r in args.recipes}
    for step, _ in fns.values():
        step()  # warm-up
    times: dict[str, list[float]] = {r: [] for r in fns}
    for _ in range(args.rounds):
        for r, (step, _) in fns.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[r].append((time.perf_counter() - t0) / args.steps)
    base = statistics.median(times[args.recipes[0]])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    print("| recipe | parameters | s/step (median) | x first |")
    print("|---|---:|---:|---:|")
    for r, (_, n) in fns.items():
        med = statistics.median(times[r])
        print(f"| {r} | {n / 1e6:.2f}M | {med:.3f} | {med / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
