"""The samples the MNIST classifier is least sure of: a grid and their two likeliest digits.

The confident share (samples labelled with probability >= 0.9) is the demo target that no
budget reaches; this shows what the other samples look like. Input: an ``.npz`` written by
``python -m scorelab.sample`` (``samples`` in [0, 1], N x 1 x 28 x 28).

    python -m scorelab.sample ckpt_path=CKPT n_samples=400 precision=bf16 hydra.run.dir=RUN
    python experiments/07_mnist_budget/least_confident.py RUN/samples.npz --out DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))
sys.path.insert(0, str(HERE.parent))  # experiments/: _study
from _study import write_results  # noqa: E402

from scorelab.io import atomic_output  # noqa: E402
from scorelab.metrics.mnist import (  # noqa: E402
    classifier_logits_and_features,
    load_mnist_classifier,
    mode_coverage_from_logits,
)


def least_confident(samples: torch.Tensor, n: int) -> dict:
    """Indices of the ``n`` least confident samples, with their top-2 digits and probabilities."""
    logits, _ = classifier_logits_and_features(samples, load_mnist_classifier())
    top = logits.softmax(-1).topk(2, dim=-1)
    order = top.values[:, 0].argsort()[:n]
    return {
        "n_samples": len(samples),
        # the share the evaluation reports, from the same function
        "confident_share": mode_coverage_from_logits(logits).confident_share,
        "least_confident": [
            {
                "index": int(i),
                "digits": top.indices[i].tolist(),
                "probabilities": [round(v, 3) for v in top.values[i].tolist()],
            }
            for i in order
        ],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "samples", type=Path, help="samples.npz from python -m scorelab.sample or evaluate"
    )
    p.add_argument("--n", type=int, default=48, help="how many to show")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    if not a.samples.is_file():
        p.error(f"no such file: {a.samples} (write one with python -m scorelab.sample)")
    if a.n < 1:
        p.error(f"--n must be >= 1, got {a.n}")
    x = torch.from_numpy(np.load(a.samples)["samples"])
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()  # scorelab.evaluate's: uint8
    res = least_confident(x, a.n)
    from torchvision.utils import save_image

    with atomic_output(a.out / "least_confident.png") as tmp:
        idx = [r["index"] for r in res["least_confident"]]
        save_image(x[idx], tmp, nrow=12, pad_value=0.5, format="png")
    pairs = ", ".join("/".join(map(str, r["digits"])) for r in res["least_confident"])
    md = (
        f"# The {a.n} least confident of {res['n_samples']} samples\n\n"
        f"Confident share (p >= 0.9): {100 * res['confident_share']:.1f} %. "
        f"Grid: least_confident.png (row by row, least confident first).\n\n"
        f"Two likeliest digits of each: {pairs}\n"
    )
    write_results(a.out, "least_confident", res, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
