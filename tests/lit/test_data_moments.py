"""The data's mean and variance: computed once from the training data when fitting starts, saved
in the checkpoint, and read from there when sampling (no rescan of the data)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from data_files import make_mnist_arrays
from run_helpers import TOY_FAST, bare_trainer, compose_cfg
from scorelab.data.images import MNISTDataModule, to_float
from scorelab.lit.build import build_datamodule, build_module, load_module, to_plain


def _toy_cfg(tmp_path, *extra: str):
    return compose_cfg("train", [*TOY_FAST, "sde.sigma_max=20", *extra], tmp_path)


def test_fit_fills_in_the_moments_and_the_checkpoint_carries_them(tmp_path):
    cfg = _toy_cfg(tmp_path, "data=two_moons", "sampler=heun")
    module, dm = build_module(cfg), build_datamodule(cfg)
    assert not module.data_moments.known
    assert module.ema_model().data_moments is module.data_moments
    trainer = bare_trainer(2, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    moments = module.data_moments
    assert moments.known and float(moments.count) == 10_000
    # against 100 000 independent points of the training distribution (the moments come from
    # 10 000: mean within 6 standard errors, variance within 6 %, 4 standard errors)
    x = dm.sample(100_000, torch.Generator().manual_seed(123)).double()
    se = x.std(0) * math.sqrt(1 / 10_000 + 1 / 100_000)
    assert ((moments.mean.double() - x.mean(0)).abs() < 6 * se).all()
    assert ((moments.var.double() / x.var(0) - 1).abs() < 0.06).all()

    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = load_module(ckpt)
    assert torch.equal(loaded.data_moments.mean, moments.mean)
    assert torch.equal(loaded.data_moments.var, moments.var)
    # sampling the checkpoint starts from them, without a data module anywhere
    sampler = loaded.sampler
    loaded.sample(8, generator=torch.Generator().manual_seed(0))
    assert sampler.describe()["start"]["source"] == "10000 training examples"


def test_a_resumed_fit_keeps_the_saved_moments(tmp_path):
    cfg = _toy_cfg(tmp_path)
    module = build_module(cfg)
    module.data_moments.set_(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), 7.0)
    trainer = bare_trainer(1, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=build_datamodule(cfg))
    assert module.data_moments.mean.tolist() == [1.0, 2.0] and float(module.data_moments.count) == 7


def test_a_checkpoint_without_moments_loads_them_unknown(tmp_path):
    cfg = _toy_cfg(tmp_path, "sampler=heun")
    module = build_module(cfg)
    state = {k: v for k, v in module.state_dict().items() if not k.startswith("data_moments.")}
    ckpt = tmp_path / "old.ckpt"
    torch.save({"state_dict": state, "scorelab_config": to_plain(cfg)}, ckpt)
    loaded = load_module(ckpt)
    assert not loaded.data_moments.known
    loaded.sample(4, generator=torch.Generator().manual_seed(0))
    assert loaded.sampler.describe()["start"]["kind"] == "prior"  # auto falls back to the prior


def _mnist(root, **kw) -> MNISTDataModule:
    dm = MNISTDataModule(root=root, on_device=True, batch_size=16, **kw)
    dm.setup("fit")
    return dm


def test_image_moments_are_exact_for_plain_pixels(mnist_root):
    dm = _mnist(mnist_root, dequantize=False, random_flip=False, scaling="zero_one")
    mean, var, count = dm.train_moments()
    u8 = torch.from_numpy(make_mnist_arrays()["train_images"]).double()[:, None] / 255.0
    assert count == len(u8) and mean.shape == (1, 28, 28)
    torch.testing.assert_close(mean, u8.mean(0))
    torch.testing.assert_close(var, u8.var(0, correction=0))


@pytest.mark.parametrize("scaling", ["zero_one", "minus_one_one"])
def test_image_moments_match_the_training_transform(mnist_root, scaling):
    """Dequantisation noise and random flips in the moments: against 200 transformed copies of
    the 64 training images (the exact transform training applies)."""
    dm = _mnist(mnist_root, dequantize=True, random_flip=True, scaling=scaling)
    mean, var, _ = dm.train_moments()
    u8 = torch.from_numpy(make_mnist_arrays()["train_images"])[:, None]
    g = torch.Generator().manual_seed(0)
    xs: list[Tensor] = [
        to_float(u8, scaling=scaling, dequantize=True, random_flip=True, generator=g).double()
        for _ in range(200)
    ]
    x = torch.cat(xs)
    scale = 2.0 if scaling == "minus_one_one" else 1.0
    assert (mean - x.mean(0)).abs().max() < 0.01 * scale
    assert (var - x.var(0)).abs().max() < 0.01 * scale**2
    # the flip makes the moments mirror-symmetric
    torch.testing.assert_close(mean, mean.flip(-1))
