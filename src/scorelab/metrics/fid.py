"""FID, Inception Score, KID and precision/recall on image tensors or folders.

The metrics themselves are torch-fidelity's (``fid_features_to_statistics``,
``fid_statistics_to_metric``, ``isc_features_to_metric``, ``kid_features_to_metric``,
``prc_features_to_metric``); this module adds input checks, the offline Inception and a cache of
reference statistics. A statistics file stores the key it was made for — data set, split,
resolution, feature extractor and layer — so a stale cache is recomputed and a file from another
feature space is refused.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_fid import (
    KEY_METRIC_FID,
    fid_features_to_statistics,
    fid_statistics_to_metric,
)
from torch_fidelity.metric_isc import (
    KEY_METRIC_ISC_MEAN,
    KEY_METRIC_ISC_STD,
    isc_features_to_metric,
)
from torch_fidelity.metric_kid import (
    KEY_METRIC_KID_MEAN,
    KEY_METRIC_KID_STD,
    kid_features_to_metric,
)
from torch_fidelity.metric_prc import (
    KEY_METRIC_F_SCORE,
    KEY_METRIC_PRECISION,
    KEY_METRIC_RECALL,
    prc_features_to_metric,
)

from scorelab.io import save_npz_atomic
from scorelab.metrics.inception import (
    ImageInput,
    extract_features,
    extractor_id,
    load_inception,
)

__all__ = [
    "FEATURE_LAYER",
    "LOGITS_LAYER",
    "FeatureStatistics",
    "cached_statistics",
    "StatsKey",
    "compute_fid",
    "compute_is",
    "compute_kid",
    "compute_precision_recall",
    "kid_from_features",
    "feature_statistics",
    "frechet_distance",
    "load_statistics",
    "reference_statistics",
    "save_statistics",
]

log = logging.getLogger(__name__)

FEATURE_LAYER = "2048"  # pool3, used by FID, KID and precision/recall
LOGITS_LAYER = "logits_unbiased"  # used by the Inception Score
STATS_FORMAT = 1


@dataclass(frozen=True)
class StatsKey:
    """What a set of reference statistics was computed from.

    ``extractor`` names the feature space (``<extractor>:<layer>``, see
    :func:`scorelab.metrics.inception.extractor_id`).
    """

    dataset: str
    split: str
    resolution: int
    extractor: str

    def __str__(self) -> str:
        return (
            f"format={STATS_FORMAT};dataset={self.dataset};split={self.split};"
            f"resolution={self.resolution};extractor={self.extractor}"
        )

    @property
    def filename(self) -> str:
        safe = self.extractor.replace(":", "-").replace("/", "-")
        return f"{self.dataset}-{self.split}-{self.resolution}px-{safe}.npz"


@dataclass
class FeatureStatistics:
    """Mean (F,) and covariance (F, F) of features, and the key they were made for."""

    mu: np.ndarray
    sigma: np.ndarray
    key: str
    extractor: str
    n: int


def _extractor(extractor: FeatureExtractorBase | None, layer: str) -> FeatureExtractorBase:
    if extractor is None:
        return load_inception(features=(layer,))
    if layer not in extractor.features_list:
        raise ValueError(
            f"extractor {extractor.get_name()!r} returns features {list(extractor.features_list)}, "
            f"not the {layer!r} layer this metric needs; build it with that layer"
        )
    return extractor


def _features(
    images: ImageInput | Tensor,
    extractor: FeatureExtractorBase,
    layer: str,
    batch_size: int,
    min_n: int,
) -> Tensor:
    return extract_features(images, extractor, batch_size=batch_size, min_n=min_n)[layer]


def _pool3_pair(images, reference, extractor, batch_size: int, min_n: int) -> list[Tensor]:
    """pool3 features of ``images`` and of ``reference``, each of at least ``min_n`` images."""
    ext = _extractor(extractor, FEATURE_LAYER)
    return [_features(x, ext, FEATURE_LAYER, batch_size, min_n) for x in (images, reference)]


def feature_statistics(features: Tensor, key: str = "", extractor: str = "") -> FeatureStatistics:
    """Mean and covariance of (N, F) features, N >= 2 (torch-fidelity's estimator, float64)."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(
            f"features must have shape (N, F) with N >= 2, got {tuple(features.shape)}"
        )
    stats = fid_features_to_statistics(features.detach().cpu().double())
    return FeatureStatistics(stats["mu"], stats["sigma"], key, extractor, features.shape[0])


def frechet_distance(a: FeatureStatistics, b: FeatureStatistics) -> float:
    """‖μ_a - μ_b‖² + tr(Σ_a + Σ_b - 2 (Σ_a Σ_b)^{1/2}), via torch-fidelity's helper."""
    if a.mu.shape != b.mu.shape:
        raise ValueError(
            f"statistics have different feature dims: {a.mu.shape[0]} vs {b.mu.shape[0]}"
        )
    if a.extractor and b.extractor and a.extractor != b.extractor:
        raise ValueError(
            f"statistics come from different feature spaces: {a.extractor!r} vs {b.extractor!r}"
        )
    sa = {"mu": a.mu.astype(np.float64), "sigma": a.sigma.astype(np.float64)}
    sb = {"mu": b.mu.astype(np.float64), "sigma": b.sigma.astype(np.float64)}
    return fid_statistics_to_metric(sa, sb, verbose=False)[KEY_METRIC_FID]


def save_statistics(path: str | os.PathLike, stats: FeatureStatistics) -> Path:
    """Write statistics and their key to an ``.npz`` file (atomically)."""
    return save_npz_atomic(
        path,
        mu=stats.mu,
        sigma=stats.sigma,
        key=np.array(stats.key),
        extractor=np.array(stats.extractor),
        n=np.array(stats.n),
    )


def load_statistics(path: str | os.PathLike, extractor: str | None = None) -> FeatureStatistics:
    """Read statistics written by :func:`save_statistics`.

    Args:
        path: the ``.npz`` file.
        extractor: the feature space the caller will compare in; a file from another one raises.

    Raises:
        ValueError: the file is not a statistics file of this format, or comes from a different
            feature extractor.
    """
    with np.load(path, allow_pickle=False) as data:
        missing = {"mu", "sigma", "key", "extractor"} - set(data.files)
        if missing:
            raise ValueError(
                f"{path} is not a statistics file written by scorelab (missing {sorted(missing)}); "
                "recompute it with scorelab.metrics.fid.reference_statistics"
            )
        stats = FeatureStatistics(
            mu=data["mu"],
            sigma=data["sigma"],
            key=str(data["key"]),
            extractor=str(data["extractor"]),
            n=int(data["n"]) if "n" in data.files else 0,
        )
    if extractor is not None and stats.extractor != extractor:
        raise ValueError(
            f"statistics file {path} was computed with feature extractor {stats.extractor!r}, "
            f"but this comparison uses {extractor!r}; FID across feature spaces is meaningless. "
            "Delete the file or recompute it with the current extractor"
        )
    return stats


def cached_statistics(
    key: StatsKey,
    features_fn: Callable[[], Tensor],
    cache_dir: str | os.PathLike,
) -> FeatureStatistics:
    """Statistics for ``key``, computed once and cached as ``<cache_dir>/<key.filename>``.

    A cached file whose stored key differs from ``key`` (another format version, extractor or
    source) is recomputed and overwritten.

    Args:
        key: data set, split, resolution and feature space.
        features_fn: called only on a cache miss; returns the (N, F) reference features.
        cache_dir: folder for the ``.npz`` files.
    """
    path = Path(cache_dir) / key.filename
    if path.is_file():
        cached = load_statistics(path)
        if cached.key == str(key):
            return cached
        log.info("statistics %s have key %r, expected %r: recomputing", path, cached.key, str(key))
    stats = feature_statistics(features_fn(), key=str(key), extractor=key.extractor)
    save_statistics(path, stats)
    return stats


def reference_statistics(
    key: StatsKey,
    images_fn: Callable[[], ImageInput],
    cache_dir: str | os.PathLike,
    extractor: FeatureExtractorBase | None = None,
    batch_size: int = 64,
    layer: str = FEATURE_LAYER,
) -> FeatureStatistics:
    """Reference image statistics for ``key``, cached by :func:`cached_statistics`.

    Args:
        key: data set, split, resolution and feature space; ``key.extractor`` must equal
            ``extractor_id(extractor, layer)``.
        images_fn: called only on a cache miss; returns the reference images (tensor or folder).
        cache_dir: folder for the ``.npz`` files.
        extractor: feature extractor; default torch-fidelity's Inception.
        batch_size: images per forward pass.
        layer: feature layer; default pool3 ('2048').
    """

    def features_fn() -> Tensor:
        ext = _extractor(extractor, layer)
        if key.extractor != extractor_id(ext, layer):
            raise ValueError(
                f"key.extractor is {key.extractor!r} but the extractor passed is "
                f"{extractor_id(ext, layer)!r}; build the key with extractor_id(extractor, "
                f"{layer!r})"
            )
        return _features(images_fn(), ext, layer, batch_size, min_n=2)

    return cached_statistics(key, features_fn, cache_dir)


def compute_fid(
    images: ImageInput,
    reference: ImageInput | FeatureStatistics,
    extractor: FeatureExtractorBase | None = None,
    batch_size: int = 64,
) -> float:
    """Fréchet Inception Distance between images and a reference.

    Args:
        images: (N, 3, H, W) uint8 or [0, 1] float images (1 channel is repeated), or a folder.
        reference: images in the same forms, a :class:`FeatureStatistics` or a path to a ``.npz``
            statistics file (a path ending in ``.npz``).
        extractor: feature extractor; default torch-fidelity's Inception ('2048' layer).
        batch_size: images per forward pass.
    """
    ext = _extractor(extractor, FEATURE_LAYER)
    space = extractor_id(ext, FEATURE_LAYER)
    if isinstance(reference, FeatureStatistics):
        ref = reference
        if ref.extractor and ref.extractor != space:
            raise ValueError(
                f"reference statistics come from {ref.extractor!r}, images use {space!r}; "
                "recompute the reference with the same extractor"
            )
    elif not isinstance(reference, Tensor) and str(reference).endswith(".npz"):
        ref = load_statistics(reference, extractor=space)
    else:
        ref_feats = _features(reference, ext, FEATURE_LAYER, batch_size, min_n=2)
        ref = feature_statistics(ref_feats, extractor=space)
    feats = _features(images, ext, FEATURE_LAYER, batch_size, min_n=2)
    return frechet_distance(feature_statistics(feats, extractor=space), ref)


def compute_is(
    images: ImageInput,
    extractor: FeatureExtractorBase | None = None,
    splits: int = 10,
    batch_size: int = 64,
) -> tuple[float, float]:
    """Inception Score exp E_x[KL(p(y|x) ‖ p(y))], mean and std over ``splits`` splits.

    Raises:
        ValueError: fewer images than splits, or the extractor's logits are not finite (the
            offline Inception weights have no classifier layer; see ``docs/fid_weights.md``).
    """
    if splits < 1:
        raise ValueError(f"splits must be >= 1, got {splits}")
    ext = _extractor(extractor, LOGITS_LAYER)
    logits = _features(images, ext, LOGITS_LAYER, batch_size, min_n=max(2, splits))
    if not torch.isfinite(logits).all():
        raise ValueError(
            "Inception Score unavailable: the extractor's logits are not finite. The offline "
            "Inception weights (make fid-weights) carry pool3 features only, no 1008-way "
            "classifier; see docs/fid_weights.md"
        )
    out = isc_features_to_metric(logits, splits=splits)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]


def compute_kid(
    images: ImageInput,
    reference: ImageInput,
    extractor: FeatureExtractorBase | None = None,
    subsets: int = 100,
    subset_size: int = 1000,
    batch_size: int = 64,
    seed: int = 2020,
) -> tuple[float, float]:
    """Kernel Inception Distance (unbiased MMD², cubic kernel), mean and std over subsets.

    Raises:
        ValueError: either set has fewer than ``subset_size`` images.
    """
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"need subsets >= 1 and subset_size >= 2, got {subsets}, {subset_size}")
    try:
        fa, fb = _pool3_pair(images, reference, extractor, batch_size, subset_size)
    except ValueError as err:
        raise ValueError(f"{err} (KID subset_size={subset_size}: lower it or pass more)") from err
    return kid_from_features(fa, fb, subsets, subset_size, seed)


def kid_from_features(
    features: Tensor, reference: Tensor, subsets: int, subset_size: int, seed: int = 2020
) -> tuple[float, float]:
    """KID of (N, F) features: unbiased MMD², kernel (x·y / F + 1)³, mean and std over subsets.
    torch-fidelity's, not torchmetrics': it takes the features we extract (torchmetrics' KID runs
    its extractor on images) and draws the subsets from ``seed``, not the global RNG."""
    out = kid_features_to_metric(
        features,
        reference,
        kid_subsets=subsets,
        kid_subset_size=subset_size,
        kid_kernel="poly",
        kid_kernel_poly_degree=3,
        kid_kernel_poly_gamma=None,
        kid_kernel_poly_coef0=1,
        rng_seed=seed,
        verbose=False,
    )
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])


def compute_precision_recall(
    images: ImageInput,
    reference: ImageInput,
    extractor: FeatureExtractorBase | None = None,
    neighborhood: int = 3,
    batch_size: int = 64,
) -> dict[str, float]:
    """Improved precision/recall (Kynkäänniemi et al. 2019) in the pool3 feature space.

    Returns:
        ``{"precision", "recall", "f_score"}``.
    """
    if neighborhood < 1:
        raise ValueError(f"neighborhood must be >= 1, got {neighborhood}")
    fa, fb = _pool3_pair(images, reference, extractor, batch_size, neighborhood + 1)
    out = prc_features_to_metric(
        fa,
        fb,
        prc_neighborhood=neighborhood,
        prc_batch_size=10000,
        save_cpu_ram=True,
        verbose=False,
    )
    return {
        "precision": out[KEY_METRIC_PRECISION],
        "recall": out[KEY_METRIC_RECALL],
        "f_score": out[KEY_METRIC_F_SCORE],
    }
