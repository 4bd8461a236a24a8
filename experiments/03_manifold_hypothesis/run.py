"""NCSN Fig. 1 at MNIST scale: sliced score matching on raw MNIST vs MNIST + N(0, 1e-4 I).

python experiments/03_manifold_hypothesis/run.py [--smoke] [--out DIR] [--data-root DIR]
"""

from __future__ import annotations

import json
import math
import sys
from itertools import cycle
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/: _study
from _study import parse_study, study_parser, write_results  # noqa: E402

from scorelab.data.images import MNISTDataModule  # noqa: E402
from scorelab.losses import SlicedScoreMatchingLoss  # noqa: E402
from scorelab.nets.mlp import MLP  # noqa: E402
from scorelab.plots import save_figure

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FULL = {"steps": 400, "limit": 20000, "hidden": 512}
SMOKE = {"steps": 3, "limit": 256, "hidden": 16}
BATCH, LR, SEED = 128, 1e-3, 0
NOISE_STD = 0.01  # N(0, 1e-4 I): the paper's perturbation


def batches(root: Path, limit: int | None, seed: int):
    """Endless (B, 784) batches of MNIST in [0, 1], from scorelab's MNIST DataModule."""
    dm = MNISTDataModule(root=root, batch_size=BATCH, scaling="zero_one", limit=limit, seed=seed)
    dm.setup("fit")
    for x in cycle(dm.train_dataloader()):
        x = x[0] if isinstance(x, list | tuple) else x
        yield x.float().flatten(1)


def train(root: Path, size: dict, noise_std: float | None) -> list[float]:
    """SSM (variance-reduced, one Gaussian slice) loss per step of a softplus MLP."""
    torch.manual_seed(SEED)
    net = MLP(dim=784, hidden=size["hidden"], n_layers=2, activation="softplus", embedding="none")
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    loss = SlicedScoreMatchingLoss(noise_sigma=noise_std, variance_reduced=True)
    gen = torch.Generator().manual_seed(SEED)
    curve = []
    for _, x in zip(range(size["steps"]), batches(root, size["limit"], SEED)):
        out = loss(lambda v, sigma: net(v), x, generator=gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        curve.append(out.loss.item())
    return curve


def plot(curves: dict[str, list[float]], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    for ax, (name, c) in zip(axes, curves.items()):
        ax.plot(c, lw=0.8)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.set_yscale("symlog", linthresh=1e2)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("sliced score matching loss")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def summarise(curves: dict[str, list[float]]) -> dict:
    out = {}
    for name, c in curves.items():
        tail = c[len(c) // 2 :] or c
        finite = [v for v in tail if math.isfinite(v)]
        mean = sum(finite) / max(len(finite), 1)
        std = (sum((v - mean) ** 2 for v in finite) / max(len(finite) - 1, 1)) ** 0.5
        out[name] = {
            "final": c[-1],
            "min": min(c),
            "second_half_mean": mean,
            "second_half_std": std,
            "non_finite_steps": len(c) - sum(map(math.isfinite, c)),
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    p = study_parser(__doc__, HERE)
    p.add_argument(
        "--data-root", type=Path, default=ROOT / "data" / "raw", help="holds MNIST/raw (make data)"
    )
    a = parse_study(p, argv)
    size = SMOKE if a.smoke else FULL
    curves = {
        "raw MNIST": train(a.data_root, size, None),
        "MNIST + N(0, 1e-4 I)": train(a.data_root, size, NOISE_STD),
    }
    summary = {
        "steps": size["steps"],
        "batch": BATCH,
        "lr": LR,
        "hidden": size["hidden"],
        "noise_std": NOISE_STD,
        "curves": curves,
        "summary": summarise(curves),
    }
    write_results(a.out, "ssm_loss", summary)
    plot(curves, a.out / "ssm_loss.png")
    print(json.dumps(summary["summary"], indent=2))
    return summary


if __name__ == "__main__":
    main()
