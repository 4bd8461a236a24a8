"""Training a noise-conditional classifier p_t(y | x_t) for classifier guidance.

``python -m scorelab.train experiment=mnist_classifier`` (or any run with ``model=classifier``
for images, ``model=classifier_mlp`` for points, and ``data.labels=true``) trains
:class:`ClassifierModule`: each labelled batch (x_0, y) is perturbed by the forward process,
x_t = α(t) x_0 + std(t) z with t ~ U(eps, T) (eps: the samplers' smallest time unless
``model.classifier.eps`` says otherwise), and the loss is the cross-entropy of y under the
classifier at (x_t, t) (Song et al. 2021, §5 and Appendix I). Validation reports the loss and
the accuracy, over all levels and per noise bucket (``val/acc_<bucket>``).
:func:`scorelab.nets.noise_classifier.load_classifier` rebuilds the classifier (its EMA weights)
for ``python -m scorelab.sample ... task=class task.classifier=PATH``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torchmetrics import MeanMetric

from scorelab.lit.build import (
    ConfigError,
    as_config,
    build,
    build_noise,
    build_optimizer,
    data_shape,
    refused,
    resolve_sigma_max,
    to_plain,
)
from scorelab.lit.module import EMATrainingModule, unpack_batch, unpack_labels
from scorelab.nets.noise_classifier import NoiseConditionalClassifier
from scorelab.sde import as_sde
from scorelab.utils import append_dims

#: The ``module.*`` keys a classifier run reads; the score modules' others do not apply.
MODULE_KEYS = ("warmup_steps", "lr_decay", "grad_clip", "ema_decay", "val_buckets")


def is_classifier_config(cfg: DictConfig | dict) -> bool:
    """Whether the config's model is a noise-conditional classifier (``model.classifier``)."""
    model = cfg.get("model") or {}
    return model.get("classifier") is not None


class ClassifierModule(EMATrainingModule):
    """Trains ``classifier`` by cross-entropy on perturbed labelled data; keeps an EMA copy.

    Args (besides those of :class:`~scorelab.lit.module.EMATrainingModule`):
        classifier: a :class:`NoiseConditionalClassifier` (its ``noise`` is the SDE).
        eps: the smallest training time (null: the SDE's ``sampling_eps``).
        val_buckets: number of equal parts of the time range for ``val/acc_<bucket>``.
    """

    net_attr = "classifier"
    progress_keys = ("val/loss", "val/acc")

    def __init__(
        self,
        classifier: NoiseConditionalClassifier,
        optimizer,
        *,
        eps: float | None = None,
        **common: Any,
    ) -> None:
        super().__init__(classifier, optimizer, **common)
        sde = as_sde(classifier.noise, "a noise-conditional classifier is trained on an SDE")
        eps = float(sde.sampling_eps if eps is None else eps)
        if not 0 < eps < sde.T:
            raise ValueError(
                f"model.classifier.eps={eps} must be in (0, T) = (0, {sde.T:g}); use null "
                "(the samplers' smallest time)"
            )
        self.sde, self.eps = sde, eps
        self.sampler = None  # what the training entry point reads of a module
        self.val_loss, self.val_acc = MeanMetric(), MeanMetric()
        self.val_bucket_acc = nn.ModuleList(MeanMetric() for _ in range(self.val_buckets))

    # The score model's view, for code that reads ``module.model`` (its ``noise``).
    @property
    def model(self) -> NoiseConditionalClassifier:
        return self.classifier

    def perturb(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(x_t, t): t ~ U(eps, T) per example, x_t from the forward marginal at t."""
        t = self.eps + (self.sde.T - self.eps) * torch.rand(x.shape[0], device=x.device)
        mean, std = self.sde.marginal_prob(x, t)
        return mean + append_dims(std, x.ndim).to(x.dtype) * torch.randn_like(x), t

    def _labels(self, batch: Any) -> Tensor:
        y = unpack_labels(batch)
        if y is None:
            raise ValueError(
                "a classifier trains on labelled batches, but this batch has none; set "
                "data.labels=true"
            )
        k = self.classifier.num_classes
        if bool(((y < 0) | (y >= k)).any()):
            raise ValueError(
                f"labels in [{int(y.min())}, {int(y.max())}] do not fit the classifier's "
                f"{k} classes; set model.net.num_classes to the data's number of classes"
            )
        return y.long()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, _ = unpack_batch(batch)
        y = self._labels(batch)
        opt, sched = self.optimizers(), self.lr_schedulers()
        opt.zero_grad(set_to_none=True)
        xt, t = self.perturb(x)
        logits = self.classifier.logits(xt, t)
        loss = F.cross_entropy(logits.float(), y)
        self.manual_backward(loss)
        grad_norm = self._clip_gradients()
        if bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):
            self._step(opt, sched)
        else:  # neither the weights, the optimizer nor the EMA move
            opt.zero_grad(set_to_none=True)
            self.skipped_steps += 1
        acc = (logits.detach().argmax(1) == y).float().mean()
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        self.log("train/acc", acc, on_step=True, on_epoch=False)
        self.log("train/lr", sched.get_last_lr()[0], on_step=True, on_epoch=False)
        return loss.detach()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, _ = unpack_batch(batch)
        y = self._labels(batch)
        xt, t = self.perturb(x)
        logits = self.ema.module.logits(xt, t).float()
        self.val_loss.update(F.cross_entropy(logits, y, reduction="none"))
        right = (logits.argmax(1) == y).float()
        self.val_acc.update(right)
        self._update_buckets(self.val_bucket_acc, right, t)

    def _val_metrics(self) -> dict[str, MeanMetric]:
        names = [f"val/acc_{name}" for name in self.bucket_names()]
        metrics = {"val/loss": self.val_loss, "val/acc": self.val_acc}
        return {**metrics, **dict(zip(names, self.val_bucket_acc, strict=True))}


def build_classifier(cfg: DictConfig | dict, noise=None) -> NoiseConditionalClassifier:
    """The :class:`NoiseConditionalClassifier` of a config (``model.net``, ``model.classifier``)."""
    cfg = as_config(cfg)
    noise = build_noise(cfg) if noise is None else noise
    as_sde(noise, "a noise-conditional classifier needs an SDE (sde=ve, vp, subvp or edm)")
    net = build(cfg.model.net, "model.net")
    c = OmegaConf.to_container(cfg.model.classifier, resolve=True)
    with refused("model.classifier"):
        return NoiseConditionalClassifier(
            net, noise, net_cond=c.get("net_cond", "sigma"), sigma_data=c.get("sigma_data", 0.5)
        )


def build_classifier_module(cfg: DictConfig) -> ClassifierModule:
    """The :class:`ClassifierModule` of a training config; bad values refused in one line."""
    if not (cfg.get("data") or {}).get("labels", False):
        raise ConfigError(
            "a classifier (model.classifier) trains on labels, but data.labels=false; set "
            "data.labels=true (MNIST, CIFAR-10: the class; gmm: the component)"
        )
    cfg = resolve_sigma_max(cfg)
    classifier = build_classifier(cfg)
    opt = build_optimizer(cfg.optimizer)
    module_cfg = OmegaConf.to_container(cfg.get("module") or {}, resolve=True)
    kwargs = {k: module_cfg[k] for k in MODULE_KEYS if k in module_cfg}
    with refused("module"):
        return ClassifierModule(
            classifier,
            opt,
            eps=cfg.model.classifier.get("eps"),
            data_shape=data_shape(cfg),
            seed=int(cfg.get("seed", 0)),
            config=to_plain(cfg),
            **kwargs,
        )
