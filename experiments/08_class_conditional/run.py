"""Class-conditional MNIST with classifier-free guidance: one row per digit, and how often the
package's MNIST classifier names the digit that was asked for.

Loads a checkpoint trained with labels (``python -m scorelab.train experiment=mnist_cond``),
draws ``--per-class`` samples for every digit with its own sampler and guidance weight ``w``
(s_w = (1 + w) s(x, t, y) − w s(x, t, ∅)), and writes ``grid_w<w>.png`` (10 × 10: row k is
digit k), ``results.json`` and ``results.md`` with the per-class accuracy of the classifier.

    python experiments/08_class_conditional/run.py --ckpt RUN/checkpoints/last.ckpt --weights 0 1 3
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))
sys.path.insert(0, str(HERE.parent))  # experiments/: _study
from _study import study_parser  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from scorelab.guidance import GuidedScore  # noqa: E402
from scorelab.io import atomic_output, write_text_atomic  # noqa: E402
from scorelab.lit.sampling_model import draw, load_sampling_model  # noqa: E402
from scorelab.metrics.mnist import load_mnist_classifier  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = study_parser(__doc__, HERE)
    p.add_argument("--ckpt", type=Path, required=True, help="a checkpoint trained with labels")
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0, 3.0])
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.per_class < 10 or min(a.weights) < 0:
        p.error(f"--per-class must be >= 10 and --weights >= 0, got {a.per_class}, {a.weights}")
    from torchvision.utils import make_grid, save_image

    cfg = OmegaConf.create({"ckpt_path": str(a.ckpt), "use_ema": True})
    m = load_sampling_model(cfg, [])
    clf = load_mnist_classifier()
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for w in a.weights:
        images, acc = [], []
        for k in range(10):
            model = GuidedScore(m.model, k, w)
            x, nfe, _ = draw(model, m.sampler, m.shape, a.per_class, a.per_class, a.seed + k)
            x = m.to_unit(x.float()).clamp(0, 1)
            pred = clf(x).argmax(1)
            acc.append((pred == k).float().mean().item())
            images.append(x[:10])
        rows.append({"weight": w, "per_class_accuracy": acc, "mean": sum(acc) / 10, "nfe": nfe})
        with atomic_output(a.out / f"grid_w{w:g}.png") as tmp:
            save_image(make_grid(torch.cat(images), nrow=10, padding=2, pad_value=1.0), tmp)
        print(json.dumps(rows[-1]), flush=True)
    lines = [
        "# Class-conditional MNIST: accuracy of the MNIST classifier on guided samples",
        "",
        f"`python experiments/08_class_conditional/run.py --ckpt {a.ckpt} --weights "
        f"{' '.join(f'{w:g}' for w in a.weights)} --per-class {a.per_class}`",
        "",
        "| guidance w | " + " | ".join(str(k) for k in range(10)) + " | mean | grid |",
        "|---:|" + "---:|" * 11 + "---|",
    ]
    for r in rows:
        accs = " | ".join(f"{100 * v:.0f} %" for v in r["per_class_accuracy"])
        grid = f"[png](grid_w{r['weight']:g}.png)"
        lines.append(f"| {r['weight']:g} | {accs} | {100 * r['mean']:.1f} % | {grid} |")
    write_text_atomic(a.out / "results.json", json.dumps(rows, indent=1) + "\n")
    write_text_atomic(a.out / "results.md", "\n".join(lines) + "\n")
    print(f"wrote {a.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
