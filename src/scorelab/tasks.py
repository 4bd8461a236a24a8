"""Controllable generation from ``python -m scorelab.sample``: the ``task`` config group.

``task=none`` samples unconditionally. ``task=inpaint`` imputes: for points the coordinates
``task.known_dims`` are fixed to ``task.known_values``; for images the pixels of ``task.mask``
(``center``, ``left_half``, ``random`` with ``task.fraction`` and ``task.mask_seed``, or a .npy /
.png file, nonzero = known) come from the test split. ``task=class`` samples class
``task.label`` with classifier guidance of scale ``task.scale``: the noise-conditional
classifier of the checkpoint ``task.classifier`` (:mod:`scorelab.lit.classifier`), or, without
one, the exact one of an analytic mixture (``model=oracle data=gmm``, label = component index).

:func:`build_task` checks the request against the model and data and refuses bad input in one
line before any sampling. The returned :class:`Task` wraps the sampler (predictor–corrector
drivers only) and draws the figure of input, samples and ground truth.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from scorelab.plots import save_figure

MASKS = ("center", "left_half", "random")
_PC_SAMPLERS = "sampler=pc, em, reverse_diffusion or ancestral"


# ----------------------------------------------------------------------------------------------
# Masks and known values
# ----------------------------------------------------------------------------------------------


def image_mask(
    spec: str, shape: tuple[int, ...], *, fraction: float = 0.5, seed: int = 0
) -> Tensor:
    """A bool mask of one image's shape (C, H, W), True = known pixel.

    ``center``: everything but the central square of half the side is known; ``left_half``: the
    left half is known; ``random``: each pixel (all its channels) known with probability
    ``fraction``, drawn from ``seed``; otherwise a path to a .npy or .png file of shape (H, W)
    or (C, H, W), nonzero = known.
    """
    c, h, w = shape
    if spec == "center":
        m = torch.ones(h, w, dtype=torch.bool)
        m[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2] = False
    elif spec == "left_half":
        m = torch.zeros(h, w, dtype=torch.bool)
        m[:, : w // 2] = True
    elif spec == "random":
        if not 0 < fraction < 1:
            raise ValueError(
                f"task.fraction={fraction} must be in (0, 1): the share of known pixels"
            )
        g = torch.Generator().manual_seed(int(seed))
        m = torch.rand(h, w, generator=g) < fraction
    else:
        m = _mask_file(spec, shape)
    if m.ndim == 2:
        m = m[None].expand(c, h, w)
    return m.contiguous()


def _mask_file(spec: str, shape: tuple[int, ...]) -> Tensor:
    path = Path(spec)
    if path.suffix.lower() not in (".npy", ".png") or not path.is_file():
        raise ValueError(
            f"task.mask={spec!r} is neither one of {', '.join(MASKS)} nor an existing .npy or "
            ".png file; pick a built-in mask or give the path of a mask file"
        )
    if path.suffix.lower() == ".npy":
        arr = torch.as_tensor(np.load(path))
    else:
        from PIL import Image

        arr = torch.as_tensor(np.asarray(Image.open(path).convert("L")))
    c, h, w = shape
    if tuple(arr.shape) not in ((h, w), (c, h, w)):
        raise ValueError(
            f"task.mask={spec} has shape {tuple(arr.shape)}, but one image is {tuple(shape)}; "
            f"give a mask of shape ({h}, {w}) or {tuple(shape)} (nonzero = known)"
        )
    return arr != 0


def point_mask(known_dims, known_values, dim: int) -> tuple[Tensor, Tensor]:
    """(mask (D,) bool, known (D,) float64) for points: ``known_dims`` fixed to
    ``known_values``."""
    if known_dims is None or known_values is None:
        raise ValueError(
            "task=inpaint on points needs task.known_dims and task.known_values, e.g. "
            "task.known_dims=[0] task.known_values=[1.5]"
        )
    dims, values = list(known_dims), list(known_values)
    if len(dims) != len(values):
        raise ValueError(
            f"task.known_dims={dims} and task.known_values={values} must have the same length "
            f"(one value per known coordinate); got {len(dims)} and {len(values)}"
        )
    if not dims:
        raise ValueError("task.known_dims=[] fixes nothing; give at least one coordinate")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < dim:
            raise ValueError(
                f"task.known_dims has {d!r}, but coordinates are integers in [0, {dim}) for "
                f"this {dim}-D data; pick indices in that range"
            )
    if len(set(dims)) != len(dims):
        raise ValueError(f"task.known_dims={dims} repeats a coordinate; list each once")
    if len(dims) == dim:
        raise ValueError(
            f"task.known_dims={dims} fixes all {dim} coordinates: nothing is left to sample; "
            "leave at least one out"
        )
    try:
        vals = torch.tensor([float(v) for v in values], dtype=torch.float64)
    except (TypeError, ValueError):
        raise ValueError(f"task.known_values={values} must be numbers") from None
    if not bool(torch.isfinite(vals).all()):
        raise ValueError(f"task.known_values={values} must be finite numbers")
    mask = torch.zeros(dim, dtype=torch.bool)
    known = torch.zeros(dim, dtype=torch.float64)
    mask[dims] = True
    known[dims] = vals
    return mask, known


def observed_images(meta: dict, n: int) -> Tensor:
    """The first ``n`` images of the data's test split in the model's range (no dequantisation,
    no flip), (n, C, H, W); the split is cycled if it has fewer."""
    from hydra.utils import instantiate

    from scorelab.data import DATA_META_KEYS
    from scorelab.data.images import to_float

    node = OmegaConf.to_container(OmegaConf.create(meta["data"]), resolve=True)
    dm = instantiate({k: v for k, v in node.items() if k not in DATA_META_KEYS})
    if callable(getattr(dm, "check_files", None)):  # missing files: one line naming the fix
        dm.check_files()
    source = dm.source("test")
    idx = torch.arange(n) % source.n
    return to_float(source.images(idx), scaling=dm.scaling, dequantize=False, random_flip=False)


# ----------------------------------------------------------------------------------------------
# Exact answers of a Gaussian mixture with diagonal components
# ----------------------------------------------------------------------------------------------


def mixture_conditional_samples(
    mixture, mask: Tensor, known: Tensor, n: int, generator: torch.Generator
) -> Tensor:
    """n exact samples of x | x[mask] = known[mask], (n, D) float64: the components reweighted
    by w_k Π_{d known} N(known_d; μ_kd, s_kd²); the unknown coordinates drawn from the chosen
    component (diagonal, so independent of the known ones)."""
    mu, s = mixture.means, mixture.stds
    z = (known[mask][None] - mu[:, mask]) / s[:, mask]
    logw = torch.log(mixture.weights) - (0.5 * z**2 + torch.log(s[:, mask])).sum(1)
    k = torch.multinomial(torch.softmax(logw, 0), n, replacement=True, generator=generator)
    x = mu[k] + s[k] * torch.randn(n, mixture.dim, generator=generator, dtype=torch.float64)
    x[:, mask] = known[mask]
    return x


def mixture_component_samples(mixture, k: int, n: int, generator: torch.Generator) -> Tensor:
    """n exact samples of component ``k``, (n, D) float64."""
    z = torch.randn(n, mixture.dim, generator=generator, dtype=torch.float64)
    return mixture.means[k] + mixture.stds[k] * z


# ----------------------------------------------------------------------------------------------
# The task: a wrapped sampler and its figure
# ----------------------------------------------------------------------------------------------


class Task:
    """A conditional request: ``sampler`` replaces the driver in the draw; ``figure`` writes
    the picture of input, samples and ground truth."""

    def __init__(self, name: str, driver, info: dict) -> None:
        self.name, self.driver, self.info = name, driver, info
        self.known: Tensor | None = None  # (n, ...) or (...) observed values, model range
        self.mask: Tensor | None = None
        self.guidance: Callable | None = None  # fn(score_fn) -> guided score_fn
        self.truth: Tensor | None = None  # ground-truth points or original images
        self.data: Tensor | None = None  # unconditional data points, drawn behind a scatter
        self._offset = 0

    def describe(self) -> dict:
        return {**self.driver.describe(), "task": {"name": self.name, **self.info}}

    def __call__(self, model, shape, *, device="cpu", generator=None, progress=False):
        """Draw one batch of ``shape`` as the driver would, conditioned."""
        if self.guidance is not None:
            return self.driver(
                _Guided(model, self.guidance),
                shape,
                device=device,
                generator=generator,
                progress=progress,
            )
        return self._impute(model, shape, device, generator, progress)

    def _impute(self, model, shape, device, generator, progress):
        from scorelab.sampling.conditional import pc_colorize, pc_impute

        known = self.known
        if known.ndim == len(shape):  # one observation per sample (shape is the batch), in order
            known = known[self._offset : self._offset + shape[0]]
            self._offset += shape[0]
        known = known.to(device)  # the samplers cast it to the state's dtype
        if self.name == "colorize":  # the grey level known, the colour axes sampled
            sample, given = pc_colorize, {"grey": known.mean(dim=known.ndim - 3)}
        else:
            sample, given = pc_impute, {"known": known, "mask": self.mask.to(device)}
        return self.driver(
            model, shape, device=device, generator=generator, progress=progress, sample=sample,
            **given,
        )  # fmt: skip

    def figure(self, x: Tensor, out: Path, to_unit: Callable[[Tensor], Tensor]) -> Path:
        """``task_scatter.png`` (points: samples over the exact answer) or ``task_grid.png``
        (images: rows of masked input, samples, original)."""
        if x.ndim == 4:
            return self._grid(x, out, to_unit)
        return self._scatter(x, out)

    def _scatter(self, x: Tensor, out: Path) -> Path:
        """Class: samples over exact samples of the component, on the data. Inpaint: the samples
        on the data (left) and a histogram of the first free coordinate against the exact
        conditional's (right)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        p = x.reshape(len(x), -1).double()
        inpaint = self.name == "inpaint"
        fig, axes = plt.subplots(1, 2 if inpaint else 1, figsize=(9 if inpaint else 4.5, 4.5))
        ax = axes[0] if inpaint else axes
        if self.data is not None:
            b = self.data[:, :2].numpy()
            ax.scatter(b[:, 0], b[:, 1], s=2, alpha=0.3, c="tab:gray", label="data")
        if self.truth is not None and not inpaint:
            b = self.truth[:, :2].numpy()
            ax.scatter(b[:, 0], b[:, 1], s=2, alpha=0.4, c="tab:orange", label="exact p(x | label)")
        ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.6, c="tab:blue", label="samples")
        ax.set_aspect("equal")
        ax.legend(loc="upper left", fontsize=7, markerscale=4)
        if not inpaint:
            ax.set_title(
                f"task=class: label {self.info['label']}, scale {self.info['scale']:g}",
                fontsize=9,
            )
        else:
            pairs = list(zip(self.info["known_dims"], self.info["known_values"], strict=True))
            for d, v in pairs:
                if d < 2:
                    (ax.axvline if d == 0 else ax.axhline)(v, c="tab:red", lw=0.8, ls="--")
            given = ", ".join(f"x{d} = {v:g}" for d, v in pairs)
            ax.set_title(f"task=inpaint: {given}", fontsize=9)
            free = next(d for d in range(p.shape[1]) if d not in self.info["known_dims"])
            h, ours = axes[1], p[:, free]
            theirs = None if self.truth is None else self.truth[:, free]
            both = ours if theirs is None else torch.cat([ours, theirs])
            kw = {"bins": np.linspace(float(both.min()), float(both.max()), 61), "density": True}
            if theirs is not None:
                h.hist(theirs.numpy(), **kw, color="tab:gray", alpha=0.5, label="exact conditional")
            h.hist(ours.numpy(), **kw, histtype="step", color="tab:blue", label="samples")
            h.set_xlabel(f"x{free} given {given}", fontsize=9)
            h.legend(fontsize=7)
        fig.tight_layout()
        path = save_figure(fig, out / "task_scatter.png", dpi=100)
        plt.close(fig)
        return path

    def _grid(self, x: Tensor, out: Path, to_unit: Callable[[Tensor], Tensor]) -> Path:
        from torchvision.utils import make_grid, save_image

        from scorelab.io import atomic_output

        k = min(8, len(x))
        rows = [x[:k].clamp(0, 1)]
        if self.truth is not None:
            orig = to_unit(self.truth[:k].float()).clamp(0, 1)
            if self.name == "colorize":  # the grey input, shown in every channel
                given = orig.mean(1, keepdim=True).expand_as(orig)
            else:
                given = torch.where(self.mask[None], orig, torch.full_like(orig, 0.5))
            rows = [given, rows[0], orig]
        path = out / "task_grid.png"
        with atomic_output(path) as tmp:
            save_image(make_grid(torch.cat(rows), nrow=k, padding=2, pad_value=1.0), tmp)
        return path


class _Guided:
    """A model view whose time score carries classifier guidance."""

    def __init__(self, model, guidance: Callable) -> None:
        self.model, self.guidance = model, guidance
        self.noise = model.noise
        self.data_moments = getattr(model, "data_moments", None)

    def time_score(self):
        return self.guidance(self.model.time_score())


def build_task(
    node: DictConfig | None,
    model,
    sampler,
    shape: tuple[int, ...],
    meta: dict,
    n: int,
    *,
    images: Tensor | None = None,
) -> Task | None:
    """The task of ``node`` (the ``task`` config) for ``model`` and ``sampler``, or None for
    ``task=none``. ``meta``: the run's config (its data config gives the test split);
    ``images``: the ``n`` observed images (model range) instead of the test split's first.
    Bad input is refused here, in one line, before any sampling."""
    name = "none" if node is None else str(node.get("name", "none"))
    if name == "none":
        return None
    if name not in ("inpaint", "colorize", "class"):
        raise ValueError(f"task={name} is not a task; use task=none, inpaint, colorize or class")
    from scorelab.sampling.pc import pc_sampler

    if getattr(sampler, "function", None) is not pc_sampler:
        got = sampler.describe().get("name", type(sampler).__name__)
        raise ValueError(
            f"task={name} runs on the predictor-corrector samplers ({_PC_SAMPLERS}), got "
            f"sampler={got}; pick one of those"
        )
    if name == "class":
        return _class_task(node, model, sampler, shape, meta)
    if name == "colorize":
        return _colorize_task(sampler, shape, meta, n, images)
    return _inpaint_task(node, model, sampler, shape, meta, n, images)


def _colorize_task(sampler, shape, meta: dict, n: int, images) -> Task:
    if len(shape) != 3 or shape[0] < 2:
        raise ValueError(
            f"task=colorize needs colour images (C >= 2, H, W), got examples of shape "
            f"{tuple(shape)}; single-channel data (data=mnist) has no colour to sample: use "
            "data=cifar10 or celeba, or task=inpaint"
        )
    task = Task("colorize", sampler, {"channels": int(shape[0]), "known": "grey level"})
    task.known = task.truth = images if images is not None else observed_images(meta, n)
    return task


def _class_task(node: DictConfig, model, sampler, shape, meta: dict) -> Task:
    from scorelab.sampling.conditional import classifier_guided_score
    from scorelab.toy import oracle_classifier

    mixture = getattr(model, "mixture", None)
    path = node.get("classifier")
    if mixture is None and path is None:
        raise ValueError(
            "task=class on a trained score model needs task.classifier=PATH, the checkpoint of "
            "a noise-conditional classifier of its data and SDE (python -m scorelab.train "
            "experiment=mnist_classifier); or use model=oracle data=gmm (the exact classifier)"
        )
    label, scale = node.get("label"), node.get("scale", 1.0)
    ok = isinstance(scale, int | float) and not isinstance(scale, bool)
    if not (ok and 0 <= scale < float("inf")):
        raise ValueError(
            f"task.scale={scale!r} must be a finite number >= 0 (1: sample p(x | label))"
        )
    if path is not None:
        classifier, k = _trained_classifier(str(path), model, shape, meta)
        what, name = f"class index in [0, {k}) for this {k}-class classifier", str(path)
    else:
        classifier, k = oracle_classifier(mixture, model.noise), mixture.num_components
        what, name = f"component index in [0, {k}) for this {k}-component mixture", None
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < k:
        raise ValueError(f"task.label={label!r} must be a {what}; pick one of {list(range(k))}")
    info = {
        "label": label,
        "scale": float(scale),
        "classifier": name or "exact component posterior",
    }
    task = Task("class", sampler, info)
    task.guidance = lambda score: classifier_guided_score(score, classifier, label, scale)
    if mixture is not None:
        g = torch.Generator().manual_seed(0)
        task.truth = mixture_component_samples(mixture, label, 2000, g)
        task.data = mixture.sample(2000, generator=g, dtype=torch.float64)
    return task


def _trained_classifier(path: str, model, shape, meta: dict):
    """(classifier, number of classes) of the checkpoint ``path``, refused in one line unless
    it was trained on the score model's data shape, data range and SDE."""
    from scorelab.nets.noise_classifier import load_classifier

    classifier, config = load_classifier(path)
    theirs, ours = _example_shape(config["data"]), tuple(int(s) for s in shape)
    if theirs != ours:
        raise ValueError(
            f"task.classifier={path} was trained on examples of shape {theirs}, but the score "
            f"model draws {ours}; train a classifier on the score model's data"
        )
    if meta and meta.get("data") is not None and len(ours) == 3:
        a, b = (str(c["data"].get("scaling", "none")) for c in (config, meta))
        if a != b:
            raise ValueError(
                f"task.classifier={path} saw data scaled to {a}, but the score model's data is "
                f"scaled to {b}; train the classifier with data.scaling={b}"
            )
    mine, other = _process_key(model.noise), _process_key(classifier.noise)
    if mine != other:
        raise ValueError(
            f"task.classifier={path} was trained on the SDE {other}, but the score model's is "
            f"{mine}; train the classifier with the score model's sde (same type and range)"
        )
    return classifier, classifier.num_classes


def _example_shape(data: dict) -> tuple[int, ...]:
    """(C, H, W) for images, (D,) for points, from a run's data config."""
    if data.get("image_size") is not None:
        return (int(data["channels"]), int(data["image_size"]), int(data["image_size"]))
    return (int(data["dim"]),)


def _process_key(process) -> str:
    """A noise process as its type and range, e.g. ``VESDE(sigma_min=0.002, sigma_max=80)``
    (the number of steps N is a sampling choice and left out)."""
    names = ("sigma_min", "sigma_max", "beta_0", "beta_1")
    args = ", ".join(f"{n}={getattr(process, n):.6g}" for n in names if hasattr(process, n))
    return f"{type(process).__name__}({args})"


def _inpaint_task(node: DictConfig, model, sampler, shape, meta: dict, n: int, images) -> Task:
    if len(shape) == 1:
        mask, known = point_mask(node.get("known_dims"), node.get("known_values"), shape[0])
        dims = [int(d) for d in node.known_dims]
        info = {"known_dims": dims, "known_values": [float(v) for v in node.known_values]}
        task = Task("inpaint", sampler, info)
        task.mask, task.known = mask, known
        mixture = getattr(model, "mixture", None)
        if mixture is not None:
            g = torch.Generator().manual_seed(0)
            task.truth = mixture_conditional_samples(mixture, mask, known, 4000, g)
            task.data = mixture.sample(2000, generator=g, dtype=torch.float64)
        return task
    if len(shape) != 3:
        raise ValueError(f"task=inpaint needs points (D,) or images (C, H, W), got {shape}")
    spec = str(node.get("mask", "center"))
    fraction = float(node.get("fraction", 0.5))
    mask = image_mask(spec, tuple(shape), fraction=fraction, seed=int(node.get("mask_seed", 0)))
    info = {"mask": spec, "known_pixels": float(mask.float().mean())}
    if spec == "random":
        info.update(fraction=fraction, mask_seed=int(node.get("mask_seed", 0)))
    task = Task("inpaint", sampler, info)
    task.mask = mask
    task.known = task.truth = images if images is not None else observed_images(meta, n)
    return task
