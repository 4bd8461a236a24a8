"""The metric suite: the chosen sample-quality metrics of one data set, shared by
``scorelab.evaluate`` and the training-time callback (:mod:`scorelab.lit.metrics_callback`).

A :class:`MetricSuite` is built once per data set: it loads the reference data (toy points drawn
from the data module, or cached feature statistics of the training images) and the feature
extractors (the MNIST classifier, torch-fidelity's Inception). Then

- :meth:`MetricSuite.features` maps samples ``x`` (points ``(N, D)`` or images ``(N, C, H, W)`` in
  ``[0, 1]``) to per-sample features, a dict of ``(N, ...)`` tensors. This is the part that may run
  on each rank of a DDP job on its own share;
- :meth:`MetricSuite.from_features` computes the statistics from (gathered) features.

:data:`METRICS` names every metric, with the features it is computed from:

- points: ``sliced_w2``, ``mmd`` (unbiased RBF MMD²), ``mode_weight_error`` and ``exact_nll``
  (the last two for ``data=gmm``, whose density is known);
- MNIST: ``mnist_fid``, ``classifier_score``, ``mode_coverage``;
- CIFAR-10 / CelebA: ``fid``, ``is``, ``kid`` (torch-fidelity, Inception-v3 "2015-12-05").

Options (groups ``toy``, ``mnist``, ``fid``, ``is``, ``kid``) are laid over
``conf/metric_options/default.yaml``, the one place their defaults are written. Every
prerequisite (known metric names and options, classifier or Inception weights installed, enough
samples, the right shape and range) is checked by :class:`MetricSuite`, :meth:`MetricSuite.check`
and :func:`check_samples` before sampling starts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError
from torch import Tensor
from torch_fidelity.metric_isc import (
    KEY_METRIC_ISC_MEAN,
    KEY_METRIC_ISC_STD,
    isc_features_to_metric,
)

from scorelab.data import DATA_META_KEYS
from scorelab.metrics import fid, inception, mnist, toy

OPTIONS_FILE = Path(__file__).resolve().parents[3] / "conf" / "metric_options" / "default.yaml"


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
        out = {k: getattr(self, k) for k in ("name", "value", "n_samples", "wall_time_s")}
        spread = {k: getattr(self, k) for k in ("std", "stderr") if getattr(self, k) is not None}
        return {**out, **self.extra, **spread}


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


def data_info(data_cfg: DictConfig | dict, datamodule: Any) -> DataInfo:
    """:class:`DataInfo` of a ``data`` config and its built data module (which names images)."""
    d = OmegaConf.create(data_cfg) if isinstance(data_cfg, dict) else data_cfg
    if d.get("image_size") is None:
        return DataInfo(str(d.get("name", "points")), (int(d.dim),), "none")
    shape = (int(d.channels), int(d.image_size), int(d.image_size))
    return DataInfo(str(datamodule.name), shape, str(d.get("scaling", "zero_one")))


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
    if not info.is_points:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            fix = "map [-1, 1] samples with (x + 1) / 2" if lo >= -1.0 else "rescale to [0, 1]"
            raise MetricConfigError(
                f"image {what} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; {fix}"
            )


# ------------------------------------------------------------------------------ options
def metric_options(options: DictConfig | dict | None = None) -> DictConfig:
    """``options`` laid over ``conf/metric_options/default.yaml``; an unknown key is refused."""
    base = OmegaConf.load(OPTIONS_FILE)
    OmegaConf.set_struct(base, True)
    try:
        return OmegaConf.merge(base, {k: v for k, v in dict(options or {}).items() if v})
    except ConfigKeyError as err:
        group = str(err.full_key).split(".")[0]
        where, known = (group, list(base[group])) if group in base else ("groups", list(base))
        msg = f"unknown metric option {err.full_key}; known {where}: {known}"
        raise MetricConfigError(msg) from None


# ------------------------------------------------------------------------------ the metrics
# Each metric is computed by a function of the suite (its references, options) and the features.
MetricFn = Callable[["MetricSuite", dict[str, Tensor]], MetricValue]


@dataclass(frozen=True)
class Metric:
    compute: MetricFn  # (suite, features) -> MetricValue
    features: str  # points | mnist (classifier logits and features) | inception
    prepare: Callable[[MetricSuite], None] | None = None  # loads its own reference into the suite
    min_samples: str | None = None  # the option (group.key) that sets the fewest samples


def _sliced_w2(suite: MetricSuite, f: dict[str, Tensor]) -> MetricValue:
    x, ref = f["points"], suite.reference
    k = int(suite.option("toy", "n_projections"))
    v = toy.sliced_wasserstein(x, ref, n_projections=k, generator=suite._sw_generator())
    # Noise floor: the same distance between two true samples of the sizes used here.
    floor = toy.sliced_wasserstein(
        suite.reference2[: len(x)], ref, n_projections=k, generator=suite._sw_generator()
    )
    extra = {"n_reference": len(ref), "n_projections": k, "true_sample_floor": float(floor)}
    return MetricValue("sliced_w2", float(v), len(x), extra=extra)


def _mmd(suite: MetricSuite, f: dict[str, Tensor]) -> MetricValue:
    x, ref = f["points"], suite.reference
    n_max = int(suite.option("toy", "mmd_max_n"))  # O(N²) memory
    v = toy.mmd_rbf(x[:n_max].double(), ref[:n_max].double())
    extra = {"n_reference": min(len(ref), n_max), "kernel": "rbf, median heuristic x(0.5,1,2)"}
    return MetricValue("mmd", float(v), min(len(x), n_max), extra=extra)


def _mode_weight_error(suite: MetricSuite, f: dict[str, Tensor]) -> MetricValue:
    x, mix = f["points"], suite.mixture
    w = toy.mode_weights(x.double(), mix.means.double())
    err = (w - mix.weights.double()).abs().max()
    extra = {"mode_weights": w.tolist(), "true_weights": mix.weights.tolist()}
    return MetricValue("mode_weight_error", float(err), len(x), extra=extra)


def _exact_nll(suite: MetricSuite, f: dict[str, Tensor]) -> MetricValue:
    x, mix = f["points"].double(), suite.mixture
    nll = -mix.log_prob(x)
    ref = -mix.log_prob(suite.reference.double())
    return MetricValue(
        "exact_nll",
        float(nll.mean()),
        len(x),
        stderr=float(nll.std() / math.sqrt(len(x))) if len(x) > 1 else None,
        extra={"unit": "nats per sample", "true_sample_value": float(ref.mean())},
    )


def _frechet(name: str, feats: Tensor, ref) -> MetricValue:
    stats = fid.feature_statistics(feats, extractor=ref.extractor)
    extra = {"reference": ref.key, "n_reference": ref.n}
    return MetricValue(name, float(fid.frechet_distance(stats, ref)), len(feats), extra=extra)


def _prepare_mnist_fid(suite: MetricSuite) -> None:
    given = suite.option("mnist", "reference_stats", nullable=True)
    if given is not None:
        suite.mnist_stats = _given_statistics(given, mnist.classifier_id(suite.classifier))
        return
    suite.mnist_stats = mnist.mnist_reference_statistics(
        suite.classifier,
        data_dir=suite.dm.root,
        split=str(suite.option("mnist", "reference_split")),
        cache_dir=suite.option("fid", "stats_dir"),
    )


def _mnist_fid(suite: MetricSuite, f: dict[str, Tensor]) -> MetricValue:
    return _frechet("mnist_fid", f["mnist_features"], suite.mnist_stats)


def _classifier_score(suite: MetricSuite, f: dict[str, Tensor]) -> MetricValue:
    logits = f["mnist_logits"]
    splits = int(suite.option("mnist", "splits"))
    value = float(mnist.classifier_score_from_logits(logits, splits))
    return MetricValue("classifier_score", value, len(logits), extra={"splits": splits})


def _mode_coverage(suite: MetricSuite, f: dict[str, Tensor]) -> MetricValue:
    logits = f["mnist_logits"]
    cov = mnist.mode_coverage_from_logits(
        logits,
        float(suite.option("mnist", "min_share")),
        float(suite.option("mnist", "confidence")),
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


def _prepare_fid(suite: MetricSuite) -> None:
    space = inception.extractor_id(suite.extractor, fid.FEATURE_LAYER)
    given = suite.option("fid", "reference_stats", nullable=True)
    if given is not None:
        suite.fid_stats = _given_statistics(given, space)
        return
    split = str(suite.option("fid", "reference_split"))
    limit = suite.option("fid", "reference_limit", nullable=True)
    tag = split if limit is None else f"{split}{int(limit)}"
    suite.fid_stats = fid.reference_statistics(
        fid.StatsKey(suite.info.name, tag, suite.info.shape[-1], space),
        lambda: suite._reference_images(split, limit),
        suite.option("fid", "stats_dir"),
        extractor=suite.extractor,
        batch_size=int(suite.option("fid", "batch_size")),
    )


def _fid(suite: MetricSuite, f: dict[str, Tensor]) -> MetricValue:
    return _frechet("fid", f["inception_pool3"], suite.fid_stats)


def _is(suite: MetricSuite, f: dict[str, Tensor]) -> MetricValue:
    logits = f["inception_logits"]
    splits = int(suite.option("is", "splits"))
    out = isc_features_to_metric(logits, splits=splits)
    mean, std = float(out[KEY_METRIC_ISC_MEAN]), float(out[KEY_METRIC_ISC_STD])
    return MetricValue("is", mean, len(logits), std=std, extra={"splits": splits})


def _prepare_kid(suite: MetricSuite) -> None:
    split, n = str(suite.option("kid", "reference_split")), int(suite.option("kid", "reference_n"))
    images = suite._reference_images(split, n)
    bs = int(suite.option("fid", "batch_size"))
    feats = inception.extract_features(images, suite.extractor, batch_size=bs)
    suite.kid_reference = feats[fid.FEATURE_LAYER]


def _kid(suite: MetricSuite, f: dict[str, Tensor]) -> MetricValue:
    feats = f["inception_pool3"]
    subsets, size = int(suite.option("kid", "subsets")), int(suite.option("kid", "subset_size"))
    mean, std = fid.kid_from_features(
        feats, suite.kid_reference, subsets, size, seed=int(suite.option("kid", "seed"))
    )
    extra = {"subsets": subsets, "subset_size": size, "n_reference": len(suite.kid_reference)}
    return MetricValue("kid", mean, len(feats), std=std, extra=extra)


METRICS: dict[str, Metric] = {
    "sliced_w2": Metric(_sliced_w2, "points"),
    "mmd": Metric(_mmd, "points"),
    "mode_weight_error": Metric(_mode_weight_error, "points"),
    "exact_nll": Metric(_exact_nll, "points"),
    "mnist_fid": Metric(_mnist_fid, "mnist", prepare=_prepare_mnist_fid),
    "classifier_score": Metric(_classifier_score, "mnist", min_samples="mnist.splits"),
    "mode_coverage": Metric(_mode_coverage, "mnist"),
    "fid": Metric(_fid, "inception", prepare=_prepare_fid),
    "is": Metric(_is, "inception", min_samples="is.splits"),
    "kid": Metric(_kid, "inception", prepare=_prepare_kid, min_samples="kid.subset_size"),
}


def _of(kind: str) -> list[str]:
    return [name for name, m in METRICS.items() if m.features == kind]


def default_metrics(info: DataInfo) -> list[str]:
    if info.is_points:
        return _of("points") if info.name == "gmm" else ["sliced_w2", "mmd"]
    return _of("mnist" if info.name == "mnist" else "inception")


def allowed_metrics(info: DataInfo) -> list[str]:
    if info.name == "mnist":
        return _of("mnist") + _of("inception")
    return default_metrics(info)


def check_metric_names(names: list[str]) -> None:
    """Refuse a name that is no metric, in one line listing the known ones."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise MetricConfigError(f"unknown metric {unknown[0]!r}; known metrics: {list(METRICS)}")


# ------------------------------------------------------------------------------ the suite
class MetricSuite:
    """The chosen metrics for one data set; see the module docstring.

    Args:
        info: the data description.
        names: metric names (``None``: :func:`default_metrics`).
        datamodule: the (unset-up) data module of the data config: toy references are drawn
            from it; image references are read from its files.
        options: per-metric settings (groups ``toy``, ``mnist``, ``fid``, ``is``, ``kid``),
            laid over ``conf/metric_options/default.yaml``.
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
        check_metric_names(self.names)
        allowed = allowed_metrics(info)
        for n in self.names:
            if n not in allowed:
                raise MetricConfigError(
                    f"metric {n!r} does not apply to data {info.name} {info.shape}; allowed: "
                    f"{allowed}"
                )
        self.dm = datamodule
        self.options = metric_options(options)
        self.device = torch.device(device)
        self._prepared = False
        self.reference: Tensor | None = None
        self.mixture = getattr(datamodule, "distribution", None)
        self.classifier = None
        self.extractor = None

    def option(self, group: str, key: str, nullable: bool = False) -> Any:
        """The configured ``group.key``; one line naming the key when it is missing (or null,
        unless null has a meaning there)."""
        if key not in self.options.get(group, {}):
            raise MetricConfigError(f"metric option {group}.{key} is missing from {OPTIONS_FILE}")
        value = self.options[group][key]
        if value is None and not nullable:
            raise MetricConfigError(f"metric option {group}.{key} is null; it needs a value")
        return value

    def _kinds(self) -> set[str]:
        return {METRICS[n].features for n in self.names}

    # ----- prerequisites ---------------------------------------------------------------------
    def check(self, n: int) -> None:
        """Before any sampling: enough samples, and the classifier / weights are installed."""
        need, why = 2, ""
        for name in self.names:
            opt = METRICS[name].min_samples
            if opt is not None and int(self.option(*opt.split("."))) > need:
                need = int(self.option(*opt.split(".")))
                why = f" ({opt}={need}: lower it or draw more)"
        if n < need:
            raise MetricConfigError(
                f"n_samples={n} is fewer than the {need} that metrics {self.names} need{why}; "
                f"use n_samples>={need}"
            )
        kinds = self._kinds()
        path = self._classifier_path()
        if "mnist" in kinds and not path.is_file():
            raise MetricConfigError(
                f"MNIST classifier weights not found at {path}; train them with: "
                f"{mnist.TRAIN_COMMAND} --out {path}"
            )
        if "inception" in kinds and not inception.inception_weights_available():
            raise MetricConfigError(
                f"Inception weights for {[m for m in self.names if m in _of('inception')]} "
                f"not found at {inception.inception_weights_path()}; install them with: "
                f"{inception.FID_WEIGHTS_COMMAND}"
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

    def _classifier_path(self) -> Path:
        return Path(
            self.option("mnist", "classifier_path", nullable=True) or mnist.DEFAULT_CLASSIFIER_PATH
        )

    def prepare(self) -> None:
        """Load the reference data and the extractors, then each metric's reference (once)."""
        if self._prepared:
            return
        kinds = self._kinds()
        if "points" in kinds:
            n_ref = int(self.option("toy", "n_reference"))
            g = torch.Generator().manual_seed(int(self.option("toy", "seed")))
            self.reference = self.dm.sample(n_ref, generator=g).float().cpu()
            # A second draw of the same size measures the metric's floor at this sample size.
            self.reference2 = self.dm.sample(n_ref, generator=g).float().cpu()
        if "mnist" in kinds:
            self.classifier = mnist.load_mnist_classifier(self._classifier_path(), self.device)
        if "inception" in kinds:
            self._inception()
        for name in self.names:
            if METRICS[name].prepare is not None:
                METRICS[name].prepare(self)
        self._prepared = True

    def _inception(self):
        if self.extractor is None:
            self.extractor = inception.load_inception(
                (fid.FEATURE_LAYER, fid.LOGITS_LAYER), self.device
            )
        return self.extractor

    def _reference_images(self, split: str, limit: int | None) -> Tensor:
        """uint8 (N, C, H, W) images of ``split`` at the data's resolution (first ``limit``)."""
        self.dm.check_files()
        src = self.dm.source(split)
        n = src.n if limit is None else min(int(limit), src.n)
        return src.images(torch.arange(n))

    def _sw_generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.option("toy", "seed")) + 17)

    # ----- features and statistics -----------------------------------------------------------
    def features(self, x: Tensor) -> dict[str, Tensor]:
        """Per-sample features of ``x`` for the chosen metrics: ``{name: (N, ...)}`` on the CPU.

        ``x``: points (N, D), or images (N, C, H, W) in [0, 1]. The key ``<kind>_seconds`` holds
        the time it took, per kind (a (k,) tensor), so it is gathered like the rest.
        """
        self.prepare()
        check_samples(x, self.info)
        kinds = self._kinds()
        out: dict[str, Tensor] = {}
        if "points" in kinds:
            out["points"] = x.detach().float().cpu()
        if "mnist" in kinds:
            t0 = time.time()
            imgs = x.detach().float()
            if tuple(imgs.shape[-2:]) != (28, 28):  # mnist32: back to the classifier's size
                imgs = torch.nn.functional.interpolate(
                    imgs, size=(28, 28), mode="bilinear", antialias=True
                ).clamp(0, 1)
            logits, feats = mnist.classifier_logits_and_features(imgs, self.classifier, min_n=1)
            out["mnist_logits"], out["mnist_features"] = logits, feats
            out["mnist_seconds"] = torch.tensor([time.time() - t0])
        if "inception" in kinds:
            t0 = time.time()
            imgs = inception.check_images(x.detach().cpu(), min_n=1)
            bs = int(self.option("fid", "batch_size"))
            f = inception.extract_features(imgs, self.extractor, batch_size=bs, min_n=1)
            out["inception_pool3"] = f[fid.FEATURE_LAYER]
            out["inception_logits"] = f[fid.LOGITS_LAYER]
            out["inception_seconds"] = torch.tensor([time.time() - t0])
        return out

    def from_features(self, feats: dict[str, Tensor]) -> list[MetricValue]:
        """The chosen metrics from features of all samples (gathered from every rank)."""
        self.prepare()
        results = []
        for name in self.names:
            t0 = time.time()
            metric = METRICS[name]
            mv = metric.compute(self, feats)
            shared = feats.get(f"{metric.features}_seconds")
            mv.wall_time_s = time.time() - t0 + (float(shared.sum()) if shared is not None else 0)
            results.append(mv)
        return results

    def compute(self, x: Tensor) -> list[MetricValue]:
        return self.from_features(self.features(x))


def _given_statistics(path: str | Path, space: str):
    """A statistics file named by the user, refused unless it is from feature space ``space``."""
    if not Path(path).is_file():
        raise MetricConfigError(f"reference statistics file {path} does not exist")
    try:
        return fid.load_statistics(path, extractor=space)
    except ValueError as err:
        raise MetricConfigError(str(err).replace("\n", " ")) from None


def _datamodule(data_cfg: DictConfig) -> Any:
    """The data module of a ``data`` config (not set up); its files are checked now."""
    node = OmegaConf.to_container(data_cfg, resolve=True)
    try:
        dm = instantiate({k: v for k, v in node.items() if k not in DATA_META_KEYS})
    except InstantiationException as err:
        if isinstance(err.__cause__, ValueError | TypeError):
            raise MetricConfigError(f"data: {' '.join(str(err.__cause__).split())}") from None
        raise
    check_files = getattr(dm, "check_files", None)
    if callable(check_files):  # missing files: one line naming the file and `make data`, now
        check_files()
    return dm


def build_metric_suite(
    data_cfg: DictConfig | dict,
    names: list[str] | None,
    options: DictConfig | dict | None = None,
    device: str | torch.device = "cpu",
) -> MetricSuite:
    """A :class:`MetricSuite` for a ``data`` config (the data module is built, not set up).

    Unknown metric names are refused before anything is built."""
    d = OmegaConf.create(data_cfg) if isinstance(data_cfg, dict) else data_cfg
    if names is not None:
        names = [str(n) for n in names]
        check_metric_names(names)
    dm = _datamodule(d)
    return MetricSuite(data_info(d, dm), names, dm, options, device)
