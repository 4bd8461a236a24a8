"""Class-conditional training: labels flow from the data to the network, with label dropout."""

from __future__ import annotations

import math

import pytest
import torch

from run_helpers import TOY_FAST, bare_trainer, compose_cfg
from scorelab.data.toy import ToyDataModule
from scorelab.lit.build import ConfigError, build_datamodule, build_module

COND = ["data=gmm", "data.labels=true", "model.net.num_labels=2", "sde.sigma_max=20.0"]


def test_gmm_labels_are_the_components():
    """NCSN's mixture 0.2 N((-5,-5), I) + 0.8 N((5,5), I): each point's label is its component,
    which for means 10√2 apart is the side of the line x + y = 0 it lies on (a point crosses
    it with probability Φ(−5√2) ≈ 1e-12), and labels occur at the mixture weights."""
    dm = ToyDataModule(
        "gmm", n_train=4000, batch_size=4000, weights=[0.2, 0.8],
        means=[[-5.0, -5.0], [5.0, 5.0]], stds=1.0, labels=True,
    )  # fmt: skip
    assert dm.num_labels == 2
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4000, 2) and y.shape == (4000,) and y.dtype == torch.long
    assert torch.equal(y, (x.sum(1) > 0).long())
    frac = y.float().mean().item()
    assert abs(frac - 0.8) < 4 * math.sqrt(0.8 * 0.2 / 4000)
    # labels off: the same points, as plain tensors (every existing path unchanged)
    plain = ToyDataModule(
        "gmm", n_train=4000, batch_size=4000, weights=[0.2, 0.8],
        means=[[-5.0, -5.0], [5.0, 5.0]], stds=1.0,
    )  # fmt: skip
    plain.setup()
    assert torch.equal(plain.train_data, dm.train_data)


def test_labels_reach_the_network_with_dropout(tmp_path):
    """A few steps through the real builder: the network is called with the batch's labels,
    about a quarter of them (module.label_dropout=0.25) replaced by the null label 2, and
    every row of the label embedding (classes 0, 1 and the null row) is trained."""
    p = 0.25
    cfg = compose_cfg("train", [*COND, *TOY_FAST, f"module.label_dropout={p}"], tmp_path)
    module, dm = build_module(cfg), build_datamodule(cfg)
    net = module.model.net
    seen: list[torch.Tensor] = []

    def grab(_mod, args, kwargs):
        seen.append(kwargs["label"].detach().clone())

    net.register_forward_pre_hook(grab, with_kwargs=True)
    before = net.label_embed.table.weight.detach().clone()
    steps = 20
    bare_trainer(steps).fit(module, datamodule=dm)
    labels = torch.cat(seen)
    assert len(seen) == steps and labels.shape == (steps * 64,)
    assert set(labels.unique().tolist()) == {0, 1, 2}
    n = labels.numel()
    dropped = (labels == 2).float().mean().item()
    assert abs(dropped - p) < 4 * math.sqrt(p * (1 - p) / n)
    # of the labels kept, class 1 has the mixture's weight 0.8
    kept = labels[labels != 2]
    assert abs((kept == 1).float().mean().item() - 0.8) < 4 * math.sqrt(0.16 / kept.numel())
    moved = (net.label_embed.table.weight.detach() - before).abs().sum(1)
    assert (moved > 0).all()


def test_unconditional_paths_unchanged(tmp_path):
    """data.labels=false (the default): no label embedding, and the network sees no label."""
    cfg = compose_cfg("train", [*TOY_FAST, "sde.sigma_max=20.0"], tmp_path)
    module = build_module(cfg)
    assert module.num_labels is None and module.model.net.label_embed is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data=gmm", "data.labels=true", "sde.sigma_max=20.0"],
            r"data\.labels=true but model\.net\.num_labels=null.*set model\.net\.num_labels",
        ),
        (
            ["data=gmm", "model.net.num_labels=2", "sde.sigma_max=20.0"],
            r"model\.net\.num_labels=2 but data\.labels=false.*set data\.labels=true",
        ),
        (
            ["data=gmm", "data.labels=true", "model.net.num_labels=1", "sde.sigma_max=20.0"],
            r"model\.net\.num_labels=1 but the data's labels take 2 values.*num_labels=2",
        ),
        (
            [*COND, "module.label_dropout=1.0"],
            r"module\.label_dropout=1\.0 must be in \[0, 1\)",
        ),
        (
            [*COND, "module.label_dropout=-0.1"],
            r"module\.label_dropout=-0\.1 must be in \[0, 1\)",
        ),
    ],
)
def test_bad_label_settings_refused(tmp_path, overrides, message):
    cfg = compose_cfg("train", [*overrides, *TOY_FAST], tmp_path)
    with pytest.raises(ConfigError, match=message):
        build_module(cfg)


def test_labels_on_data_without_classes_refused(tmp_path):
    with pytest.raises(ValueError, match=r"data\.labels=true needs classes, and 'two_moons'"):
        ToyDataModule("two_moons", n_train=64, batch_size=8, labels=True)
    from scorelab.data.images import CelebADataModule

    with pytest.raises(ValueError, match=r"data\.labels=true needs classes, and celeba"):
        CelebADataModule(root=tmp_path, labels=True)


def test_mnist_labels_are_the_digits(mnist_root):
    """data.labels=true on MNIST: (x, digit) batches, the digits those of the files."""
    from scorelab.data.images import MNISTDataModule

    dm = MNISTDataModule(root=mnist_root, batch_size=16, labels=True)
    dm.setup("fit")
    assert dm.num_labels == 10
    src, idx = dm._splits["train"]
    images = src.images(idx).float()
    for x, y in dm.train_dataloader():
        assert x.shape == (16, 1, 28, 28) and y.shape == (16,)
        # find each image among the files, and compare its stored digit
        j = [int(((images - xi * 255).abs().flatten(1).sum(1) < 1e-3).nonzero()[0]) for xi in x]
        assert torch.equal(y, src.labels[idx[j]])
        assert 0 <= int(y.min()) and int(y.max()) <= 9


def test_sigma_max_auto_is_measured_from_labelled_batches(tmp_path):
    """With labels on, NCSNv2's rule still reads the points of the (x, label) batches: the
    resolved σ_max is the same number as without labels (the same points)."""
    base = ["data=gmm", *TOY_FAST]
    with_labels = build_module(
        compose_cfg("train", [*base, "data.labels=true", "model.net.num_labels=2"], tmp_path)
    )
    without = build_module(compose_cfg("train", base, tmp_path))
    got = with_labels.config["sde"]["sigma_max"]
    assert isinstance(got, float) and got == without.config["sde"]["sigma_max"] > 0
