"""Image DataModules on tiny MNIST / CIFAR-10 / CelebA files in torchvision's layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from data_files import CELEBA_PARTITION, CIFAR_PER_BATCH, N_MNIST_TRAIN, make_cifar_batches
from scorelab.data.images import CelebADataModule, CIFAR10DataModule, MNISTDataModule, to_float
from scorelab.runs import CONF_DIR


def mnist(root: Path, **kw) -> MNISTDataModule:
    kw.setdefault("batch_size", 16)
    dm = MNISTDataModule(root=root, **kw)
    dm.setup("fit")
    return dm


def collect(loader, n: int | None = None) -> list[torch.Tensor]:
    out = []
    for i, b in enumerate(loader):
        if n is not None and i == n:
            break
        out.append(b)
    return out


def test_scaling_ranges_are_exact_pixel_grids(mnist_root: Path) -> None:
    dm = mnist(mnist_root, scaling="zero_one")
    x = torch.cat(collect(dm.train_dataloader()))
    assert x.shape == (N_MNIST_TRAIN, 1, 28, 28) and dm.dim == 784 and dm.channels == 1
    assert x.min() == 0 and x.max() == 1 and dm.data_range == (0.0, 1.0)
    assert torch.allclose(x * 255, (x * 255).round(), atol=1e-4)
    dm2 = mnist(mnist_root, scaling="minus_one_one")
    y = torch.cat(collect(dm2.train_dataloader()))
    assert torch.allclose(y, 2 * x - 1) and y.min() == -1 and y.max() == 1
    assert dm2.data_range == (-1.0, 1.0)
    assert torch.allclose(dm2.unnormalize(y), x)


def test_dequantization_adds_uniform_noise_inside_each_bin(mnist_root: Path) -> None:
    plain = torch.cat(collect(mnist(mnist_root).train_dataloader()))
    deq = torch.cat(collect(mnist(mnist_root, dequantize=True).train_dataloader()))
    u8 = (plain * 255).round()
    u = deq * 256 - u8  # the U[0, 1) draw of each pixel
    assert u.min() >= 0 and u.max() < 1
    assert deq.min() >= 0 and deq.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.01  # 50k pixels: std error 0.0013
    assert abs(u.var().item() - 1 / 12) < 0.005


def test_random_flip_mirrors_about_half_the_images(mnist_root: Path) -> None:
    ref = mnist(mnist_root, return_labels=False)
    base = ref._splits["train"][0].images(torch.arange(N_MNIST_TRAIN)).float() / 255
    dm = mnist(mnist_root, random_flip=True, batch_size=64)
    (x,) = collect(dm.train_dataloader(), 1)
    flipped = 0
    for img in x:
        same = (base == img).flatten(1).all(1)
        mirrored = (base.flip(-1) == img).flatten(1).all(1)
        assert same.sum() + mirrored.sum() == 1  # exactly one original, as is or mirrored
        flipped += int(mirrored.any())
    assert 16 < flipped < 48  # Binomial(64, 1/2): mean 32, std 4
    # evaluation batches are never flipped
    (v,) = collect(dm.val_dataloader(), 1)
    (v0,) = collect(ref.val_dataloader(), 1)
    assert torch.equal(v, v0)


def test_resize_to_32(mnist_root: Path) -> None:
    dm = mnist(mnist_root, image_size=32, dim=1024, channels=1)
    (x,) = collect(dm.train_dataloader(), 1)
    assert x.shape == (16, 1, 32, 32) and dm.dim == 1024


def test_missing_files_error_names_file_and_command(tmp_path: Path) -> None:
    dm = MNISTDataModule(root=tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg
    assert f"python -m scorelab.data.prepare mnist --root {tmp_path}" in msg and "make data" in msg
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py/data_batch_1"):
        CIFAR10DataModule(root=tmp_path).setup()
    with pytest.raises(FileNotFoundError, match="prepare celeba"):
        CelebADataModule(root=tmp_path).setup()


def test_each_data_set_has_its_own_defaults(tmp_path: Path) -> None:
    """(image_size, random_flip, num_workers, on_device) of each DataModule left at defaults."""
    for make, want in (
        (MNISTDataModule, (28, False, 0, True)),
        (CIFAR10DataModule, (32, True, 0, True)),
        (CelebADataModule, (64, True, 4, False)),
    ):
        dm = make(root=tmp_path)
        assert (dm.image_size, dm.random_flip, dm.num_workers, dm.on_device) == want
        assert dm.dim == dm.channels * want[0] ** 2 and dm.batch_size == dm.eval_batch_size == 128
    dm = CelebADataModule(root=tmp_path, image_size=32, random_flip=False, num_workers=0)
    assert (dm.image_size, dm.random_flip, dm.num_workers, dm.on_device) == (32, False, 0, False)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"image_size": 30}, "image_size=30"),
        ({"scaling": "unit"}, "scaling='unit'"),
        ({"dim": 1024}, "dim=1024 contradicts"),
        ({"channels": 3}, "channels=3 contradicts"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"limit": 0}, "limit=0"),
        ({"val_split": -1}, "val_split=-1"),
    ],
)
def test_bad_arguments_raise_at_construction(tmp_path: Path, kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MNISTDataModule(root=tmp_path, **kw)


def test_on_device_order_is_seeded_and_covers_each_image_once_per_epoch(mnist_root: Path) -> None:
    kw = {"return_labels": True, "dequantize": True}
    a = collect(mnist(mnist_root, seed=1, **kw).train_dataloader())
    dm = mnist(mnist_root, seed=1, **kw)
    loader = dm.train_dataloader()
    epoch0, epoch1 = collect(loader), collect(loader)
    for (xa, ya), (xb, yb) in zip(a, epoch0):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert len(epoch0) == len(loader) == N_MNIST_TRAIN // 16
    # each image exactly once per epoch: recover indices through the undequantised data
    x_all = dm._splits["train"][0].images(torch.arange(N_MNIST_TRAIN)).float()
    for epoch in (epoch0, epoch1):
        x = torch.cat([b[0] for b in epoch])
        idx = [
            int(((x_all - (xi * 256).floor()).abs().flatten(1).sum(1) == 0).nonzero()) for xi in x
        ]
        assert sorted(idx) == list(range(N_MNIST_TRAIN))
    assert not torch.equal(epoch0[0][0], epoch1[0][0])  # a new permutation and new noise
    other = collect(mnist(mnist_root, seed=2, **kw).train_dataloader())
    assert not torch.equal(other[0][1], a[0][1])


@pytest.mark.parametrize("before_setup", [False, True])
def test_state_dict_resumes_the_exact_batch_stream(mnist_root: Path, before_setup: bool) -> None:
    kw = {"dequantize": True, "random_flip": True}
    ref = mnist(mnist_root, **kw)
    ref_batches = [b for _ in range(3) for b in collect(ref.train_dataloader())]
    run = mnist(mnist_root, **kw)
    loader = run.train_dataloader()
    seen = collect(loader)  # the 4 batches of epoch 0
    it = iter(loader)
    seen.append(next(it))  # 1 batch of epoch 1, then stop mid-epoch
    state = run.state_dict()
    assert state["train_sampler"]["epoch"] == 1 and state["train_sampler"]["position"] == 1
    for got, want in zip(seen, ref_batches):
        assert torch.equal(got, want)
    resumed = MNISTDataModule(root=mnist_root, batch_size=16, **kw)
    if before_setup:
        resumed.load_state_dict(state)
        resumed.setup("fit")
    else:
        resumed.setup("fit")
        resumed.load_state_dict(state)
    rest = collect(resumed.train_dataloader()) + collect(resumed.train_dataloader())
    assert len(rest) == 3 + 4
    for got, want in zip(rest, ref_batches[5:]):
        assert torch.equal(got, want)


def test_val_split_holds_out_disjoint_images_and_limit(mnist_root: Path) -> None:
    dm = mnist(mnist_root, val_split=16)
    train_idx, val_idx = dm._splits["train"][1], dm._splits["val"][1]
    assert len(train_idx) == 48 and len(val_idx) == 16
    assert set(train_idx.tolist()).isdisjoint(val_idx.tolist())
    assert len(dm._splits["test"][1]) == 16
    small = mnist(mnist_root, limit=32, batch_size=8)
    assert len(small.train_dataloader()) == 4
    assert sum(len(b) for b in small.val_dataloader()) == 16  # test split has only 16
    with pytest.raises(ValueError, match="val_split=64"):
        mnist(mnist_root, val_split=64)


def test_dataloader_path_matches_in_memory_values(mnist_root: Path) -> None:
    on = mnist(mnist_root, scaling="minus_one_one")
    off = mnist(mnist_root, scaling="minus_one_one", on_device=False)
    (xv,) = collect(on.test_dataloader(), 1)
    (batch,) = collect(off.test_dataloader(), 1)
    assert batch[0].dtype == torch.uint8
    xf = off.on_after_batch_transfer(batch, 0)
    assert torch.equal(xf, xv)
    xs = torch.cat([off.on_after_batch_transfer(b, 0) for b in off.train_dataloader()])
    assert xs.shape == (N_MNIST_TRAIN, 1, 28, 28) and xs.min() == -1 and xs.max() == 1


def test_cifar10_reads_pickled_batches_in_chw(cifar_root: Path) -> None:
    dm = CIFAR10DataModule(root=cifar_root, batch_size=8, random_flip=False, return_labels=True)
    dm.setup("fit")
    assert (dm.channels, dm.image_size, dm.dim) == (3, 32, 32 * 32 * 3)
    x, y = next(iter(dm.test_dataloader()))
    want = torch.from_numpy(make_cifar_batches()["test_batch"]["data"]).reshape(-1, 3, 32, 32)
    assert torch.equal(x * 255, want.float()) and y.tolist() == list(range(8))
    assert len(dm.train_dataloader()) == 5 * CIFAR_PER_BATCH // 8


def test_celeba_centre_crop_and_resize(celeba_root: Path) -> None:
    dm = CelebADataModule(root=celeba_root, image_size=32, batch_size=2, num_workers=0)
    dm.setup("fit")
    assert len(dm._splits["train"][1]) == CELEBA_PARTITION.count(0)
    assert len(dm._splits["val"][1]) == 2 and len(dm._splits["test"][1]) == 2
    xs = torch.cat([dm.on_after_batch_transfer(b, 0) for b in dm.train_dataloader()])
    assert xs.shape == (4, 3, 32, 32)
    assert xs.min() > 0.9  # the crop keeps only the white 140x140 centre (JPEG noise aside)
    on = CelebADataModule(root=celeba_root, image_size=64, batch_size=2, on_device=True)
    on.setup("fit")
    (x,) = collect(on.val_dataloader())
    assert x.shape == (2, 3, 64, 64) and on.dim == 3 * 64 * 64


def test_to_float_rejects_float_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        to_float(torch.zeros(1, 1, 2, 2), scaling="zero_one", dequantize=False, random_flip=False)


# From the package's config directory, not the working directory: run from anywhere else, a
# relative glob would be empty and the parameter set would silently become one skip.
DATA_CONFIGS = sorted(Path(CONF_DIR, "data").glob("*.yaml"))
DATA_CONFIG_NAMES = {"celeba", "celeba32", "checkerboard", "cifar10", "gmm", "mnist", "mnist32",
                     "rings", "swiss_roll", "two_moons"}  # fmt: skip


def test_every_data_config_is_checked() -> None:
    assert {p.stem for p in DATA_CONFIGS} == DATA_CONFIG_NAMES


@pytest.mark.parametrize("path", DATA_CONFIGS, ids=lambda p: p.stem)
def test_data_configs_instantiate_with_consistent_shape_keys(path: Path) -> None:
    from scorelab.lit.build import DATA_META_KEYS

    cfg = OmegaConf.create({"paths": {"data_dir": "data/raw"}, "data": OmegaConf.load(path)})
    # Keys read by other groups (default_sigma_max, init_low, ...) are not DataModule arguments.
    dm = instantiate({k: v for k, v in cfg.data.items() if k not in DATA_META_KEYS})
    assert cfg.data.dim == dm.dim
    if cfg.data.channels is not None:
        assert cfg.data.dim == cfg.data.channels * cfg.data.image_size**2
        assert (dm.channels, dm.image_size) == (cfg.data.channels, cfg.data.image_size)


def test_validation_batches_repeat_their_noise_while_training_moves_on(mnist_root: Path) -> None:
    """Evaluation replays epoch 0 (the same dequantisation noise every time); training draws
    fresh noise each epoch."""
    dm = mnist(mnist_root, dequantize=True)
    first, again = collect(dm.val_dataloader()), collect(dm.val_dataloader())
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    e0, e1 = collect(dm.train_dataloader(), 1), collect(dm.train_dataloader(), 1)
    assert not torch.equal(e0[0], e1[0])
