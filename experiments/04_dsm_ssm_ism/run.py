"""DSM vs SSM vs ISM on the NCSN toy mixture: estimator spread, time per step, score error.

python experiments/04_dsm_ssm_ism/run.py [--smoke] [--out DIR]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/: _study
from _study import parse_study, study_parser, write_results  # noqa: E402

from scorelab.losses import (
    DiscreteDSMLoss,
    ImplicitScoreMatchingLoss,
    SlicedScoreMatchingLoss,
)
from scorelab.nets.mlp import MLP
from scorelab.toy import ncsn_toy_mixture

HERE = Path(__file__).resolve().parent
FULL = {"steps": 800, "ref_steps": 400, "repeats": 100, "n_test": 4000}
SMOKE = {"steps": 3, "ref_steps": 3, "repeats": 4, "n_test": 64}
BATCH, LR, SEED = 128, 1e-3, 0


def estimators() -> dict[str, Callable]:
    """name -> loss on the scale of Hyvärinen's objective ½E‖s - ∇log p‖² (+ const).

    DSM carries no ½ in scorelab (the score SDE convention) and is used unweighted here
    (weight_power=0: E‖s + z/σ‖²), so it is halved to share that scale.
    """

    def dsm(sigma: float) -> Callable:
        loss = DiscreteDSMLoss([sigma], weight_power=0.0)

        def fn(score, x, generator=None):
            return 0.5 * loss(score, x, generator=generator).loss

        return fn

    def plain(loss) -> Callable:
        return lambda score, x, generator=None: loss(score, x, generator=generator).loss

    return {
        "ISM (exact trace)": plain(ImplicitScoreMatchingLoss()),
        "SSM (Gaussian v)": plain(SlicedScoreMatchingLoss()),
        "SSM-VR": plain(SlicedScoreMatchingLoss(variance_reduced=True)),
        "DSM σ=0.1": dsm(0.1),
        "DSM σ=0.01": dsm(0.01),
    }


def make_net() -> MLP:
    torch.manual_seed(SEED)
    return MLP(dim=2, hidden=128, n_layers=3, activation="softplus", embedding="none")


def as_score(net: MLP) -> Callable:
    return lambda x, sigma: net(x)


def train(net: MLP, loss_fn: Callable, steps: int, seed: int) -> float:
    """Adam steps on fresh mixture batches; returns the mean CPU time per step (s) of this
    process (steadier than wall time on a shared machine)."""
    mix, gen = ncsn_toy_mixture(), torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    score = as_score(net)
    t0 = time.process_time()
    for _ in range(steps):
        x = mix.sample(BATCH, generator=gen)
        loss = loss_fn(score, x, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.process_time() - t0) / steps


def score_error(net: MLP, n: int) -> float:
    """√E_p‖s_θ(x) - ∇log p(x)‖² on fresh samples of the mixture."""
    mix = ncsn_toy_mixture()
    x = mix.sample(n, generator=torch.Generator().manual_seed(999))
    with torch.no_grad():
        return (net(x) - mix.score(x)).pow(2).sum(1).mean().sqrt().item()


def loss_spread(net: MLP, loss_fn: Callable, repeats: int) -> tuple[float, float]:
    """Mean and std of the loss estimate over fresh batches at fixed parameters."""
    mix, gen = ncsn_toy_mixture(), torch.Generator().manual_seed(2024)
    values = [
        loss_fn(as_score(net), mix.sample(BATCH, generator=gen), generator=gen).item()
        for _ in range(repeats)
    ]
    return statistics.fmean(values), statistics.stdev(values)


def run(size: dict) -> dict:
    ests = estimators()
    # The shared point for the spread: a network trained by ISM (the exact objective).
    ref = make_net()
    train(ref, ests["ISM (exact trace)"], size["ref_steps"], seed=1)
    results = {}
    for name, fn in ests.items():
        mean, std = loss_spread(ref, fn, size["repeats"])
        net = make_net()
        per_step = train(net, fn, size["steps"], seed=SEED)
        results[name] = {
            "loss_mean_at_ref": mean,
            "loss_std_at_ref": std,
            "cpu_ms_per_step": 1e3 * per_step,
            "score_rmse_after_budget": score_error(net, size["n_test"]),
        }
        print(name, results[name], flush=True)
    return {
        "size": size,
        "batch": BATCH,
        "lr": LR,
        "results": results,
        "score_rmse_untrained": score_error(make_net(), size["n_test"]),
    }


def markdown(r: dict) -> str:
    s = r["size"]
    lines = [
        "| estimator | loss std over batches | loss mean | CPU ms / step | score RMSE after "
        f"{s['steps']} steps |",
        "|---|---|---|---|---|",
    ]
    for name, v in r["results"].items():
        lines.append(
            f"| {name} | {v['loss_std_at_ref']:.3g} | {v['loss_mean_at_ref']:.3g} | "
            f"{v['cpu_ms_per_step']:.2f} | {v['score_rmse_after_budget']:.3f} |"
        )
    lines += [
        "",
        f"Spread: std of the loss over {s['repeats']} batches of {r['batch']} at one fixed "
        f"network (trained {s['ref_steps']} ISM steps). Score RMSE: √E_p‖s_θ − ∇log p‖² on "
        f"{s['n_test']} exact samples (untrained: {r['score_rmse_untrained']:.3f}). "
        "CPU time per Adam step (one thread, batch data sampling included).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    a = parse_study(study_parser(__doc__, HERE), argv)
    r = run(SMOKE if a.smoke else FULL)
    write_results(a.out, "estimators", r, markdown(r))
    return r


if __name__ == "__main__":
    main()
