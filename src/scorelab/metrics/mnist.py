"""MNIST domain metrics from a small CNN classifier.

- **MNIST-FID**: Fréchet distance between the classifier's penultimate (128-d) features of samples
  and of real digits, with torch-fidelity's estimator (:mod:`scorelab.metrics.fid`).
- **Classifier score**: exp E_x[KL(p(y|x) ‖ p(y))], the Inception Score with the MNIST classifier
  (1 ≤ score ≤ 10; about 9.9 for real test digits).
- **Mode coverage**: the histogram of predicted classes and the fraction of the 10 digits that
  receive at least ``min_share`` of the samples.

The classifier's weights ship with the package (``scorelab/metrics/weights/mnist_classifier.pt``,
a plain state dict of 0.2M parameters, with its test accuracy in the ``.json`` beside it), so any
MNIST run can score itself with no extra step. They were made by
``python -m scorelab.metrics.mnist_classifier --data-dir data/raw --force``, which retrains them
(a minute on two CPU cores).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, isc_features_to_metric

from scorelab.metrics.fid import (
    FeatureStatistics,
    StatsKey,
    cached_statistics,
)

__all__ = [
    "DEFAULT_CLASSIFIER_PATH",
    "MnistClassifier",
    "ModeCoverage",
    "check_mnist_images",
    "classifier_id",
    "classifier_logits_and_features",
    "classifier_score_from_logits",
    "load_mnist_classifier",
    "mnist_reference_statistics",
    "mode_coverage_from_logits",
]

DEFAULT_CLASSIFIER_PATH = Path(__file__).resolve().parent / "weights" / "mnist_classifier.pt"
TRAIN_COMMAND = "python -m scorelab.metrics.mnist_classifier --data-dir data/raw"
CONFIDENCE = 0.9  # a sample is "confidently a digit" when the classifier gives it >= this
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
N_CLASSES = 10


class MnistClassifier(nn.Module):
    """Two 5×5 conv layers (16, 32 channels, each with 2×2 max-pool) and two linear layers.

    Input (B, 1, 28, 28) in [0, 1]; ``forward`` returns (B, 10) logits, ``features`` the (B, 128)
    penultimate activations used for MNIST-FID.
    """

    feature_dim = 128

    def __init__(self, dropout: float = 0.25) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5, padding=2)
        self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
        self.fc1 = nn.Linear(32 * 7 * 7, self.feature_dim)
        self.fc2 = nn.Linear(self.feature_dim, N_CLASSES)
        self.dropout = nn.Dropout(dropout)

    def features(self, x: Tensor) -> Tensor:
        """(B, 1, 28, 28) in [0, 1] -> (B, 128)."""
        x = (x - MNIST_MEAN) / MNIST_STD
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, 16, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 32, 7, 7)
        return F.relu(self.fc1(self.dropout(x.flatten(1))))

    def forward(self, x: Tensor) -> Tensor:
        """(B, 1, 28, 28) in [0, 1] -> (B, 10) logits."""
        return self.fc2(self.dropout(self.features(x)))


def load_mnist_classifier(
    path: str | os.PathLike = DEFAULT_CLASSIFIER_PATH, device: str | torch.device = "cpu"
) -> MnistClassifier:
    """The trained classifier in eval mode, read with ``weights_only=True``.

    Raises:
        FileNotFoundError: not trained yet; the message gives the command.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"MNIST classifier weights not found at {path}; train them with: {TRAIN_COMMAND}"
        )
    model = MnistClassifier()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(device).eval().requires_grad_(False)


def classifier_id(model: MnistClassifier) -> str:
    """Feature-space name that changes when the weights do: ``mnist-classifier-<sha1[:10]>``."""
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return f"mnist-classifier-{h.hexdigest()[:10]}:penultimate"


def check_mnist_images(images: Tensor, name: str = "images", min_n: int = 2) -> Tensor:
    """Validate MNIST-shaped images and return float (N, 1, 28, 28) in [0, 1].

    Args:
        images: (N, 1, 28, 28) or (N, 28, 28), uint8 in [0, 255] or float in [0, 1].
    """
    if not isinstance(images, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (N, 1, 28, 28), got {type(images)}")
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(
            f"{name} must have shape (N, 1, 28, 28) or (N, 28, 28), got {tuple(images.shape)}; "
            "MNIST metrics need 28×28 grayscale digits"
        )
    if images.shape[0] < min_n:
        raise ValueError(f"{name} needs at least {min_n} images, got N={images.shape[0]}")
    if images.dtype == torch.uint8:
        return images.float() / 255
    if not images.is_floating_point():
        raise ValueError(f"{name} must be uint8 or floating point, got dtype {images.dtype}")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        fix = "map [-1, 1] data with (x + 1) / 2" if lo >= -1.0 else "rescale to [0, 1]"
        raise ValueError(f"float {name} must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; {fix}")
    return images.float()


@torch.no_grad()
def classifier_logits_and_features(
    images: Tensor, model: MnistClassifier, batch_size: int = 1000, min_n: int = 2
) -> tuple[Tensor, Tensor]:
    """Logits (N, 10) and penultimate features (N, 128) on the CPU, in batches."""
    x = check_mnist_images(images, min_n=min_n)
    model.eval()
    device = next(model.parameters()).device
    logits, feats = [], []
    for batch in x.split(batch_size):
        f = model.features(batch.to(device))
        feats.append(f.cpu())
        logits.append(model.fc2(f).cpu())
    return torch.cat(logits), torch.cat(feats)


def mnist_reference_statistics(
    model: MnistClassifier,
    data_dir: str | os.PathLike = "data/raw",
    split: str = "test",
    cache_dir: str | os.PathLike = "data/cache/fid_stats",
) -> FeatureStatistics:
    """Penultimate-feature statistics of real MNIST (torchvision layout), cached per classifier."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    key = StatsKey("mnist", split, 28, classifier_id(model))

    def features_fn() -> Tensor:
        from torchvision.datasets import MNIST

        data = MNIST(str(data_dir), train=split == "train", download=False)
        return classifier_logits_and_features(data.data, model)[1]

    return cached_statistics(key, features_fn, cache_dir)


def classifier_score_from_logits(logits: Tensor, splits: int = 1) -> float:
    """exp E_x[KL(p(y|x) ‖ p(y))] from (N, C) logits, averaged over ``splits`` chunks."""
    if splits < 1:
        raise ValueError(f"splits must be >= 1, got {splits}")
    if logits.ndim != 2 or logits.shape[0] < splits:
        raise ValueError(
            f"logits must have shape (N, C) with N >= splits={splits}, got {tuple(logits.shape)}"
        )
    return isc_features_to_metric(logits, splits=splits, shuffle=False)[KEY_METRIC_ISC_MEAN]


@dataclass
class ModeCoverage:
    """Predicted-class histogram (10,) summing to 1, the classes reaching ``min_share``, and the
    share of samples whose top class probability is at least ``confidence``."""

    histogram: Tensor
    covered: int
    coverage: float
    min_share: float
    confident_share: float = float("nan")
    confidence: float = CONFIDENCE


def mode_coverage_from_logits(
    logits: Tensor, min_share: float = 0.01, confidence: float = CONFIDENCE
) -> ModeCoverage:
    """Mode coverage from (N, C) classifier logits: argmax histogram, covered fraction, and the
    share of confidently classified samples."""
    if not 0.0 < min_share <= 1.0:
        raise ValueError(f"min_share must be in (0, 1], got {min_share}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if logits.ndim != 2 or logits.shape[0] < 1:
        raise ValueError(f"logits must have shape (N, C) with N >= 1, got {tuple(logits.shape)}")
    n_classes = logits.shape[1]
    counts = torch.bincount(logits.argmax(dim=1), minlength=n_classes).double()
    hist = counts / counts.sum()
    covered = int((hist >= min_share).sum())
    top = logits.double().softmax(dim=1).amax(dim=1)
    confident = float((top >= confidence).double().mean())
    return ModeCoverage(hist, covered, covered / n_classes, min_share, confident, confidence)
