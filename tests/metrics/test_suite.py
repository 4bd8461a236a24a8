"""The metric suite: metrics chosen from one registry, options from one YAML file, one KID."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image
from test_fid import PooledColours

import scorelab.metrics.suite as suite_module
from run_helpers import NCSN_GMM_DATA as GMM
from run_helpers import compose_cfg
from scorelab.lit.metrics_callback import SampleMetrics
from scorelab.metrics.fid import compute_kid
from scorelab.metrics.suite import METRICS, MetricConfigError, build_metric_suite

CIFAR = {
    "_target_": "scorelab.data.images.CIFAR10DataModule",
    "image_size": 32,
    "channels": 3,
    "dim": 3072,
}
KNOWN = (
    "['sliced_w2', 'mmd', 'mode_weight_error', 'exact_nll', 'mnist_fid', 'classifier_score', "
    "'mode_coverage', 'fid', 'is', 'kid']"
)


def _yaml_options() -> dict:
    return yaml.safe_load(suite_module.OPTIONS_FILE.read_text())


def _options_file(tmp_path: Path, monkeypatch, edit) -> None:
    """Point the suite at a copy of the options file changed by ``edit(dict)``."""
    options = _yaml_options()
    edit(options)
    path = tmp_path / "metric_options.yaml"
    path.write_text(yaml.safe_dump(options))
    monkeypatch.setattr(suite_module, "OPTIONS_FILE", path)


# ------------------------------------------------------------------------------ the registry
def test_an_unknown_metric_is_refused_in_one_line_before_sampling(tmp_path, monkeypatch):
    import scorelab.sample
    from scorelab.evaluate import evaluate

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampling started before the metric names were checked")

    monkeypatch.setattr(scorelab.sample, "draw", no_sampling)
    cfg = compose_cfg(
        "evaluate",
        ["model=oracle", "data=gmm", "sde=ve", "sampler=pc", "n_samples=8", "metrics=[sliced_w3]"],
        tmp_path,
    )
    with pytest.raises(MetricConfigError) as err:
        evaluate(cfg)
    assert str(err.value) == f"unknown metric 'sliced_w3'; known metrics: {KNOWN}"
    assert list(METRICS) == eval(KNOWN)
    # The training callback refuses it when it is built, before the first step.
    with pytest.raises(MetricConfigError, match=r"^unknown metric 'fdi'; known metrics: \["):
        SampleMetrics(metrics=["fid", "fdi"])


# ------------------------------------------------------------------------------ the options
def test_the_suite_writes_no_option_default_in_code():
    source = inspect.getsource(suite_module)
    assert "_opt(" not in source
    options = _yaml_options()
    # Every option the code reads is one the YAML file defines, read without a fallback value.
    read = re.findall(r'option\(\s*"(\w+)",\s*"(\w+)"(.*?)\)', source)
    read += [tuple(m.split(".")) + ("",) for m in re.findall(r'min_samples="([\w.]+)"', source)]
    assert len(read) >= 20
    for group, key, rest in read:
        assert key in options[group], (
            f"{group}.{key} is read but not in {suite_module.OPTIONS_FILE}"
        )
        assert rest in ("", ", nullable=True"), f"{group}.{key} is read with {rest!r}"
    keys = {k for g in options.values() for k in g}
    assert not re.search(rf'\.get\(\s*"({"|".join(keys)})"\s*,', source)
    # conf/evaluate.yaml composes the same file: no second copy of the defaults.
    cfg = compose_cfg("evaluate", [], Path("unused"))
    for group, values in options.items():
        composed = OmegaConf.to_container(cfg[group], resolve=False)
        assert {k: v for k, v in composed.items() if k != "stats_dir"} == {
            k: v for k, v in values.items() if k != "stats_dir"
        }


def test_a_default_changed_in_the_yaml_is_what_the_suite_uses(tmp_path, monkeypatch, cifar_root):
    def edit(o):
        o["toy"]["n_reference"] = 33
        o["kid"]["subset_size"] = 7

    _options_file(tmp_path, monkeypatch, edit)
    suite = build_metric_suite(GMM, ["sliced_w2"])
    suite.prepare()
    assert suite.reference.shape == (33, 2)
    kid = build_metric_suite({**CIFAR, "root": str(cifar_root)}, ["kid"])
    with pytest.raises(MetricConfigError, match=r"fewer than the 7 .*\(kid\.subset_size=7: "):
        kid.check(6)
    # Options given by the caller win over the file's.
    given = build_metric_suite(GMM, ["sliced_w2"], {"toy": {"n_reference": 12}})
    given.prepare()
    assert given.reference.shape == (12, 2)


def test_an_override_of_the_composed_evaluate_config_reaches_the_suite(tmp_path, cifar_root):
    from scorelab.evaluate import evaluate

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    overrides = ["data=cifar10", f"data.root={cifar_root}", f"samples_path={folder}"]
    cfg = compose_cfg("evaluate", [*overrides, "metrics=[kid]", "kid.subset_size=6"], tmp_path)
    with pytest.raises(MetricConfigError, match=r"n_samples=5 is fewer than the 6 .*subset_size=6"):
        evaluate(cfg)


def test_a_missing_unknown_or_null_option_is_one_line_naming_it(tmp_path, monkeypatch):
    with pytest.raises(MetricConfigError, match=r"^unknown metric option toy\.n_refs; known toy: "):
        build_metric_suite(GMM, ["sliced_w2"], {"toy": {"n_refs": 5}})
    with pytest.raises(MetricConfigError, match=r"^metric option toy\.seed is null; it needs a"):
        build_metric_suite(GMM, ["sliced_w2"], {"toy": {"seed": None}}).prepare()
    _options_file(tmp_path, monkeypatch, lambda o: o["toy"].pop("n_reference"))
    with pytest.raises(MetricConfigError, match=r"^metric option toy\.n_reference is missing from"):
        build_metric_suite(GMM, ["sliced_w2"]).prepare()


# ------------------------------------------------------------------------------ one KID
def test_the_suites_kid_is_compute_kid_on_the_same_images(cifar_root, monkeypatch):
    """The suite's KID (from features it extracts itself) and compute_kid (from images) are the
    same function: equal to the last digit on the same samples and reference."""
    monkeypatch.setattr(suite_module.inception, "inception_weights_available", lambda: True)
    monkeypatch.setattr(suite_module.inception, "load_inception", lambda *a: PooledColours())
    options = {"kid": {"subsets": 4, "subset_size": 10, "reference_n": 20}}
    suite = build_metric_suite({**CIFAR, "root": str(cifar_root)}, ["kid"], options)
    suite.check(12)
    x = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    (value,) = suite.compute(x)
    reference = suite.dm.source("train").images(torch.arange(20))
    mean, std = compute_kid(x, reference, extractor=PooledColours(), subsets=4, subset_size=10)
    assert value.name == "kid" and value.extra["n_reference"] == 20
    assert (value.value, value.std) == (mean, std) and mean != 0
