"""Noise-conditional classifiers p_t(y | x_t) for classifier guidance (Song et al. 2021, §5).

:class:`ConvClassifier` (images) and :class:`MLPClassifier` (points) map a perturbed example
and its noise level (``cond`` of the kind ``embedding``, :mod:`scorelab.nets.conditioning`) to
class logits. :class:`NoiseConditionalClassifier` wraps one for the samplers: called with t, it
feeds the network the kind it expects, divides the input by the marginal scale
√(α(t)² σ_d² + std(t)²) (unit variance at every level; the VE process reaches σ = 80) and
returns log-probabilities (B, K).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scorelab.io import CheckpointError, read_checkpoint
from scorelab.nets.conditioning import check_cond_input, check_kind, feed
from scorelab.nets.noise_embedding import (
    FEATURES,
    NoiseConditioned,
    NoiseEmbedding,
    check_positive_ints,
)
from scorelab.nets.unet_small import (
    _ResBlock,
    check_unet_args,
    down_path,
    embed_mlp,
    run_down_path,
)
from scorelab.sde import NoiseProcess, as_sde
from scorelab.utils import append_dims

#: The conditioning kinds a classifier can be fed from the samplers' continuous noise argument.
CLASSIFIER_CONDS = ("sigma", "c_noise", "time", "step")


def _check_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"num_classes={num_classes!r} must be an integer >= 2 (the data's classes: 10 for "
            "MNIST and CIFAR-10, the number of components of a mixture)"
        )
    return num_classes


class ConvClassifier(NoiseConditioned):
    """Image classifier: UNetSmall's down path, global average pooling, a linear head.

    Arguments as for :class:`~scorelab.nets.unet_small.UNetSmall` (``embedding`` one of
    :data:`CLASSIFIER_CONDS`; no labels), and ``num_classes`` K.

    Shapes: x (B, C, H, W), cond (B,) -> logits (B, K).
    """

    def __init__(
        self,
        channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        ch: int = 32,
        ch_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        embedding: str = "sigma",
        embed_features: str = "sinusoidal",
        groups: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        ch_mult = check_unet_args(
            channels, image_size, ch, ch_mult, num_res_blocks, groups, dropout
        )
        self.num_classes = _check_classes(num_classes)
        check_kind("embedding", embedding, CLASSIFIER_CONDS)
        check_kind("embed_features", embed_features, FEATURES)
        self.channels, self.image_size, self.embedding = channels, image_size, embedding
        emb_dim = 4 * ch
        self.embed = NoiseEmbedding(embedding, ch, features=embed_features)
        self.embed_mlp = embed_mlp(ch, emb_dim)
        self.conv_in = nn.Conv2d(channels, ch, 3, padding=1)
        self.blocks, self.downsamples, widths = down_path(
            ch, ch_mult, num_res_blocks, lambda a, b: _ResBlock(a, b, emb_dim, groups, dropout)
        )
        c = widths[-1]
        self.norm_out = nn.GroupNorm(min(groups, c), c)
        self.head = nn.Linear(c, self.num_classes)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.channels, self.image_size, self.image_size):
            raise ValueError(
                f"ConvClassifier expects images (B, {self.channels}, {self.image_size}, "
                f"{self.image_size}), got {tuple(x.shape)}"
            )
        emb = self.embed_mlp(self.embed(cond).to(x.dtype))
        h = run_down_path(self.conv_in(x), emb, self.blocks, self.downsamples, [])
        h = F.silu(self.norm_out(h)).mean(dim=(2, 3))
        return self.head(h)


class MLPClassifier(NoiseConditioned):
    """Point classifier: the noise features concatenated to x, ``n_layers`` SiLU layers of
    width ``hidden``, a linear head.

    Args:
        dim: data dimension D.
        num_classes: K.
        hidden: width of the hidden layers.
        n_layers: number of hidden layers.
        embedding: "sigma" | "c_noise" | "time" | "step" (the network's ``cond_input``).
        embed_dim: width of the noise features.
        embed_features: "sinusoidal" | "fourier".

    Shapes: x (B, D), cond (B,) -> logits (B, K).
    """

    def __init__(
        self,
        dim: int = 2,
        num_classes: int = 2,
        hidden: int = 64,
        n_layers: int = 2,
        embedding: str = "time",
        embed_dim: int = 32,
        embed_features: str = "fourier",
    ) -> None:
        super().__init__()
        check_positive_ints(dim=dim, hidden=hidden, n_layers=n_layers)
        self.num_classes = _check_classes(num_classes)
        check_kind("embedding", embedding, CLASSIFIER_CONDS)
        check_kind("embed_features", embed_features, FEATURES)
        self.dim, self.embedding = dim, embedding
        self.embed = NoiseEmbedding(embedding, embed_dim, features=embed_features)
        widths = [dim + embed_dim] + [hidden] * n_layers
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, self.num_classes)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"MLPClassifier expects points (B, {self.dim}), got {tuple(x.shape)}")
        h = torch.cat([x, self.embed(cond).to(x.dtype)], dim=1)
        return self.head(self.body(h))


class NoiseConditionalClassifier(nn.Module):
    """log p_t(y | x) from a classifier network, in the samplers' noise argument.

    Args:
        net: ``net(x, cond) -> logits (B, K)`` with a ``cond_input`` and ``num_classes``.
        noise: the noise process the classifier is trained on (an SDE: callers pass t).
        net_cond: the kind of ``cond`` fed to ``net`` (its ``cond_input``): "sigma" (σ(t),
            the VE-equivalent level std/α), "c_noise" (¼ ln σ), "time" (t) or "step" (999·t).
        sigma_data: the data's standard deviation σ_d; the input is divided by
            √(α² σ_d² + std²), the marginal scale at t (0: no scaling).

    ``forward(x, t)`` -> log-probabilities (B, K); :meth:`logits` the raw logits.
    """

    def __init__(
        self,
        net: nn.Module,
        noise: NoiseProcess,
        *,
        net_cond: str = "sigma",
        sigma_data: float = 0.5,
    ) -> None:
        super().__init__()
        check_kind("net_cond", net_cond, CLASSIFIER_CONDS)
        check_cond_input(net, net_cond, "NoiseConditionalClassifier")
        if not float(sigma_data) >= 0:
            raise ValueError(
                f"sigma_data={sigma_data} must be >= 0 (the data's standard deviation; 0.5 for "
                "images in [-1, 1], 0 turns the input scaling off)"
            )
        k = getattr(net, "num_classes", None)
        if k is None:
            raise ValueError(f"{type(net).__name__} says nothing of its num_classes")
        self.net, self.noise = net, noise
        self.net_cond, self.sigma_data = net_cond, float(sigma_data)
        self.num_classes = int(k)

    def net_input(self, t: Tensor) -> Tensor:
        """The ``cond`` (B,) fed to the network at noise argument ``t`` (B,)."""
        return feed(self.net_cond, t, self.noise.sigma(t))

    def logits(self, x: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        h = x
        if self.sigma_data > 0:
            alpha, std = self.noise.marginal_coeffs(t)
            scale = torch.sqrt((alpha * self.sigma_data) ** 2 + std**2)
            h = x / append_dims(scale.to(x.dtype), x.ndim)
        dtype = next(self.net.parameters()).dtype  # float64 states (the oracle's) cast down
        return self.net(h.to(dtype), self.net_input(t))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.log_softmax(self.logits(x, t).float(), dim=1).to(x.dtype)


def classifier_from_config(config: dict) -> NoiseConditionalClassifier:
    """The classifier a run's resolved ``config`` describes (``model.net``,
    ``model.classifier``, ``sde``), with fresh weights."""
    from hydra.utils import instantiate

    noise = instantiate(config["sde"])
    as_sde(noise, "a noise-conditional classifier needs an SDE (sde=ve, vp, subvp or edm)")
    c = config["model"]["classifier"] or {}
    return NoiseConditionalClassifier(
        instantiate(config["model"]["net"]),
        noise,
        net_cond=c.get("net_cond", "sigma"),
        sigma_data=c.get("sigma_data", 0.5),
    )


def load_classifier(
    path: str | Path, *, what: str = "task.classifier"
) -> tuple[NoiseConditionalClassifier, dict]:
    """(classifier with the EMA weights, in eval mode; the run's config) of the checkpoint at
    ``path``, written by a classifier run (:mod:`scorelab.lit.classifier`). Refused in one line
    naming ``what``: a missing or unreadable file, or the checkpoint of something else."""
    p = Path(str(path))
    if not p.is_file():
        raise CheckpointError(
            f"{what}={path} is not a file; give the checkpoint of a classifier run (e.g. "
            "logs/train/runs/experiment-mnist_classifier/checkpoints/last.ckpt)"
        )
    try:
        ckpt = read_checkpoint(p, mmap=True)
    except CheckpointError as err:
        raise CheckpointError(f"{what}={path}: {err}") from None
    config = ckpt.get("scorelab_config") or {}
    if not (config.get("model") or {}).get("classifier"):
        raise CheckpointError(
            f"{what}={path} is not a classifier checkpoint (its config has no "
            "model.classifier); give the checkpoint of a classifier run (python -m "
            "scorelab.train experiment=mnist_classifier)"
        )
    try:
        classifier = classifier_from_config(config)
    except Exception as err:  # noqa: BLE001 - a config this version cannot build, in one line
        raise CheckpointError(f"{what}={path}: cannot rebuild its classifier ({err})") from None
    prefix = "ema.module."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        classifier.load_state_dict(state)
    except RuntimeError:
        raise CheckpointError(
            f"{what}={path}: its weights do not fit the classifier in its own config; use "
            "another checkpoint of that run, or retrain"
        ) from None
    classifier.eval().requires_grad_(False)
    return classifier, config
