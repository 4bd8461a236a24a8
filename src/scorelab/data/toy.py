"""LightningDataModule for low-dimensional toy data: an analytic Gaussian mixture or 2-D sets.

``name="gmm"`` builds :class:`scorelab.toy.GaussianMixture` from ``weights``, ``means`` and
``stds`` (exposed as ``distribution`` so exact scores are at hand); ``two_moons``,
``swiss_roll``, ``checkerboard`` and ``rings`` draw from the generators in :mod:`scorelab.toy`.

The training set is one tensor ``(n_train, D)`` kept on the accelerator; batches are drawn by
index from it, or, with ``resample=True``, every batch is a fresh draw from the distribution
(``n_train // batch_size`` batches make an epoch). Validation and test batches come from a fixed
held-out sample of ``n_val`` points. All randomness is derived from ``seed`` and the sampler
state ``{seed, epoch, position}`` is part of :meth:`state_dict`.

With ``labels=True`` (``gmm`` only) every batch is ``(x, k)``: the points and the index of the
mixture component each was drawn from, the class label of class-conditional training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from scorelab import toy
from scorelab.data.batches import InMemoryBatches, InMemoryDataModule, derive_seed

TOY_NAMES = ("gmm", "two_moons", "swiss_roll", "checkerboard", "rings")


class ToyDataModule(InMemoryDataModule):
    """Points ``(B, D)`` from a toy distribution.

    Args:
        name: one of ``gmm``, ``two_moons``, ``swiss_roll``, ``checkerboard``, ``rings``.
        n_train: size of the training set (with ``resample``: points per epoch).
        batch_size: points per training batch.
        weights, means, stds: mixture parameters (``gmm`` only): ``(K,)``, ``(K, D)`` and a
            scalar, ``(K,)`` or ``(K, D)``.
        noise: noise level passed to ``two_moons``, ``swiss_roll`` or ``rings`` (their default
            when ``None``).
        resample: draw every training batch fresh instead of from the fixed training set.
        n_val: size of the fixed validation/test sample.
        eval_batch_size: batch size for validation/test (default ``batch_size``).
        seed: base seed of the data and of the batch order.
        device: where the points live (default: the trainer's device, else CPU).
        labels: yield ``(x, component)`` batches (``gmm`` only; the 2-D sets have no classes).
        dim, channels, image_size: accepted so configs can declare them; ``dim`` must match the
            data, ``channels`` and ``image_size`` must be ``None``.
    """

    def __init__(
        self,
        name: str = "gmm",
        n_train: int = 10_000,
        batch_size: int = 128,
        weights: Sequence[float] | None = None,
        means: Sequence[Sequence[float]] | None = None,
        stds: float | Sequence[float] | Sequence[Sequence[float]] | None = None,
        noise: float | None = None,
        resample: bool = False,
        n_val: int = 4000,
        eval_batch_size: int | None = None,
        seed: int = 0,
        device: str | None = None,
        dim: int | None = None,
        channels: int | None = None,
        image_size: int | None = None,
        labels: bool = False,
    ) -> None:
        super().__init__()
        if name not in TOY_NAMES:
            raise ValueError(f"name={name!r} must be one of {list(TOY_NAMES)}")
        if n_train < 1 or n_val < 1:
            raise ValueError(f"n_train={n_train} and n_val={n_val} must be >= 1")
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ValueError(
                f"batch_size={batch_size} and eval_batch_size={eval_batch_size} must be >= 1"
            )
        if batch_size > n_train:
            raise ValueError(f"batch_size={batch_size} exceeds n_train={n_train}; lower it")
        if channels is not None or image_size is not None:
            raise ValueError(
                f"toy data has no channels/image_size, got channels={channels}, "
                f"image_size={image_size}; set both to null"
            )
        if labels and name != "gmm":
            raise ValueError(
                f"data.labels=true needs classes, and {name!r} has none; use data=gmm (labels are "
                "its component indices) or data.labels=false"
            )
        self.name = name
        self.labels = bool(labels)
        self.distribution: toy.GaussianMixture | None = None
        if name == "gmm":
            if weights is None or means is None:
                raise ValueError("name='gmm' needs weights (K,) and means (K, D); got None")
            if noise is not None:
                raise ValueError(f"noise={noise} applies to the 2-D sets, not gmm; set it to null")
            self.distribution = toy.GaussianMixture(weights, means, 1.0 if stds is None else stds)
            data_dim = self.distribution.dim
        else:
            if weights is not None or means is not None or stds is not None:
                raise ValueError(
                    f"weights/means/stds apply to name='gmm' only, not {name!r}; set them to null"
                )
            if noise is not None and name == "checkerboard":
                raise ValueError("checkerboard takes no noise; set noise to null")
            if noise is not None and noise < 0:
                raise ValueError(f"noise={noise} must be >= 0")
            data_dim = 2
        if dim is not None and int(dim) != data_dim:
            raise ValueError(f"dim={dim} contradicts {name!r}, which has dim={data_dim}")
        self.dim, self.channels, self.image_size = data_dim, None, None
        self.scaling = None
        self.data_range = None
        self.n_train, self.n_val, self.batch_size = n_train, n_val, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.noise, self.resample, self.seed, self.device = noise, resample, int(seed), device
        self.num_labels = self.distribution.num_components if self.labels else None
        self.train_data: Tensor | None = None
        self.val_data: Tensor | None = None
        self.train_labels: Tensor | None = None
        self.val_labels: Tensor | None = None

    def sample(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | None = None
    ) -> Tensor:
        """``n`` fresh points ``(n, D)`` (float32) from the distribution."""
        if self.distribution is not None:
            return self.distribution.sample(n, generator=generator, device=device)
        fn: Callable[..., Tensor] = toy.TOY_SETS[self.name]
        kwargs = {} if self.noise is None else {"noise": self.noise}
        return fn(n, generator=generator, **kwargs).to(device=device, dtype=torch.float32)

    def sample_labelled(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | None = None
    ) -> tuple[Tensor, Tensor]:
        """``n`` fresh points ``(n, D)`` and their components ``(n,)`` (``gmm`` only); the points
        are those :meth:`sample` draws from the same generator state."""
        if self.distribution is None:
            raise ValueError(f"{self.name!r} has no components to label its points with")
        return toy.sample_with_components(self.distribution, n, generator=generator, device=device)

    def _draw(self, n: int, generator: torch.Generator, device) -> tuple[Tensor, Tensor | None]:
        if self.labels:
            return self.sample_labelled(n, generator, device)
        return self.sample(n, generator, device), None

    def train_moments(self, max_n: int = 10_000) -> tuple[Tensor, Tensor, float | None]:
        """Per-coordinate mean and variance ``(D,)`` float64 of the training distribution, and
        the number of examples they come from: exact for ``gmm`` (count None), else from
        ``max_n`` points drawn with a fixed seed. Touches no sampler state."""
        if self.distribution is not None:
            mean, var = self.distribution.moments()
            return mean, var, None
        x = self.sample(max_n, torch.Generator().manual_seed(derive_seed(self.seed, 9))).double()
        return x.mean(0), x.var(0), float(max_n)

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is not None:
            return
        device = self._resolve_device()
        self.train_data, self.train_labels = self._draw(
            self.n_train, torch.Generator().manual_seed(derive_seed(self.seed, 0)), device
        )
        self.val_data, self.val_labels = self._draw(
            self.n_val, torch.Generator().manual_seed(derive_seed(self.seed, 1)), device
        )
        train, val = self.train_data, self.val_data
        train_y, val_y = self.train_labels, self.val_labels
        if self.resample:

            def train_batch(i: Tensor, g: torch.Generator):
                # a fresh CPU draw seeded from the device generator's seed keeps it reproducible
                x, y = self._draw(len(i), torch.Generator().manual_seed(g.initial_seed()), device)
                return x if y is None else (x, y)
        else:

            def train_batch(i: Tensor, g: torch.Generator):
                return train[i] if train_y is None else (train[i], train_y[i])

        def val_batch(i: Tensor, g: torch.Generator):
            return val[i] if val_y is None else (val[i], val_y[i])

        val_seed = derive_seed(self.seed, 3)
        self._set_loaders(
            device,
            {
                "train": (self.n_train, train_batch, derive_seed(self.seed, 2)),
                "val": (self.n_val, val_batch, val_seed),
                "test": (self.n_val, val_batch, val_seed),
            },
        )

    def _loader(self, split: str) -> InMemoryBatches:
        if not self._loaders:
            self.setup()
        return self._loaders[split]
