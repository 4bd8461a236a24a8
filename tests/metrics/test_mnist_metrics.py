"""MNIST domain metrics: shapes, exact histograms and the trained classifier's accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scorelab.metrics.fid import feature_statistics, frechet_distance
from scorelab.metrics.mnist import (
    DEFAULT_CLASSIFIER_PATH,
    MnistClassifier,
    check_mnist_images,
    classifier_id,
    classifier_logits_and_features,
    classifier_score_from_logits,
    load_mnist_classifier,
    mnist_reference_statistics,
    mode_coverage_from_logits,
)
from scorelab.metrics.mnist_classifier import evaluate_accuracy, load_mnist_split, train_step

# Real MNIST from `make data`, found from the repository root whatever the working directory.
DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "raw"


def _model(seed: int = 0) -> MnistClassifier:
    torch.manual_seed(seed)
    return MnistClassifier().eval()


def _digits(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def _stats(images, model):
    return feature_statistics(classifier_logits_and_features(images, model)[1])


def _logits(images, model):
    return classifier_logits_and_features(images, model)[0]


def test_classifier_shapes():
    model = _model()
    x = _digits(5)
    assert model(x).shape == (5, 10)
    assert model.features(x).shape == (5, MnistClassifier.feature_dim)
    logits, feats = classifier_logits_and_features((x * 255).to(torch.uint8)[:, 0], model)
    assert logits.shape == (5, 10) and feats.shape == (5, 128)


def test_train_steps_fit_a_small_batch():
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = _digits(32), torch.arange(32) % 10
    first = train_step(model, opt, x, y)
    for _ in range(30):
        last = train_step(model, opt, x, y)
    assert last < 0.5 * first
    assert evaluate_accuracy(model, (x[:, 0] * 255).round().to(torch.uint8), y) > 0.8


def test_state_dict_round_trips_with_weights_only(tmp_path):
    model = _model(1)
    path = tmp_path / "clf.pt"
    torch.save(model.state_dict(), path)
    loaded = load_mnist_classifier(path)
    x = _digits(3)
    torch.testing.assert_close(loaded(x), model(x))
    assert classifier_id(loaded) == classifier_id(model) != classifier_id(_model(2))
    with pytest.raises(FileNotFoundError, match="python -m scorelab.metrics.mnist_classifier"):
        load_mnist_classifier(tmp_path / "missing.pt")


def test_mode_coverage_on_constructed_logits_is_exact():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 19 + [3])
    logits = torch.nn.functional.one_hot(labels, 10).float()
    cov = mode_coverage_from_logits(logits, min_share=0.05)
    expected = torch.zeros(10, dtype=torch.float64)
    expected[:4] = torch.tensor([0.5, 0.3, 0.19, 0.01], dtype=torch.float64)
    torch.testing.assert_close(cov.histogram, expected)
    assert cov.covered == 3 and cov.coverage == pytest.approx(0.3)
    assert mode_coverage_from_logits(logits, min_share=0.01).covered == 4


def test_classifier_score_bounds():
    # Confident, balanced predictions give the number of classes; one repeated class gives 1.
    confident = 100 * torch.eye(10).repeat(3, 1)
    assert classifier_score_from_logits(confident) == pytest.approx(10.0, rel=1e-6)
    assert classifier_score_from_logits(confident[:1].repeat(30, 1)) == pytest.approx(1.0)
    assert classifier_score_from_logits(torch.zeros(30, 10)) == pytest.approx(1.0)
    assert 1.0 <= classifier_score_from_logits(_logits(_digits(20), _model())) < 10.0


def test_mnist_fid_is_zero_on_itself():
    model = _model()
    x = _stats(_digits(64), model)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x, _stats(_digits(64, 1) * 0.5, model)) > 0


def test_bad_mnist_images_raise():
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        check_mnist_images(_digits(4) * 2 - 1)
    with pytest.raises(ValueError, match="28×28"):
        check_mnist_images(torch.rand(4, 3, 32, 32))
    with pytest.raises(ValueError, match="at least 2"):
        check_mnist_images(_digits(1))


def _require_mnist() -> None:
    if not (DATA_DIR / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file():
        pytest.skip(
            "MNIST not prepared under data/raw: run `python -m scorelab.data.prepare mnist`"
        )


@pytest.mark.slow
def test_trained_classifier_reaches_99_percent_on_the_test_split(tmp_path):
    _require_mnist()
    if DEFAULT_CLASSIFIER_PATH.is_file():
        model = load_mnist_classifier(DEFAULT_CLASSIFIER_PATH)
    else:
        from scorelab.metrics.mnist_classifier import train_classifier

        model = train_classifier(*load_mnist_split(DATA_DIR, train=True), log_every=0)
    test_x, test_y = load_mnist_split(DATA_DIR, train=False)
    assert evaluate_accuracy(model, test_x, test_y) >= 0.99
    # Real digits: near-uniform classes, high classifier score, small train-vs-test FID.
    cov = mode_coverage_from_logits(_logits(test_x, model))
    assert cov.coverage == 1.0 and float(cov.histogram.max()) < 0.13
    assert classifier_score_from_logits(_logits(test_x, model)) > 9.0
    ref = mnist_reference_statistics(model, DATA_DIR, "train", cache_dir=tmp_path)
    real = frechet_distance(_stats(test_x, model), ref)
    shifted = frechet_distance(_stats(torch.roll(test_x, shifts=4, dims=2), model), ref)
    assert 0.0 <= real < shifted
