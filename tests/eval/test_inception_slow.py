"""Real Inception FID through ``scorelab.evaluate`` (needs ``make fid-weights``; slow on CPU)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from eval_helpers import compose_cfg
from omegaconf import OmegaConf
from PIL import Image

from scorelab.evaluate import evaluate
from scorelab.metrics.inception import inception_weights_available
from scorelab.metrics.suite import MetricConfigError, build_metric_suite

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _weights_installed():
    """`make test-full` installs the weights before the slow tests: missing, they are a
    failure that names the command, not a skip."""
    assert inception_weights_available(), "Inception weights not installed: run `make fid-weights`"


def _train_images(root) -> np.ndarray:
    rows = []
    for i in range(1, 6):
        with open(root / "cifar-10-batches-py" / f"data_batch_{i}", "rb") as f:
            rows.append(pickle.load(f, encoding="latin1")["data"])
    return np.concatenate(rows).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _write(folder, images) -> None:
    folder.mkdir()
    for i, a in enumerate(images):
        Image.fromarray(a, "RGB").save(folder / f"{i:03d}.png")


def test_fid_of_the_reference_images_is_near_zero(tmp_path, cifar_root):
    """The 40 training images of the fixture as 'samples': FID against their own cached
    statistics is 0 (|FID| < 0.01); 40 other noise images (the fixture's images are uniform
    noise too) are at FID > 10."""
    train = _train_images(cifar_root)
    _write(tmp_path / "same", train)
    noise = np.random.default_rng(0).integers(0, 256, train.shape, dtype=np.uint8)
    _write(tmp_path / "noise", noise)
    common = ["data=cifar10", f"data.root={cifar_root}", "metrics=[fid]"]
    evaluate(
        compose_cfg("evaluate", [*common, f"samples_path={tmp_path / 'same'}"], tmp_path / "a")
    )
    evaluate(
        compose_cfg("evaluate", [*common, f"samples_path={tmp_path / 'noise'}"], tmp_path / "b")
    )
    same = json.loads((tmp_path / "a" / "metrics.json").read_text())["results"]["fid"]
    other = json.loads((tmp_path / "b" / "metrics.json").read_text())["results"]["fid"]
    assert same["n_reference"] == 40 and "extractor=inception-v3-compat:2048" in same["reference"]
    assert abs(same["value"]) < 0.01
    assert other["value"] > 10


def test_inception_score_refused_with_the_offline_weights(tmp_path, cifar_root):
    cfg = compose_cfg("evaluate", ["data=cifar10", f"data.root={cifar_root}"], tmp_path / "run")
    suite = build_metric_suite(OmegaConf.to_container(cfg.data, resolve=True), ["is"])
    ext = suite._inception()
    if torch.isfinite(ext.fc.weight).all():
        pytest.skip("these Inception weights carry the classifier; IS is available")
    with pytest.raises(MetricConfigError, match=r"metric 'is' needs .*metrics=\[fid,kid\]"):
        suite.check(20)
    defaults = build_metric_suite(OmegaConf.to_container(cfg.data, resolve=True), None)
    defaults.check(1000)
    assert defaults.names == ["fid", "kid"] and "1008-way" in defaults.skipped["is"]
