"""NCSN Fig. 2: a learned score is accurate only where the data density is high.

python experiments/02_score_accuracy_low_density/run.py [--smoke] [--out DIR]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/: _study
from _study import parse_study, study_parser, write_results  # noqa: E402

from scorelab.losses import DiscreteDSMLoss, SlicedScoreMatchingLoss  # noqa: E402
from scorelab.nets.mlp import MLP  # noqa: E402
from scorelab.plots import save_figure
from scorelab.toy import ncsn_toy_mixture  # noqa: E402

HERE = Path(__file__).resolve().parent
FULL = {"steps": 2000, "grid": 101}
SMOKE = {"steps": 3, "grid": 11}
BATCH, LR, SEED, DSM_SIGMA = 128, 1e-3, 0, 0.1
LOW, HIGH = 1e-4, 1e-2  # density thresholds for "low" and "high" density regions


def losses() -> dict[str, Callable]:
    ssm = SlicedScoreMatchingLoss(variance_reduced=True)
    dsm = DiscreteDSMLoss([DSM_SIGMA])
    return {"SSM": ssm, f"DSM σ={DSM_SIGMA}": dsm}


def train(loss, steps: int) -> MLP:
    """The NCSN Fig. 2 network (3 × 128, softplus), Adam 1e-3, fresh batches of 128."""
    torch.manual_seed(SEED)
    net = MLP(dim=2, hidden=128, n_layers=3, activation="softplus", embedding="none")
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    mix, gen = ncsn_toy_mixture(), torch.Generator().manual_seed(SEED)
    for _ in range(steps):
        out = loss(lambda x, sigma: net(x), mix.sample(BATCH, generator=gen), generator=gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    return net


def run(size: dict) -> tuple[dict, dict]:
    mix = ncsn_toy_mixture()
    g = torch.linspace(-8, 8, size["grid"])
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    density = mix.log_prob(pts).exp()
    true = mix.score(pts)
    maps = {"density": density.reshape(xx.shape)}
    summary = {
        "steps": size["steps"],
        "batch": BATCH,
        "lr": LR,
        "dsm_sigma": DSM_SIGMA,
        "grid": size["grid"],
        "density_thresholds": {"low": LOW, "high": HIGH},
    }
    for name, loss in losses().items():
        net = train(loss, size["steps"])
        with torch.no_grad():
            err = (net(pts) - true).norm(dim=1)
        maps[name] = err.reshape(xx.shape)
        hi, lo = density > HIGH, density < LOW
        summary[name] = {
            "median_error_high_density": err[hi].median().item() if hi.any() else None,
            "median_error_low_density": err[lo].median().item() if lo.any() else None,
            "p_weighted_rmse": ((err**2 * density).sum() / density.sum()).sqrt().item(),
        }
    return maps, summary


def plot(maps: dict, path: Path) -> None:
    names = [k for k in maps if k != "density"]
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(4.2 * (1 + len(names)), 3.8), dpi=110)
    ext = (-8, 8, -8, 8)
    im = axes[0].imshow(maps["density"].numpy(), origin="lower", extent=ext, cmap="viridis")
    axes[0].set_title("data density p(x)", fontsize=10)
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    vmax = max(maps[n].max().item() for n in names)
    vmin = max(1e-2, min(maps[n].min().item() for n in names))
    for ax, name in zip(axes[1:], names):
        im = ax.imshow(
            maps[name].clamp_min(vmin).numpy(),
            origin="lower",
            extent=ext,
            cmap="magma",
            norm=LogNorm(vmin=vmin, vmax=vmax),
        )
        ax.contour(maps["density"].numpy(), levels=[HIGH], extent=ext, colors="w", linewidths=0.8)
        ax.set_title(f"‖s_θ − ∇log p‖, {name}", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046)
    for ax in axes:
        ax.set_xlabel("x₁")
    axes[0].set_ylabel("x₂")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def markdown(s: dict) -> str:
    lines = [
        "| objective | median error, p > 1e-2 | median error, p < 1e-4 | p-weighted RMSE |",
        "|---|---|---|---|",
    ]
    for name in losses():
        v = s[name]
        lines.append(
            f"| {name} | {v['median_error_high_density']:.3g} | "
            f"{v['median_error_low_density']:.3g} | {v['p_weighted_rmse']:.3g} |"
        )
    lines += [
        "",
        f"Error ‖s_θ(x) − ∇log p(x)‖ on a {s['grid']}² grid over [-8, 8]² after "
        f"{s['steps']} Adam steps (batch {s['batch']}, lr {s['lr']}).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    a = parse_study(study_parser(__doc__, HERE), argv)
    maps, summary = run(SMOKE if a.smoke else FULL)
    plot(maps, a.out / "score_error.png")
    write_results(a.out, "score_error", summary, markdown(summary))
    return summary


if __name__ == "__main__":
    main()
