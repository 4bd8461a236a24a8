"""Every experiment composes and runs one training step on CPU (``debug=smoke``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from run_helpers import compose_cfg
from scorelab.lit.build import build_module, data_shape
from scorelab.lit.classifier import build_classifier_module, is_classifier_config
from scorelab.runs import CONF_DIR
from scorelab.train import train

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
IMAGE_DATA = {"mnist": "mnist_root", "cifar10": "cifar_root", "celeba": "celeba_root"}


def test_every_required_experiment_exists():
    required = {
        "toy_gmm",
        "ncsn_mnist",
        "ncsn_cifar10",
        "ncsnv2_cifar10",
        "ncsnpp_cifar10_ve",
        "ddpmpp_cifar10_vp",
        "ddpmpp_cifar10_subvp",
        "ncsnv2_celeba",
    }
    assert required <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_builds(name, tmp_path):
    cfg = compose_cfg("train", [f"experiment={name}"], tmp_path)
    module = (build_classifier_module if is_classifier_config(cfg) else build_module)(cfg)
    x = torch.zeros(2, *data_shape(cfg))
    noise = module.model.noise.grid()[:2].float()  # the two noisiest levels (σ, or t)
    with torch.no_grad():
        out = module.model(x, noise)
    classes = cfg.model.net.get("num_classes") if cfg.model.get("classifier") else None
    assert out.shape == (x.shape if classes is None else (2, classes))  # classifiers: logits
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_one_step(name, tmp_path, request):
    cfg0 = compose_cfg("train", [f"experiment={name}"], tmp_path)
    overrides = [f"experiment={name}", "debug=smoke"]
    data_name = Path(cfg0.data._target_).suffix  # ".MNISTDataModule" etc.
    for key, fixture in IMAGE_DATA.items():
        if key.lower() in data_name.lower():
            root = request.getfixturevalue(fixture)
            overrides.append(f"paths.data_dir={root}")
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    result = train(cfg)
    assert result["status"] == "ok"
    assert result["global_step"] == 1
    assert result["skipped_steps"] == 0
    assert torch.isfinite(torch.tensor(result["metrics"]["train/loss"]))
    assert (tmp_path / "run" / "metrics.json").is_file()
