"""LightningDataModules for MNIST, CIFAR-10 and CelebA, read with torchvision's data set classes.

Images are kept as uint8 ``(N, C, H, W)`` until a batch is formed; a batch is then turned into
floats by :func:`to_float`:

1. uniform dequantisation ``(u8 + U[0, 1)) / 256`` when ``dequantize`` (else ``u8 / 255``),
2. a horizontal flip of each image with probability 1/2 when ``random_flip`` (training only),
3. ``2x - 1`` when ``scaling="minus_one_one"``.

With ``on_device=True`` (default for MNIST and CIFAR-10) the whole uint8 split is loaded once onto
the accelerator and batches are drawn by index (:class:`~scorelab.data.batches.InMemoryBatches`);
the sampler position is saved in the DataModule's ``state_dict`` so a resumed run sees exactly
the batches it would have seen. With ``on_device=False`` a ``DataLoader`` with workers reads the
images and :meth:`on_after_batch_transfer` applies :func:`to_float` on the accelerator.

Splits: ``val_split > 0`` holds out that many training images (a seeded random subset) for
validation; with ``val_split = 0`` validation uses the held-out split of the data set (MNIST and
CIFAR-10: test; CelebA: the official 'valid' split). ``test_dataloader`` serves the test split.
Batches are ``x`` of shape ``(B, C, H, W)``, or ``(x, y)`` with ``return_labels=True``.
``labels=True`` asks for ``(x, class)`` batches for class-conditional training: MNIST and CIFAR-10
(``num_labels = 10``); CelebA has attributes, not classes, and refuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from scorelab.data.batches import InMemoryBatches, InMemoryDataModule, derive_seed
from scorelab.data.layout import (
    corrupt_mnist_files,
    missing_celeba_files,
    missing_cifar10_files,
    missing_mnist_files,
)
from scorelab.utils import append_dims

Scaling = Literal["zero_one", "minus_one_one"]
SCALINGS = ("zero_one", "minus_one_one")


def to_float(
    x: Tensor,
    *,
    scaling: Scaling,
    dequantize: bool,
    random_flip: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """uint8 images ``(B, C, H, W)`` → float32 images of the same shape.

    Dequantised values lie in ``[0, 1)`` (``[-1, 1)`` after scaling), plain ones in ``[0, 1]``.
    ``generator`` must live on ``x.device``.
    """
    if x.dtype != torch.uint8:
        raise ValueError(f"to_float expects uint8 images, got {x.dtype}")
    xf = x.float()
    if dequantize:
        # (x * 255 + u) / 256 with x = u8 / 255, u ~ U[0, 1)
        u = torch.rand(xf.shape, generator=generator, device=x.device)
        xf = (xf + u) / 256.0
    else:
        xf = xf / 255.0
    if random_flip:
        flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
        xf = torch.where(append_dims(flip, xf.ndim), xf.flip(-1), xf)
    if scaling == "minus_one_one":
        xf = 2.0 * xf - 1.0
    return xf


@dataclass
class ImageSource:
    """One split of a data set as random-access uint8 images.

    Attributes:
        n: number of images.
        images: ``images(idx)`` with ``idx`` a long tensor ``(k,)`` → uint8 ``(k, C, H, W)``.
        labels: ``(n, ...)`` tensor of labels.
    """

    n: int
    images: Callable[[Tensor], Tensor]
    labels: Tensor


class _Subset(Dataset):
    """Items ``(uint8 (C, H, W), label)`` of an :class:`ImageSource` at given indices."""

    def __init__(self, source: ImageSource, indices: Tensor) -> None:
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        j = self.indices[i : i + 1]
        return self.source.images(j)[0], self.source.labels[j[0]]


def _resize_u8(x: Tensor, size: int) -> Tensor:
    """Bilinear antialiased resize of uint8 ``(k, C, H, W)`` to ``(k, C, size, size)``."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    from torchvision.transforms.v2.functional import resize

    return resize(x, [size, size], antialias=True)


class ImageDataModule(InMemoryDataModule):
    """Shared machinery of the image DataModules; see the module docstring.

    Subclasses set ``name``, ``allowed_image_sizes``, ``native_channels`` and their defaults
    (``default_image_size`` and, where they differ, ``default_random_flip``,
    ``default_num_workers`` and ``default_on_device``, taken by arguments left None), and
    implement :meth:`missing_files` and :meth:`source`.
    """

    name = "images"
    prepare_command = "python -m scorelab.data.prepare {name} --root {root}"
    allowed_image_sizes: tuple[int, ...] = ()
    native_channels = 3
    eval_split = "test"
    default_image_size: int
    default_random_flip = True
    default_num_workers = 0
    default_on_device = True
    classes: int | None = None  # number of classes a label can name; None: no classes

    def __init__(
        self,
        *,
        root: str | Path = "data/raw",
        image_size: int | None = None,
        scaling: Scaling = "zero_one",
        dequantize: bool = False,
        random_flip: bool | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        val_split: int = 0,
        on_device: bool | None = None,
        limit: int | None = None,
        seed: int = 0,
        return_labels: bool = False,
        device: str | None = None,
        channels: int | None = None,
        dim: int | None = None,
        labels: bool = False,
    ) -> None:
        image_size = self.default_image_size if image_size is None else image_size
        random_flip = self.default_random_flip if random_flip is None else random_flip
        num_workers = self.default_num_workers if num_workers is None else num_workers
        on_device = self.default_on_device if on_device is None else on_device
        super().__init__()
        if image_size not in self.allowed_image_sizes:
            raise ValueError(
                f"image_size={image_size} is not supported for {self.name}; allowed: "
                f"{list(self.allowed_image_sizes)}"
            )
        if scaling not in SCALINGS:
            raise ValueError(f"scaling={scaling!r} must be one of {list(SCALINGS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise ValueError(f"eval_batch_size={eval_batch_size} must be >= 1 or null")
        if num_workers < 0:
            raise ValueError(f"num_workers={num_workers} must be >= 0")
        if val_split < 0:
            raise ValueError(f"val_split={val_split} must be >= 0 (number of held-out images)")
        if limit is not None and limit < 1:
            raise ValueError(f"limit={limit} must be >= 1 or null (use every example)")
        if labels and self.classes is None:
            raise ValueError(
                f"data.labels=true needs classes, and {self.name} has none (its labels are "
                "attributes); use data=mnist or data=cifar10, or data.labels=false"
            )
        self.labels = bool(labels)
        self.num_labels = self.classes if self.labels else None
        return_labels = return_labels or self.labels
        self.root = Path(root)
        self.channels = self.native_channels
        self.image_size = int(image_size)
        self.dim = self.channels * self.image_size**2
        for key, given, actual in (
            ("channels", channels, self.channels),
            ("dim", dim, self.dim),
        ):
            if given is not None and int(given) != actual:
                raise ValueError(
                    f"{key}={given} contradicts {self.name} at image_size={image_size}, which "
                    f"has {key}={actual}; fix the data config"
                )
        self.scaling: Scaling = scaling
        self.data_range: tuple[float, float] = (0.0, 1.0) if scaling == "zero_one" else (-1.0, 1.0)
        self.dequantize, self.random_flip = dequantize, random_flip
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.val_split, self.on_device = num_workers, val_split, on_device
        self.limit, self.seed, self.return_labels = limit, int(seed), return_labels
        self.device = device
        self._splits: dict[str, tuple[ImageSource, Tensor]] | None = None
        self._float_generator: torch.Generator | None = None

    # ----- files -----------------------------------------------------------------------------
    def missing_files(self) -> list[Path]:
        """Files torchvision needs that are absent under ``root``."""
        raise NotImplementedError

    def source(self, split: str) -> ImageSource:
        """The uint8 images of ``split`` ('train', 'test' and, for CelebA, 'valid')."""
        raise NotImplementedError

    def check_files(self) -> None:
        """Raise ``FileNotFoundError`` naming the first missing file and the fixing command."""
        missing = self.missing_files()
        if missing:
            cmd = self.prepare_command.format(name=self.name, root=self.root)
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise FileNotFoundError(
                f"{self.name} data file {missing[0]} is missing{more}; run `{cmd}` (or "
                "`make data`) to prepare it"
            )

    def prepare_data(self) -> None:
        self.check_files()

    # ----- setup -----------------------------------------------------------------------------
    def _limited(self, idx: Tensor) -> Tensor:
        return idx if self.limit is None else idx[: self.limit]

    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        self.check_files()
        train = self.source("train")
        if self.val_split > 0:
            if self.val_split >= train.n:
                raise ValueError(
                    f"val_split={self.val_split} must be < the {train.n} training images"
                )
            g = torch.Generator().manual_seed(derive_seed(self.seed, 7))
            perm = torch.randperm(train.n, generator=g)
            val_idx, train_idx = perm[: self.val_split].sort().values, perm[self.val_split :]
            train_idx = train_idx.sort().values
            val = (train, val_idx)
        else:
            train_idx = torch.arange(train.n)
            held = self.source(self.eval_split)
            val = (held, torch.arange(held.n))
        test = self.source("test") if self.eval_split != "test" or self.val_split > 0 else val[0]
        self._splits = {
            "train": (train, self._limited(train_idx)),
            "val": (val[0], self._limited(val[1])),
            "test": (test, self._limited(torch.arange(test.n))),
        }
        if self.on_device:
            self._build_in_memory()

    @torch.no_grad()
    def train_moments(self, max_n: int = 10_000) -> tuple[Tensor, Tensor, float | None]:
        """Per-pixel mean and variance ``(C, H, W)`` float64 of the training images as training
        sees them, and the number of images used (at most ``max_n``, evenly spaced over the
        split). Exact in the dequantisation noise, the random flip and the scaling: read from
        the uint8 images, so no sampler or noise state moves."""
        if self._splits is None:
            self.setup("fit")
        assert self._splits is not None
        src, idx = self._splits["train"]
        if len(idx) > max_n:
            idx = idx[torch.linspace(0, len(idx) - 1, max_n).round().long()]
        s1 = s2 = None
        for chunk in idx.split(1000):
            u = src.images(chunk).double()
            s1 = u.sum(0) if s1 is None else s1 + u.sum(0)
            s2 = (u * u).sum(0) if s2 is None else s2 + (u * u).sum(0)
        n = len(idx)
        m1, m2 = s1 / n, s2 / n  # E[u8], E[u8²]
        if self.dequantize:  # y = (u8 + U)/256: E[y] = (E u8 + 1/2)/256, E[y²] adds E[U²] = 1/3
            m2 = (m2 + m1 + 1.0 / 3.0) / 256.0**2
            m1 = (m1 + 0.5) / 256.0
        else:
            m1, m2 = m1 / 255.0, m2 / 255.0**2
        if self.random_flip:  # training flips each image with probability 1/2
            m1, m2 = (m1 + m1.flip(-1)) / 2, (m2 + m2.flip(-1)) / 2
        var = (m2 - m1**2).clamp(min=0)
        if self.scaling == "minus_one_one":
            m1, var = 2 * m1 - 1, 4 * var
        return m1, var, float(n)

    def _build_in_memory(self) -> None:
        assert self._splits is not None
        device, splits = self._resolve_device(), {}
        for split, (src, idx) in self._splits.items():
            x, y = src.images(idx).to(device), src.labels[idx].to(device)
            flip = self.random_flip and split == "train"

            def make_batch(i: Tensor, g: torch.Generator, x=x, y=y, flip=flip):
                xb = to_float(
                    x[i],
                    scaling=self.scaling,
                    dequantize=self.dequantize,
                    random_flip=flip,
                    generator=g,
                )
                return (xb, y[i]) if self.return_labels else xb

            seed = derive_seed(self.seed, {"train": 0, "val": 1, "test": 2}[split])
            splits[split] = (len(idx), make_batch, seed)
        self._set_loaders(device, splits)

    # ----- loaders ---------------------------------------------------------------------------
    def _loader(self, split: str) -> InMemoryBatches | DataLoader:
        if self._splits is None:
            self.setup()
        if self.on_device:
            return self._loaders[split]
        assert self._splits is not None
        src, idx = self._splits[split]
        training = split == "train"
        return DataLoader(
            _Subset(src, idx),
            batch_size=self.batch_size if training else self.eval_batch_size,
            shuffle=training,
            drop_last=training,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(derive_seed(self.seed, 3)),
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """DataLoader path: uint8 → float on the accelerator (in-memory batches pass through)."""
        if self.on_device:
            return batch
        x, y = batch
        if self._float_generator is None or self._float_generator.device != x.device:
            self._float_generator = torch.Generator(device=x.device)
            self._float_generator.manual_seed(derive_seed(self.seed, 4))
        training = self.trainer is None or bool(self.trainer.training)
        xf = to_float(
            x,
            scaling=self.scaling,
            dequantize=self.dequantize,
            random_flip=self.random_flip and training,
            generator=self._float_generator,
        )
        return (xf, y) if self.return_labels else xf

    def unnormalize(self, x: Tensor) -> Tensor:
        """Map model-space images back to ``[0, 1]`` (for saving image grids)."""
        return (x + 1.0) / 2.0 if self.scaling == "minus_one_one" else x


# ---------------------------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------------------------


class MNISTDataModule(ImageDataModule):
    """MNIST, 1×28×28 (native) or 1×32×32 (bilinear resize), from ``<root>/MNIST/raw``."""

    name = "mnist"
    allowed_image_sizes = (28, 32)
    native_channels = 1
    default_image_size = 28
    default_random_flip = False
    classes = 10

    def missing_files(self) -> list[Path]:
        return missing_mnist_files(self.root)

    def check_files(self) -> None:
        """Missing files (see the base class), then IDX files that are truncated or not IDX."""
        super().check_files()
        bad = corrupt_mnist_files(self.root)
        if bad:
            path, why = bad[0]
            cmd = self.prepare_command.format(name=self.name, root=self.root)
            raise ValueError(
                f"{self.name} data file {path} {why}; delete it and run `{cmd}` (or "
                "`make data`) to prepare it again"
            )

    def source(self, split: str) -> ImageSource:
        from torchvision.datasets import MNIST

        ds = MNIST(str(self.root), train=split == "train", download=False)
        data = ds.data  # uint8 (N, 28, 28)
        size = self.image_size
        return ImageSource(
            n=len(data),
            images=lambda idx: _resize_u8(data[idx].unsqueeze(1), size),
            labels=ds.targets,
        )


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10, 3×32×32, from ``<root>/cifar-10-batches-py``."""

    name = "cifar10"
    allowed_image_sizes = (32,)
    default_image_size = 32
    classes = 10

    def missing_files(self) -> list[Path]:
        return missing_cifar10_files(self.root)

    def source(self, split: str) -> ImageSource:
        from torchvision.datasets import CIFAR10

        ds = CIFAR10(str(self.root), train=split == "train", download=False)
        data = torch.from_numpy(ds.data).permute(0, 3, 1, 2)  # uint8 (N, 3, 32, 32)
        return ImageSource(
            n=len(data), images=lambda idx: data[idx], labels=torch.as_tensor(ds.targets)
        )


class CelebADataModule(ImageDataModule):
    """CelebA aligned faces with NCSN's preprocessing: centre crop 140, resize to 32 or 64.

    Reads ``<root>/celeba`` (torchvision's layout). ``on_device=True`` decodes the selected
    images once (minutes for the full 163k training set; use ``limit`` for smoke runs), so it
    defaults to ``False``: a DataLoader with ``num_workers`` decodes JPEGs per batch.
    """

    name = "celeba"
    allowed_image_sizes = (32, 64)
    eval_split = "valid"
    crop_size = 140
    default_image_size = 64
    default_num_workers = 4
    default_on_device = False

    def missing_files(self) -> list[Path]:
        return missing_celeba_files(self.root)

    def source(self, split: str) -> ImageSource:
        from torchvision import transforms as T
        from torchvision.datasets import CelebA

        transform = T.Compose(
            [
                T.CenterCrop(self.crop_size),
                T.Resize(self.image_size, antialias=True),
                T.PILToTensor(),
            ]
        )
        ds = CelebA(
            str(self.root), split=split, target_type="attr", transform=transform, download=False
        )

        def images(idx: Tensor) -> Tensor:
            return (
                torch.stack([ds[int(i)][0] for i in idx])
                if len(idx)
                else torch.empty(0, 3, self.image_size, self.image_size, dtype=torch.uint8)
            )

        return ImageSource(n=len(ds), images=images, labels=ds.attr)
