"""The MNIST classifier that ships with the package: it loads with no extra step, its recorded
test accuracy is what it scores on the real test digits, and the confident share is computed
from the softmax as documented."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from scorelab.metrics.mnist import (
    DEFAULT_CLASSIFIER_PATH,
    load_mnist_classifier,
    mode_coverage_from_logits,
)

REPO = Path(__file__).resolve().parents[2]
MNIST_RAW = REPO / "data" / "raw"


def test_weights_ship_with_the_package():
    assert DEFAULT_CLASSIFIER_PATH.is_file()
    assert DEFAULT_CLASSIFIER_PATH.parent.name == "weights"
    meta = json.loads(DEFAULT_CLASSIFIER_PATH.with_suffix(".json").read_text())
    assert meta["test_accuracy"] >= 0.99
    model = load_mnist_classifier()  # the default path: no argument, no training step
    assert sum(p.numel() for p in model.parameters()) < 300_000


@pytest.mark.skipif(
    not (MNIST_RAW / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file(),
    reason="needs real MNIST in data/raw (make data)",
)
def test_recorded_accuracy_is_what_the_weights_score():
    from scorelab.metrics.mnist_classifier import evaluate_accuracy, load_mnist_split

    x, y = load_mnist_split(MNIST_RAW, train=False)
    acc = evaluate_accuracy(load_mnist_classifier(), x, y)
    meta = json.loads(DEFAULT_CLASSIFIER_PATH.with_suffix(".json").read_text())
    assert acc == pytest.approx(meta["test_accuracy"], abs=1e-4)


def test_confident_share_counts_top_probabilities_at_or_above_the_threshold():
    # Two classes; top probabilities 0.5, 0.8, 0.95 and 0.99 (logit gaps log(p / (1 - p))).
    tops = [0.5, 0.8, 0.95, 0.99]
    logits = torch.tensor([[math.log(p / (1 - p)), 0.0] for p in tops], dtype=torch.float64)
    assert mode_coverage_from_logits(logits).confident_share == pytest.approx(0.5)
    assert mode_coverage_from_logits(logits, confidence=0.7).confident_share == pytest.approx(0.75)
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 1.0"):
        mode_coverage_from_logits(logits, confidence=1.0)
