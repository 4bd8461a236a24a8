"""Sample-quality metrics for one data set, shared by ``scorelab.evaluate`` and the training-time
:class:`~scorelab.lit.metrics_callback.SampleMetrics` callback.

A :class:`MetricSuite` is built once per data set: it loads the reference data (toy points drawn
from the data module, or cached feature statistics of the training images) and the feature
extractors (the MNIST classifier, torch-fidelity's Inception). Then

- :meth:`MetricSuite.features` maps samples ``x`` (points ``(N, D)`` or images ``(N, C, H, W)`` in
  ``[0, 1]``) to per-sample features, a dict of ``(N, ...)`` tensors. This is the part that may run
  on each rank of a DDP job on its own share;
- :meth:`MetricSuite.from_features` computes the statistics from (gathered) features.

Metric names, by data:

- points: ``sliced_w2``, ``mmd`` (unbiased RBF MMD²), ``mode_weight_error`` and ``exact_nll``
  (the last two for ``data=gmm``, whose density is known);
- MNIST: ``mnist_fid``, ``classifier_score``, ``mode_coverage``;
- CIFAR-10 / CelebA: ``fid``, ``is``, ``kid`` (torch-fidelity, Inception-v3 "2015-12-05").

Every prerequisite (classifier or Inception weights installed, enough samples, the right shape and
range) is checked by :meth:`MetricSuite.check` and :func:`check_samples` before sampling starts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

POINT_METRICS = ("sliced_w2", "mmd", "mode_weight_error", "exact_nll")
MNIST_METRICS = ("mnist_fid", "classifier_score", "mode_coverage")
INCEPTION_METRICS = ("fid", "is", "kid")
ALL_METRICS = (*POINT_METRICS, *MNIST_METRICS, *INCEPTION_METRICS)
INCEPTION_DATASETS = ("cifar10", "celeba")


class MetricConfigError(ValueError):
    """A metric that cannot run on this data or these samples; the message names the fix."""


@dataclass
class MetricValue:
    """One metric's result.

    Attributes:
        name: metric name (logged as ``val/<name>``).
        value: the number.
        std: spread over splits/subsets where the metric defines one (IS, KID).
        stderr: standard error of the mean where the value is a mean over samples.
        n_samples: samples the value was computed on.
        wall_time_s: seconds spent, including extracting the features it uses (shared features
            are counted for every metric that uses them).
        extra: further facts (reference size, noise floor, histogram, ...).
    """

    name: str
    value: float
    n_samples: int
    wall_time_s: float = 0.0
    std: float | None = None
    stderr: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "value": self.value,
            "n_samples": self.n_samples,
            "wall_time_s": self.wall_time_s,
            **self.extra,
        }
        if self.std is not None:
            out["std"] = self.std
        if self.stderr is not None:
            out["stderr"] = self.stderr
        return out


# ------------------------------------------------------------------------------ data description
@dataclass(frozen=True)
class DataInfo:
    """What the metrics need to know about a data config."""

    name: str  # gmm, two_moons, ..., mnist, cifar10, celeba
    shape: tuple[int, ...]  # (D,) or (C, H, W)
    scaling: str  # none | zero_one | minus_one_one

    @property
    def is_points(self) -> bool:
        return len(self.shape) == 1


def data_info(data_cfg: DictConfig | dict, datamodule: Any | None = None) -> DataInfo:
    """:class:`DataInfo` of a ``data`` config (a built data module gives the name of images)."""
    d = OmegaConf.create(data_cfg) if isinstance(data_cfg, dict) else data_cfg
    if d.get("image_size") is None:
        return DataInfo(str(d.get("name", "points")), (int(d.dim),), "none")
    if datamodule is not None:
        name = str(datamodule.name)
    else:
        name = str(d.get("_target_", "images")).rsplit(".", 1)[-1]
        name = name.replace("DataModule", "").lower()
    shape = (int(d.channels), int(d.image_size), int(d.image_size))
    return DataInfo(name, shape, str(d.get("scaling", "zero_one")))


def default_metrics(info: DataInfo) -> list[str]:
    if info.is_points:
        return list(POINT_METRICS) if info.name == "gmm" else ["sliced_w2", "mmd"]
    if info.name == "mnist":
        return list(MNIST_METRICS)
    return list(INCEPTION_METRICS)


def allowed_metrics(info: DataInfo) -> tuple[str, ...]:
    if info.is_points:
        return POINT_METRICS if info.name == "gmm" else ("sliced_w2", "mmd")
    if info.name == "mnist":
        return (*MNIST_METRICS, *INCEPTION_METRICS)
    return INCEPTION_METRICS


def check_samples(x: Tensor, info: DataInfo, what: str = "samples") -> None:
    """Refuse samples of the wrong shape, channels or range for ``info`` (images in [0, 1])."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise MetricConfigError(f"{what} must be a float tensor, got {getattr(x, 'dtype', x)}")
    if tuple(x.shape[1:]) != info.shape:
        want = ", ".join(str(s) for s in info.shape)
        raise MetricConfigError(
            f"{what} have shape {tuple(x.shape)}, but data {info.name} needs (N, {want}); "
            "pass the data=... the samples come from"
        )
    if x.shape[0] == 0:
        raise MetricConfigError(f"{what} are empty (N = 0)")
    if not torch.isfinite(x.float()).all():
        raise MetricConfigError(f"{what} contain non-finite values; the sampler diverged")
    if not info.is_points and x.is_floating_point():
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            fix = "map [-1, 1] samples with (x + 1) / 2" if lo >= -1.0 else "rescale to [0, 1]"
            raise MetricConfigError(
                f"image {what} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; {fix}"
            )


# ------------------------------------------------------------------------------ the suite
def _opt(options: DictConfig | dict | None, group: str, key: str, default: Any) -> Any:
    if not options:
        return default
    g = options.get(group)
    if g is None:
        return default
    v = g.get(key, default)
    return default if v is None else v


class MetricSuite:
    """The chosen metrics for one data set; see the module docstring.

    Args:
        info: the data description.
        names: metric names (``None``: :func:`default_metrics`).
        datamodule: the (unset-up) data module of the data config: toy references are drawn
            from it; image references are read from its files.
        options: per-metric settings (groups ``toy``, ``mnist``, ``fid``, ``is``, ``kid``, as
            in ``conf/evaluate.yaml``), plus ``cache_dir`` for reference statistics.
        device: where feature extractors run.
    """

    def __init__(
        self,
        info: DataInfo,
        names: list[str] | None,
        datamodule: Any,
        options: DictConfig | dict | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.info = info
        self.explicit = names is not None
        self.names = list(default_metrics(info) if names is None else names)
        self.skipped: dict[str, str] = {}  # default metrics left out, with the reason
        if not self.names:
            raise MetricConfigError("metrics is empty; give at least one metric or null")
        allowed = allowed_metrics(info)
        for n in self.names:
            if n not in allowed:
                raise MetricConfigError(
                    f"metric {n!r} does not apply to data {info.name} {info.shape}; allowed: "
                    f"{list(allowed)}"
                )
        self.dm = datamodule
        self.options = options or {}
        self.device = torch.device(device)
        self._prepared = False
        self.reference: Tensor | None = None
        self.mixture = getattr(datamodule, "distribution", None)
        self.classifier = None
        self.extractor = None

    # ----- prerequisites ---------------------------------------------------------------------
    def min_samples(self) -> int:
        """Smallest number of samples every chosen metric accepts."""
        need = 2
        if "is" in self.names:
            need = max(need, int(_opt(self.options, "is", "splits", 10)))
        if "kid" in self.names:
            need = max(need, int(_opt(self.options, "kid", "subset_size", 1000)))
        if "classifier_score" in self.names:
            need = max(need, int(_opt(self.options, "mnist", "splits", 1)))
        return need

    def check(self, n: int) -> None:
        """Before any sampling: enough samples, and the classifier / weights are installed."""
        need = self.min_samples()
        if n < need:
            hint = ""
            if "kid" in self.names and need == int(_opt(self.options, "kid", "subset_size", 1000)):
                hint = f" (kid.subset_size={need}: lower it or draw more)"
            raise MetricConfigError(
                f"n_samples={n} is fewer than the {need} that metrics {self.names} need{hint}; "
                f"use n_samples>={need}"
            )
        if any(m in MNIST_METRICS for m in self.names):
            from scorelab.metrics.mnist import DEFAULT_CLASSIFIER_PATH, TRAIN_COMMAND

            path = Path(_opt(self.options, "mnist", "classifier_path", DEFAULT_CLASSIFIER_PATH))
            if not path.is_file():
                raise MetricConfigError(
                    f"MNIST classifier weights not found at {path}; train them with: "
                    f"{TRAIN_COMMAND} --out {path}"
                )
        if any(m in INCEPTION_METRICS for m in self.names):
            from scorelab.metrics.inception import (
                FID_WEIGHTS_COMMAND,
                inception_weights_available,
                inception_weights_path,
            )

            if not inception_weights_available():
                raise MetricConfigError(
                    f"Inception weights for {[m for m in self.names if m in INCEPTION_METRICS]} "
                    f"not found at {inception_weights_path()}; install them with: "
                    f"{FID_WEIGHTS_COMMAND}"
                )
        if "is" in self.names:
            ext = self._inception()
            if not torch.isfinite(ext.fc.weight).all():
                why = (
                    "metric 'is' needs Inception's 1008-way classifier, which the offline "
                    "weights (make fid-weights) do not have"
                )
                if self.explicit:
                    raise MetricConfigError(f"{why}; drop it: metrics=[fid,kid]")
                self.names.remove("is")  # a default: leave it out and say why
                self.skipped["is"] = why

    def prepare(self) -> None:
        """Load the reference data and the extractors (once)."""
        if self._prepared:
            return
        names = set(self.names)
        if self.info.is_points:
            n_ref = int(_opt(self.options, "toy", "n_reference", 4000))
            seed = int(_opt(self.options, "toy", "seed", 1))
            g = torch.Generator().manual_seed(seed)
            self.reference = self.dm.sample(n_ref, generator=g).float().cpu()
            # A second draw of the same size measures the metric's floor at this sample size.
            self.reference2 = self.dm.sample(n_ref, generator=g).float().cpu()
        if names & set(MNIST_METRICS):
            from scorelab.metrics.mnist import (
                DEFAULT_CLASSIFIER_PATH,
                classifier_id,
                load_mnist_classifier,
                mnist_reference_statistics,
            )

            path = _opt(self.options, "mnist", "classifier_path", DEFAULT_CLASSIFIER_PATH)
            self.classifier = load_mnist_classifier(path, self.device)
            given = _opt(self.options, "mnist", "reference_stats", None)
            if "mnist_fid" in names and given is not None:
                self.mnist_stats = _given_statistics(given, classifier_id(self.classifier))
            elif "mnist_fid" in names:
                self.mnist_stats = mnist_reference_statistics(
                    self.classifier,
                    data_dir=self.dm.root,
                    split=str(_opt(self.options, "mnist", "reference_split", "train")),
                    cache_dir=_opt(self.options, "fid", "stats_dir", "data/cache/fid_stats"),
                )
        if names & set(INCEPTION_METRICS):
            self._inception()
            if "fid" in names:
                self.fid_stats = self._fid_reference()
            if "kid" in names:
                self.kid_reference = self._kid_reference()
        self._prepared = True

    def _inception(self):
        if self.extractor is None:
            from scorelab.metrics.fid import FEATURE_LAYER, LOGITS_LAYER
            from scorelab.metrics.inception import load_inception

            self.extractor = load_inception((FEATURE_LAYER, LOGITS_LAYER), self.device)
        return self.extractor

    def _reference_images(self, split: str, limit: int | None) -> Tensor:
        """uint8 (N, C, H, W) images of ``split`` at the data's resolution (first ``limit``)."""
        self.dm.check_files()
        src = self.dm.source(split)
        n = src.n if limit is None else min(int(limit), src.n)
        return src.images(torch.arange(n))

    def _fid_reference(self):
        from scorelab.metrics.fid import FEATURE_LAYER, StatsKey, reference_statistics
        from scorelab.metrics.inception import extractor_id

        given = _opt(self.options, "fid", "reference_stats", None)
        if given is not None:
            return _given_statistics(given, extractor_id(self.extractor, FEATURE_LAYER))
        split = str(_opt(self.options, "fid", "reference_split", "train"))
        limit = _opt(self.options, "fid", "reference_limit", None)
        tag = split if limit is None else f"{split}{int(limit)}"
        key = StatsKey(
            self.info.name, tag, self.info.shape[-1], extractor_id(self.extractor, FEATURE_LAYER)
        )
        return reference_statistics(
            key,
            lambda: self._reference_images(split, limit),
            _opt(self.options, "fid", "stats_dir", "data/cache/fid_stats"),
            extractor=self.extractor,
            batch_size=int(_opt(self.options, "fid", "batch_size", 64)),
        )

    def _kid_reference(self) -> Tensor:
        from scorelab.metrics.fid import FEATURE_LAYER
        from scorelab.metrics.inception import extract_features

        split = str(_opt(self.options, "kid", "reference_split", "train"))
        n = int(_opt(self.options, "kid", "reference_n", 2000))
        images = self._reference_images(split, n)
        bs = int(_opt(self.options, "fid", "batch_size", 64))
        return extract_features(images, self.extractor, batch_size=bs)[FEATURE_LAYER]

    # ----- features and statistics -----------------------------------------------------------
    def features(self, x: Tensor) -> dict[str, Tensor]:
        """Per-sample features of ``x`` for the chosen metrics: ``{name: (N, ...)}`` on the CPU.

        ``x``: points (N, D), or images (N, C, H, W) in [0, 1]. The key ``_seconds`` holds the
        time it took, per kind (a (k,) tensor), so it is gathered like the rest.
        """
        self.prepare()
        check_samples(x, self.info)
        names = set(self.names)
        out: dict[str, Tensor] = {}
        if self.info.is_points:
            out["points"] = x.detach().float().cpu()
        if names & set(MNIST_METRICS):
            from scorelab.metrics.mnist import classifier_logits_and_features

            t0 = time.time()
            imgs = x.detach().float()
            if tuple(imgs.shape[-2:]) != (28, 28):  # mnist32: back to the classifier's size
                imgs = torch.nn.functional.interpolate(
                    imgs, size=(28, 28), mode="bilinear", antialias=True
                ).clamp(0, 1)
            logits, feats = classifier_logits_and_features(imgs, self.classifier, min_n=1)
            out["mnist_logits"], out["mnist_features"] = logits, feats
            out["mnist_seconds"] = torch.tensor([time.time() - t0])
        if names & set(INCEPTION_METRICS):
            from scorelab.metrics.fid import FEATURE_LAYER, LOGITS_LAYER
            from scorelab.metrics.inception import check_images, extract_features

            t0 = time.time()
            imgs = check_images(x.detach().cpu(), min_n=1)
            bs = int(_opt(self.options, "fid", "batch_size", 64))
            f = extract_features(imgs, self.extractor, batch_size=bs, min_n=1)
            out["inception_pool3"] = f[FEATURE_LAYER]
            out["inception_logits"] = f[LOGITS_LAYER]
            out["inception_seconds"] = torch.tensor([time.time() - t0])
        return out

    def from_features(self, feats: dict[str, Tensor]) -> list[MetricValue]:
        """The chosen metrics from features of all samples (gathered from every rank)."""
        self.prepare()
        results = []
        for name in self.names:
            t0 = time.time()
            mv = getattr(self, f"_m_{name}")(feats)
            kind = "mnist" if name in MNIST_METRICS else "inception"
            shared = feats.get(f"{kind}_seconds")
            mv.wall_time_s = time.time() - t0 + (float(shared.sum()) if shared is not None else 0)
            results.append(mv)
        return results

    def compute(self, x: Tensor) -> list[MetricValue]:
        return self.from_features(self.features(x))

    # ----- points ------------------------------------------------------------------------------
    def _sw_generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(int(_opt(self.options, "toy", "seed", 1)) + 17)

    def _m_sliced_w2(self, f: dict[str, Tensor]) -> MetricValue:
        from scorelab.metrics.toy import sliced_wasserstein

        x, ref = f["points"], self.reference
        k = int(_opt(self.options, "toy", "n_projections", 256))
        v = sliced_wasserstein(x, ref, n_projections=k, generator=self._sw_generator())
        # Noise floor: the same distance between two true samples of the sizes used here.
        floor = sliced_wasserstein(
            self.reference2[: len(x)], ref, n_projections=k, generator=self._sw_generator()
        )
        return MetricValue(
            "sliced_w2",
            float(v),
            len(x),
            extra={"n_reference": len(ref), "n_projections": k, "true_sample_floor": float(floor)},
        )

    def _m_mmd(self, f: dict[str, Tensor]) -> MetricValue:
        from scorelab.metrics.toy import mmd_rbf

        x, ref = f["points"], self.reference
        n_max = int(_opt(self.options, "toy", "mmd_max_n", 2000))  # O(N²) memory
        v = mmd_rbf(x[:n_max].double(), ref[:n_max].double())
        return MetricValue(
            "mmd",
            float(v),
            min(len(x), n_max),
            extra={
                "n_reference": min(len(ref), n_max),
                "kernel": "rbf, median heuristic x(0.5,1,2)",
            },
        )

    def _m_mode_weight_error(self, f: dict[str, Tensor]) -> MetricValue:
        from scorelab.metrics.toy import mode_weights

        x, mix = f["points"], self.mixture
        w = mode_weights(x.double(), mix.means.double())
        err = (w - mix.weights.double()).abs().max()
        return MetricValue(
            "mode_weight_error",
            float(err),
            len(x),
            extra={"mode_weights": w.tolist(), "true_weights": mix.weights.tolist()},
        )

    def _m_exact_nll(self, f: dict[str, Tensor]) -> MetricValue:
        x, mix = f["points"].double(), self.mixture
        nll = -mix.log_prob(x)
        ref = -mix.log_prob(self.reference.double())
        return MetricValue(
            "exact_nll",
            float(nll.mean()),
            len(x),
            stderr=float(nll.std() / math.sqrt(len(x))) if len(x) > 1 else None,
            extra={"unit": "nats per sample", "true_sample_value": float(ref.mean())},
        )

    # ----- MNIST -------------------------------------------------------------------------------
    def _m_mnist_fid(self, f: dict[str, Tensor]) -> MetricValue:
        from scorelab.metrics.fid import feature_statistics, frechet_distance

        feats = f["mnist_features"]
        stats = feature_statistics(feats, extractor=self.mnist_stats.extractor)
        return MetricValue(
            "mnist_fid",
            float(frechet_distance(stats, self.mnist_stats)),
            len(feats),
            extra={"reference": self.mnist_stats.key, "n_reference": self.mnist_stats.n},
        )

    def _m_classifier_score(self, f: dict[str, Tensor]) -> MetricValue:
        from scorelab.metrics.mnist import classifier_score_from_logits

        logits = f["mnist_logits"]
        splits = int(_opt(self.options, "mnist", "splits", 1))
        return MetricValue(
            "classifier_score",
            float(classifier_score_from_logits(logits, splits)),
            len(logits),
            extra={"splits": splits},
        )

    def _m_mode_coverage(self, f: dict[str, Tensor]) -> MetricValue:
        from scorelab.metrics.mnist import mode_coverage_from_logits

        logits = f["mnist_logits"]
        cov = mode_coverage_from_logits(
            logits,
            float(_opt(self.options, "mnist", "min_share", 0.01)),
            float(_opt(self.options, "mnist", "confidence", 0.9)),
        )
        return MetricValue(
            "mode_coverage",
            cov.coverage,
            len(logits),
            extra={
                "covered": cov.covered,
                "min_share": cov.min_share,
                "confident_share": round(cov.confident_share, 6),
                "confidence": cov.confidence,
                "histogram": [round(float(h), 6) for h in cov.histogram],
            },
        )

    # ----- Inception ---------------------------------------------------------------------------
    def _m_fid(self, f: dict[str, Tensor]) -> MetricValue:
        from scorelab.metrics.fid import feature_statistics, frechet_distance

        feats = f["inception_pool3"]
        stats = feature_statistics(feats, extractor=self.fid_stats.extractor)
        return MetricValue(
            "fid",
            float(frechet_distance(stats, self.fid_stats)),
            len(feats),
            extra={"reference": self.fid_stats.key, "n_reference": self.fid_stats.n},
        )

    def _m_is(self, f: dict[str, Tensor]) -> MetricValue:
        from torch_fidelity.metric_isc import (
            KEY_METRIC_ISC_MEAN,
            KEY_METRIC_ISC_STD,
            isc_features_to_metric,
        )

        logits = f["inception_logits"]
        splits = int(_opt(self.options, "is", "splits", 10))
        out = isc_features_to_metric(logits, splits=splits)
        return MetricValue(
            "is",
            float(out[KEY_METRIC_ISC_MEAN]),
            len(logits),
            std=float(out[KEY_METRIC_ISC_STD]),
            extra={"splits": splits},
        )

    def _m_kid(self, f: dict[str, Tensor]) -> MetricValue:
        from torch_fidelity.metric_kid import (
            KEY_METRIC_KID_MEAN,
            KEY_METRIC_KID_STD,
            kid_features_to_metric,
        )

        feats = f["inception_pool3"]
        subsets = int(_opt(self.options, "kid", "subsets", 100))
        size = int(_opt(self.options, "kid", "subset_size", 1000))
        out = kid_features_to_metric(
            feats,
            self.kid_reference,
            kid_subsets=subsets,
            kid_subset_size=size,
            kid_kernel="poly",
            kid_kernel_poly_degree=3,
            kid_kernel_poly_gamma=None,
            kid_kernel_poly_coef0=1,
            rng_seed=2020,
            verbose=False,
        )
        return MetricValue(
            "kid",
            float(out[KEY_METRIC_KID_MEAN]),
            len(feats),
            std=float(out[KEY_METRIC_KID_STD]),
            extra={"subsets": subsets, "subset_size": size, "n_reference": len(self.kid_reference)},
        )


def _given_statistics(path: str | Path, space: str):
    """A statistics file named by the user, refused unless it is from feature space ``space``."""
    from scorelab.metrics.fid import load_statistics

    if not Path(path).is_file():
        raise MetricConfigError(f"reference statistics file {path} does not exist")
    try:
        return load_statistics(path, extractor=space)
    except ValueError as err:
        raise MetricConfigError(str(err).replace("\n", " ")) from None


def build_metric_suite(
    data_cfg: DictConfig | dict,
    names: list[str] | None,
    options: DictConfig | dict | None = None,
    device: str | torch.device = "cpu",
    build_datamodule: Callable | None = None,
) -> MetricSuite:
    """A :class:`MetricSuite` for a ``data`` config (the data module is built, not set up)."""
    d = OmegaConf.create(data_cfg) if isinstance(data_cfg, dict) else data_cfg
    if build_datamodule is None:
        from scorelab.lit.build import build_datamodule as _build

        build_datamodule = _build
    dm = build_datamodule(OmegaConf.create({"data": d}))
    info = data_info(d, dm)
    if names is not None:
        names = [str(n) for n in names]
    return MetricSuite(info, names, dm, options, device)
