"""Class-conditional scores and classifier-free guidance (Ho & Salimans 2022).

A class-conditional network (``model.net.num_labels = K``) is trained on ``(x, y)`` batches with
each label replaced by the null label ∅ (index K) with probability ``module.label_dropout``, so
one network learns both the conditional score s(x, t, y) and the unconditional s(x, t, ∅).
At sampling time the guided score

    s_w(x, t) = (1 + w) s(x, t, y) − w s(x, t, ∅)

with guidance weight w (w = 0: the plain conditional score) is handed to any sampler:
:class:`GuidedScore` speaks the interface the sampler drivers read (``noise``,
``time_score()``, ``sigma_score()``, ``data_moments``). Since the combination is linear in the
score, its σ view is the same combination of the σ views.

:class:`MixtureClassOracle` is the exact conditional score of a Gaussian mixture, with the
components as classes: label k gives component k's perturbed score, ∅ the mixture's.

Command line: ``python -m scorelab.sample ckpt_path=... guidance.label=K guidance.weight=W``.

Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself")
needs no labels: the model is guided away from a weaker model of the same data and noise
process, typically an earlier snapshot of the same run (``callbacks.guide_snapshot``):

    s_w(x, t) = (1 + w) s(x, t) − w s_guide(x, t)

:class:`AutoGuidedScore`; ``guidance.guide_ckpt=PATH guidance.weight=W``
(:func:`scorelab.lit.sampling_model.apply_guidance` loads the guide). The paper writes the
same combination of denoisers as D_0 + w'(D_1 − D_0), so its w' is 1 + w here.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from scorelab.nets.precond import ScoreViews
from scorelab.sde import NoiseProcess


class GuidanceError(ValueError):
    """A guidance or label setting that cannot work; the message is one line with the fix."""


def label_count(model: Any) -> int | None:
    """The number of classes K a score model is conditioned on, or None if unconditional."""
    k = getattr(model, "num_labels", None)
    if k is None:
        k = getattr(getattr(model, "net", None), "num_labels", None)
    return None if k is None else int(k)


def check_label(label: Any, num_labels: int | None, what: str = "guidance.label") -> int:
    """``label`` as an int in [0, num_labels), refused in one line otherwise."""
    if num_labels is None:
        raise GuidanceError(
            f"{what}={label} needs a class-conditional model, and this one was trained without "
            "labels (model.net.num_labels=null); train with data.labels=true "
            "model.net.num_labels=K, or drop the guidance.* keys"
        )
    ok = isinstance(label, int) and not isinstance(label, bool)
    if not ok or not 0 <= label < num_labels:
        raise GuidanceError(
            f"{what}={label!r} must be an integer in [0, {num_labels}) (the model's classes); "
            f"pick one of 0..{num_labels - 1}"
        )
    return int(label)


def check_weight(weight: Any) -> float:
    """The guidance weight w as a finite float >= 0."""
    ok = isinstance(weight, int | float) and not isinstance(weight, bool)
    if not ok or not (0.0 <= float(weight) < math.inf):
        raise GuidanceError(
            f"guidance.weight={weight!r} must be a finite number >= 0 (0: the plain conditional "
            "score; 1 to 4 are usual); set e.g. guidance.weight=1.0"
        )
    return float(weight)


def check_label_dropout(p: Any) -> float:
    """``module.label_dropout`` as a float in [0, 1)."""
    ok = isinstance(p, int | float) and not isinstance(p, bool)
    if not ok or not 0.0 <= float(p) < 1.0:
        raise GuidanceError(
            f"module.label_dropout={p!r} must be in [0, 1) (the chance a training label is "
            "replaced by 'no label'; 0.1 is usual, 0 trains no unconditional score)"
        )
    return float(p)


def data_class_count(data: dict) -> int | None:
    """How many values the labels of a data config take (MNIST and CIFAR-10: 10; ``data=gmm``:
    its components), or None where the config does not say."""
    target = str(data.get("_target_", ""))
    if target.endswith(("MNISTDataModule", "CIFAR10DataModule")):
        return 10
    if data.get("name") == "gmm" and data.get("weights") is not None:
        return len(data["weights"])
    return None


def check_label_config(config: dict | None) -> None:
    """``data.labels`` and ``model.net.num_labels`` must agree: labels on need a network with
    a label embedding, and a label embedding needs labels to train it."""
    if not config:
        return
    data = config.get("data") or {}
    net = (config.get("model") or {}).get("net") or {}
    labels = bool(data.get("labels", False))
    num = net.get("num_labels") if isinstance(net, dict) else None
    if labels and num is None:
        raise GuidanceError(
            "data.labels=true but model.net.num_labels=null, so the network cannot see the "
            "labels; set model.net.num_labels to the number of classes (gmm: its number of "
            "components; mnist, cifar10: 10), or data.labels=false"
        )
    classes = data_class_count(data)
    if labels and isinstance(num, int) and classes is not None and num < classes:
        raise GuidanceError(
            f"model.net.num_labels={num} but the data's labels take {classes} values, so labels "
            f"{num}..{classes - 1} would fall outside the label embedding; set "
            f"model.net.num_labels={classes}"
        )
    if num is not None and not labels:
        raise GuidanceError(
            f"model.net.num_labels={num} but data.labels=false, so the label embedding would "
            "never see a class; set data.labels=true, or model.net.num_labels=null"
        )


def drop_labels(
    label: Tensor, p: float, null_label: int, generator: torch.Generator | None = None
) -> Tensor:
    """``label`` (B,) with each entry replaced by ``null_label`` with probability ``p``."""
    if p <= 0:
        return label
    u = torch.rand(label.shape, device=label.device, generator=generator)
    return torch.where(u < p, torch.full_like(label, null_label), label)


class _GuidedViews(ScoreViews):
    """A guided score around ``self.model``: its noise process and data moments are the
    model's, so the samplers read it like the model."""

    model: nn.Module

    @property
    def noise(self) -> NoiseProcess:
        return self.model.noise

    @property
    def data_moments(self):
        return getattr(self.model, "data_moments", None)


class GuidedScore(_GuidedViews):
    """s_w(x, t) = (1 + w) s(x, t, y) − w s(x, t, ∅) of a class-conditional score model.

    Args:
        model: a score model whose forward takes ``label=`` (a class-conditional
            :class:`~scorelab.nets.precond.ScoreModel`, or :class:`MixtureClassOracle`).
        label: the class y, an int in [0, K).
        weight: the guidance weight w >= 0.
    """

    def __init__(self, model: nn.Module, label: int, weight: float = 0.0) -> None:
        super().__init__()
        self.num_labels = label_count(model)
        self.label = check_label(label, self.num_labels)
        self.weight = check_weight(weight)
        self.model = model

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        y = torch.full((x.shape[0],), self.label, dtype=torch.long, device=x.device)
        if self.weight == 0.0:
            return self.model(x, noise, label=y)
        # one network call on the doubled batch: the label for the first half, null for the second
        null = torch.full_like(y, self.num_labels)
        noise = noise.expand(x.shape[0]) if noise.ndim == 0 else noise
        both = self.model(torch.cat([x, x]), torch.cat([noise, noise]), label=torch.cat([y, null]))
        cond, uncond = both.chunk(2)
        return (1.0 + self.weight) * cond - self.weight * uncond

    def describe(self) -> dict:
        return {"label": self.label, "weight": self.weight, "num_labels": self.num_labels}


def guided(model: nn.Module, guidance: Any) -> nn.Module:
    """``model`` with the ``guidance`` config node (``label``, ``weight``) applied; unchanged
    when ``guidance`` or its label is null. Refuses bad settings before any sampling."""
    if guidance is None:
        return model
    label, weight = guidance.get("label"), guidance.get("weight", 0.0)
    if label is None:
        if weight not in (None, 0, 0.0):
            raise GuidanceError(
                f"guidance.weight={weight} needs a class: set guidance.label=K (an integer in "
                "[0, K) for a model trained with labels)"
            )
        return model
    from scorelab.nets.precond import OracleScoreModel

    if isinstance(model, OracleScoreModel):  # the exact oracle: its components are the classes
        model = MixtureClassOracle(model.mixture, model.noise)
    return GuidedScore(model, label, 0.0 if weight is None else weight)


def describe_guidance(model: Any) -> dict | None:
    """The guidance a sampling model applies (for sample_info.json), or None."""
    return model.describe() if isinstance(model, GuidedScore | AutoGuidedScore) else None


class AutoGuidedScore(_GuidedViews):
    """s_w(x, t) = (1 + w) s(x, t) − w s_guide(x, t): autoguidance (Karras et al. 2024).

    Args:
        model: the score model to sample.
        guide: a weaker score model of the same data and noise process (an earlier snapshot
            of the same run, or a smaller network); its noise argument must mean the same.
        weight: the guidance weight w >= 0 (0: the model alone; the paper's w' is 1 + w).
        source: where the guide came from, for :meth:`describe`.
    """

    def __init__(self, model: nn.Module, guide: nn.Module, weight: float, source: str = "") -> None:
        super().__init__()
        self.weight = check_weight(weight)
        self.model, self.guide, self.source = model, guide, source

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        if self.weight == 0.0:
            return self.model(x, noise)
        return (1.0 + self.weight) * self.model(x, noise) - self.weight * self.guide(x, noise)

    def describe(self) -> dict:
        # the sampler's NFE counts calls of this model; each call runs both networks
        calls = 1 if self.weight == 0.0 else 2
        return {
            "kind": "autoguidance",
            "guide_ckpt": self.source,
            "weight": self.weight,
            "network_calls_per_evaluation": calls,
        }


def _space(config: dict) -> dict:
    """What a guide must share with the model: the noise process and the data's space."""
    data = config.get("data") or {}
    return {
        "sde": config.get("sde"),
        "data": {k: data.get(k) for k in ("_target_", "name", "scaling", "image_size", "dim")},
    }


def check_guide_fits(main: dict, guide: dict, guide_path: str) -> None:
    """The guide's config must share the main model's noise process and data space (same
    ``sde``, same data module, scaling and size), so both read the same noise argument and
    the same x; refused in one line otherwise."""
    a, b = _space(main), _space(guide)
    for group in ("sde", "data"):
        ga, gb = a[group] or {}, b[group] or {}
        diff = sorted(k for k in set(ga) | set(gb) if ga.get(k) != gb.get(k))
        if diff:
            raise GuidanceError(
                f"guidance.guide_ckpt={guide_path} was trained with another {group} than the "
                f"model (differing: {', '.join(f'{group}.{k}' for k in diff)}); the guide must "
                "share the model's data and noise process: use an earlier checkpoint of the "
                "same run (callbacks.guide_snapshot)"
            )


class MixtureClassOracle(ScoreViews):
    """The exact class-conditional score of a Gaussian mixture, components as classes.

    ``forward(x, noise, label=None)``: per row, label k in [0, K) gives component k's perturbed
    score ∇ log N(x; α μ_k, α² s_k² + std²); the null label K (or ``label=None``) gives the
    mixture's score. Same sampler interface as :class:`~scorelab.nets.precond.OracleScoreModel`.
    """

    def __init__(self, mixture, noise: NoiseProcess) -> None:
        super().__init__()
        self.mixture = mixture
        self.noise = noise
        self.num_labels = mixture.num_components
        self.register_buffer("_anchor", torch.zeros(()))

    @property
    def data_moments(self):
        from scorelab.sampling.start import DataMoments

        mean, var = self.mixture.moments()
        return DataMoments.of(mean.float(), var.float(), None)

    def forward(self, x: Tensor, noise: Tensor, *, label: Tensor | None = None) -> Tensor:
        from scorelab.toy import component_score_perturbed

        flat = x.reshape(x.shape[0], self.mixture.dim)
        alpha, std = self.noise.marginal_coeffs(noise)
        mix = self.mixture.score_perturbed(flat, alpha, std)
        if label is None:
            return mix.reshape(x.shape)
        label = torch.as_tensor(label, device=x.device).long().expand(x.shape[0])
        is_null = label == self.num_labels
        comp = component_score_perturbed(
            self.mixture, flat, label.clamp(max=self.num_labels - 1), alpha, std
        )
        return torch.where(is_null[:, None], mix, comp).reshape(x.shape)
