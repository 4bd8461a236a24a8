"""Train the MNIST classifier used by :mod:`scorelab.metrics.mnist`.

Usage::

    python -m scorelab.metrics.mnist_classifier --data-dir data/raw [--out PATH] [--epochs 3]

Reads torchvision's ``MNIST`` raw layout under ``<data-dir>/MNIST/raw`` (prepared by
``python -m scorelab.data.prepare mnist``), trains with Adam on the CPU in a few minutes, reports
test accuracy and saves a plain state dict (loadable with ``weights_only=True``) plus a JSON file
with the accuracy next to it. An existing file is reused unless ``--force`` is given.

The default ``--out`` is the copy that ships with the package
(``scorelab/metrics/weights/mnist_classifier.pt``); ``--force`` retrains it. Measured on 2 CPU
cores (torch 2.14.1, seed 0): 3 epochs (about 40 s) reach 99.05 % test accuracy.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from scorelab.io import atomic_torch_save, write_text_atomic
from scorelab.metrics.mnist import (
    DEFAULT_CLASSIFIER_PATH,
    MnistClassifier,
    classifier_logits_and_features,
    load_mnist_classifier,
)

__all__ = ["evaluate_accuracy", "load_mnist_split", "main", "train_classifier", "train_step"]


def load_mnist_split(data_dir: str | Path, train: bool) -> tuple[Tensor, Tensor]:
    """uint8 images (N, 28, 28) and long labels (N,) from torchvision's raw layout.

    Raises:
        FileNotFoundError: the data is not prepared; the message gives the command.
    """
    from torchvision.datasets import MNIST

    try:
        ds = MNIST(str(data_dir), train=train, download=False)
    except RuntimeError as err:
        raise FileNotFoundError(
            f"MNIST not found under {Path(data_dir) / 'MNIST' / 'raw'}; prepare it with: "
            f"python -m scorelab.data.prepare mnist --root {data_dir}"
        ) from err
    return ds.data, ds.targets


def train_step(model: MnistClassifier, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> float:
    """One cross-entropy step on x (B, 1, 28, 28) in [0, 1], labels y (B,); returns the loss."""
    model.train()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def evaluate_accuracy(model: MnistClassifier, images: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy on uint8 (N, 28, 28) images."""
    logits, _ = classifier_logits_and_features(images, model)
    return float((logits.argmax(dim=1) == labels).double().mean())


def train_classifier(
    images: Tensor,
    labels: Tensor,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    log_every: int = 100,
) -> MnistClassifier:
    """Adam on uint8 (N, 28, 28) images with a per-epoch shuffle; lr halves each epoch."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MnistClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x_all = images[:, None].float() / 255
    for epoch in range(epochs):
        perm = torch.randperm(len(x_all), generator=g)
        t0 = time.time()
        for i, idx in enumerate(perm.split(batch_size)):
            loss = train_step(model, opt, x_all[idx], labels[idx])
            if log_every and i % log_every == 0:
                print(f"epoch {epoch} step {i} loss {loss:.4f}")
        sched.step()
        print(f"epoch {epoch} done in {time.time() - t0:.0f}s")
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the MNIST metrics classifier.")
    parser.add_argument("--data-dir", default="data/raw", help="root holding MNIST/raw")
    parser.add_argument("--out", default=str(DEFAULT_CLASSIFIER_PATH))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="retrain even if the file exists")
    args = parser.parse_args(argv)

    out = Path(args.out)
    test_x, test_y = load_mnist_split(args.data_dir, train=False)
    if out.is_file() and not args.force:
        model = load_mnist_classifier(out)
        print(f"using {out}; test accuracy {evaluate_accuracy(model, test_x, test_y):.4f}")
        return 0
    train_x, train_y = load_mnist_split(args.data_dir, train=True)
    model = train_classifier(train_x, train_y, epochs=args.epochs, seed=args.seed)
    acc = evaluate_accuracy(model, test_x, test_y)
    print(f"test accuracy {acc:.4f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(model.state_dict(), out)
    meta = {"test_accuracy": acc, "epochs": args.epochs, "seed": args.seed}
    write_text_atomic(out.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
