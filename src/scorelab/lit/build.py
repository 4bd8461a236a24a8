"""Build the objects of a run from a resolved Hydra config, and rebuild them from a checkpoint.

Everything here is cheap: no data is loaded and no network is trained, so every bad value or
combination is refused before expensive work starts.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationKeyError

from scorelab.data import DATA_META_KEYS
from scorelab.draw import Sampler, sampler_name
from scorelab.guidance import check_label_config
from scorelab.io import (
    CheckpointError,
    checkpoint_path_problem,
    read_checkpoint,
)
from scorelab.lit.module import ScoreModule, unpack_batch
from scorelab.nets.conditioning import STEP_SCALE, cond_input
from scorelab.nets.precond import OracleScoreModel
from scorelab.schedules import max_pairwise_distance
from scorelab.sde import NoiseProcess, as_sde
from scorelab.toy import GaussianMixture


class ConfigError(ValueError):
    """A bad configuration value or combination; the message is one line naming the fix."""


def build(node: Any, what: str, catch: type | tuple = (ValueError, TypeError), **kwargs) -> Any:
    """``instantiate(node, **kwargs)``; a ``catch`` error of the constructor becomes a one-line
    ConfigError prefixed with the config group (Hydra wraps it in a multi-line exception)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, catch):
            raise ConfigError(f"{what}: {' '.join(str(cause).split())}") from None
        raise


@contextlib.contextmanager
def refused(what: str = "", errors: type | tuple = ValueError):
    """An ``errors`` exception raised in the block becomes a one-line ConfigError, prefixed
    with ``what`` (a config group) when given."""
    try:
        yield
    except ConfigError:
        raise
    except errors as err:
        raise ConfigError(f"{what}: {err}" if what else str(err)) from None


def to_plain(cfg: DictConfig | dict) -> dict:
    """Resolved config as plain containers (safe for ``torch.load(weights_only=True)``)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def as_config(cfg: DictConfig | dict) -> DictConfig:
    return cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)


def data_shape(cfg: DictConfig) -> tuple[int, ...]:
    """Shape of one example from the data config: (C, H, W) for images, (D,) for points."""
    d = cfg.data
    if d.get("image_size") is not None:
        return (int(d.channels), int(d.image_size), int(d.image_size))
    return (int(d.dim),)


def data_range(cfg: DictConfig) -> str:
    return str(cfg.data.get("scaling", "none")) if cfg.data.get("image_size") else "none"


def build_datamodule(cfg: DictConfig):
    d = OmegaConf.to_container(cfg.data, resolve=True)
    for key in DATA_META_KEYS:
        d.pop(key, None)
    dm = build(d, "data")
    check_files = getattr(dm, "check_files", None)
    if callable(check_files):  # missing files: one line naming the file and `make data`, now
        check_files()
    return dm


def build_noise(cfg: DictConfig) -> NoiseProcess:
    """The SDE or discrete σ levels (``sigma_max: auto``: see :func:`resolve_sigma_max`)."""
    s = OmegaConf.to_container(cfg.sde, resolve=True)
    if s.get("sigma_max") == AUTO:
        s["sigma_max"] = auto_sigma_max(cfg)
    return build(s, "sde")


AUTO = "auto"


def resolve_sigma_max(cfg: DictConfig) -> DictConfig:
    """``cfg`` with ``sde.sigma_max: auto`` replaced in place by :func:`auto_sigma_max`, once,
    before the module is built: the config saved in its checkpoints holds the number, so
    sampling a checkpoint never reads the data again."""
    if cfg.get("sde") is not None and OmegaConf.select(cfg, "sde.sigma_max") == AUTO:
        cfg.sde.sigma_max = auto_sigma_max(cfg)
    return cfg


def auto_sigma_max(cfg: DictConfig, n: int = 2000) -> float:
    """NCSNv2's Technique 1 (Song & Ermon 2020): σ_max is the largest Euclidean distance between
    two training examples, here among the first ``n`` of one pass of the training loader
    (all of them when the loader yields fewer), rounded to 2 decimals."""
    dm = build_datamodule(cfg)
    dm.setup("fit")
    chunks, total = [], 0
    for batch in dm.train_dataloader():
        x = unpack_batch(batch)[0]  # (x, label) batches when data.labels is on
        chunks.append(x)
        total += x.shape[0]
        if total >= n:
            break
    return float(round(max_pairwise_distance(torch.cat(chunks)[:n]), 2))


def checkpoint_config(ckpt: dict, path: str | Path) -> dict:
    """The config saved in the checkpoint ``ckpt`` (read from ``path``); one line when missing."""
    config = ckpt.get("scorelab_config")
    if not config:
        raise CheckpointError(
            f"checkpoint {path} carries no scorelab_config (not written by scorelab.train or "
            "scorelab.convert); cannot rebuild its model"
        )
    return config


def check_sigma_max_resolved(cfg: DictConfig, path: str | Path) -> None:
    """A checkpoint's ``sde.sigma_max`` must be a number: it is not recomputed from the data."""
    if cfg.get("sde") is not None and OmegaConf.select(cfg, "sde.sigma_max") == AUTO:
        raise CheckpointError(
            f"checkpoint {path} has sde.sigma_max='auto' (saved before training resolved it to "
            "a number), and checkpoints are loaded without their data; give the number: "
            "sde.sigma_max=VALUE (the largest pairwise distance of its training data)"
        )


def build_score_model(cfg: DictConfig, noise: NoiseProcess):
    """The parametrised score network, or the exact oracle for ``model=oracle``."""
    m = cfg.model
    if m.get("classifier") is not None:
        raise ConfigError(
            "this config's model is a noise-conditional classifier, not a score model; sample "
            "a score checkpoint and pass the classifier as task=class task.classifier=PATH"
        )
    if m.get("oracle", False):
        d = cfg.data
        if d.get("name") != "gmm":
            what = d.get("name") or str(d.get("_target_", "?")).rsplit(".", 1)[-1]
            raise ConfigError(
                f"model=oracle needs an analytic mixture (data=gmm), got data {what}; use data=gmm "
                "(or experiment=toy_gmm), or give ckpt_path=PATH of a model trained on it"
            )
        stds = OmegaConf.to_container(d.stds) if OmegaConf.is_config(d.stds) else d.stds
        mix = GaussianMixture(list(d.weights), [list(r) for r in d.means], stds)
        return OracleScoreModel(mix, noise)
    try:
        net = build(m.net, "model.net")
    except InterpolationKeyError as err:
        raise ConfigError(
            f"model.net: {err}: the network reads a key no other config group defines here "
            "(model=ncsn takes its number of levels from sde=ncsn); choose a matching sde"
        ) from None
    return build_parametrization(m.get("parametrization") or {}, net, noise)


def build_parametrization(node: Any, net: torch.nn.Module, noise: NoiseProcess):
    """``model.parametrization`` (a ``_partial_`` target such as ScoreModel or EDMPrecond)
    around ``net``. A node without ``_target_`` (checkpoints saved before the parametrisations
    were Hydra targets) is a ScoreModel, its ``time_scale`` read as the conditioning kind."""
    p = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    if "_target_" not in p:
        p = {"_target_": "scorelab.nets.precond.ScoreModel", "_partial_": True, **p}
    if "time_scale" in p:
        p = _legacy_parametrization(p, net)
    factory = build(p, "model.parametrization")
    with refused("model.parametrization", (ValueError, TypeError)):
        return factory(net, noise)


def _legacy_parametrization(p: dict, net: torch.nn.Module) -> dict:
    """``net_cond: time`` with ``time_scale: 999`` fed 999·t: the kind ``step`` now."""
    p = dict(p)
    scale = float(p.pop("time_scale"))
    if scale == 1.0:
        return p
    if p.get("net_cond", "sigma") == "time" and scale == STEP_SCALE:
        if cond_input(net) not in (None, "step"):
            raise ConfigError(
                f"model.parametrization.time_scale={scale:g} feeds 999·t, but "
                f"{type(net).__name__} embeds cond as {cond_input(net)!r} and scales it "
                "itself: t would be scaled twice; drop time_scale (net_cond=time feeds t as is)"
            )
        return {**p, "net_cond": "step"}
    raise ConfigError(
        f"model.parametrization.time_scale={scale:g} is not supported; the network is fed t "
        "(net_cond=time) or 999·t (net_cond=step), and scales it itself"
    )


def build_loss(cfg: DictConfig, noise: NoiseProcess):
    lc = OmegaConf.to_container(cfg.loss, resolve=True)
    wants_discrete = bool(lc.pop("discrete_levels", False))
    factory = build(lc, "loss")
    need = f"loss={cfg.loss._target_.rsplit('.', 1)[-1]}"
    with refused():  # discrete-level DSM draws from the levels; the other losses need an SDE
        if wants_discrete:
            arg = noise.dsm_sigmas(need)
        else:
            arg = as_sde(noise, f"{need} needs an SDE", "use loss=dsm_discrete with sde=ncsn")
    with refused("loss"):
        return factory(arg)


def check_sigma_data(model: Any, loss: Any) -> None:
    """EDM's preconditioning and its loss weighting must assume the same data std σ_d."""
    a, b = getattr(model, "sigma_data", None), getattr(loss, "sigma_data", None)
    if a is not None and b is not None and a != b:
        raise ConfigError(
            f"loss.sigma_data={b:g} differs from model.parametrization.sigma_data={a:g}; EDM's "
            "weighting and preconditioning assume the same data std: set both to one value"
        )


def build_sampler(cfg: DictConfig) -> Sampler | None:
    """The :class:`~scorelab.draw.Sampler` of ``sampler``, ``schedule`` and ``init`` (None
    without a sampler). Check it against a model with :func:`check_sampler`."""
    node = cfg.get("sampler")
    if node is None:
        return None
    target = str(node.get("_target_", ""))
    if target.startswith("scorelab.generate."):
        raise ConfigError(
            f"the sampler config {target} predates samplers configured as functions (a "
            "checkpoint written by an older scorelab); pick one on the command line: sampler=heun, "
            "pc, ode, ald, ... (README: checkpoints)"
        )
    if not node.get("_partial_", False):
        raise ConfigError(
            f"sampler: {target or 'the config'} must be a sampling function with _partial_: true "
            "(see conf/sampler/)"
        )
    for group in ("schedule", "init"):
        if cfg.get(group) is None:
            raise ConfigError(
                f"sampler={sampler_name(build(node, 'sampler'))} needs {group}=NAME (conf/{group}/)"
            )
    fn = build(node, "sampler")
    return Sampler(fn, build(cfg.schedule, "schedule"), build(cfg.init, "init"))


def sampler_from_config(name: str, *overrides: str) -> Sampler:
    """The :class:`~scorelab.draw.Sampler` that ``sampler=name`` with ``overrides``
    (``schedule.*``, ``init.*``, ``sampler.*``) builds from the package's configs, as the entry
    points do: for scripts and notebooks that sample without a command line."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from scorelab.runs import CONF_DIR

    ready = GlobalHydra.instance().is_initialized()
    with contextlib.nullcontext() if ready else initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("sample", overrides=[f"sampler={name}", *overrides])
    return build_sampler(cfg)


def check_sampler(sampler: Sampler | None, model: Any, shape: tuple[int, ...] | None) -> None:
    """Refuse, as a ConfigError, a sampler that does not fit ``model`` (before any sampling)."""
    if sampler is not None:
        with refused():
            sampler.check(model, shape)


def check_optimizer(node: Any) -> None:
    """The optimizer's numbers, named by their keys (torch's own messages name no key and no
    fix, and torch checks them only once the optimizer is built)."""
    o = node or {}
    lr = o.get("lr")
    if _is_number(lr) and not lr > 0:
        raise ConfigError(
            f"optimizer.lr={lr} must be > 0 (the step size; 2e-4 is the default): a zero rate "
            "trains nothing and a negative one climbs the loss"
        )
    betas = o.get("betas")
    if betas is not None and len(betas) == 2 and all(_is_number(b) for b in betas):
        for i, b in enumerate(betas):
            if not 0 <= b < 1:
                raise ConfigError(
                    f"optimizer.betas[{i}]={b} must be in [0, 1) (Adam's moment decays; "
                    "[0.9, 0.999] is the default)"
                )
    for key in ("eps", "weight_decay"):
        v = o.get(key)
        if _is_number(v) and v < 0:
            raise ConfigError(f"optimizer.{key}={v} must be >= 0")


def build_optimizer(node: Any):
    """The partial optimizer of ``optimizer``, its values checked now (torch checks lr, betas,
    eps ... only when the optimizer is built)."""
    check_optimizer(node)
    opt = build(node, "optimizer")
    with refused("optimizer"):
        opt([torch.zeros(1, requires_grad=True)])
    return opt


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def build_module(cfg: DictConfig | dict) -> ScoreModule:
    """The ScoreModule of a config; the sampler is checked against the model here.
    ``sde.sigma_max: auto`` is resolved in ``cfg`` itself first (:func:`resolve_sigma_max`)."""
    cfg = resolve_sigma_max(as_config(cfg))
    noise = build_noise(cfg)
    model = build_score_model(cfg, noise)
    sampler = build_sampler(cfg)
    check_sampler(sampler, model, data_shape(cfg))
    if isinstance(model, OracleScoreModel):
        raise ConfigError("model=oracle has nothing to train; use python -m scorelab.sample")
    loss = build_loss(cfg, noise)
    check_sigma_data(model, loss)
    opt = build_optimizer(cfg.optimizer)
    resolved = to_plain(cfg)
    with refused():
        check_label_config(resolved)
    with refused("module"):
        return ScoreModule(
            model,
            loss,
            opt,
            sampler=sampler,
            data_shape=data_shape(cfg),
            data_range=data_range(cfg),
            seed=int(cfg.get("seed", 0)),
            config=resolved,
            **OmegaConf.to_container(cfg.module, resolve=True),
        )


# ----------------------------------------------------------------------------- checkpoints
def load_module(path: str | Path, overrides: dict | None = None) -> ScoreModule:
    """Rebuild the whole ScoreModule saved at ``path`` (config inside the checkpoint), loss and
    optimizer included, and load it; sampling needs less (:mod:`scorelab.lit.sampling_model`).

    ``overrides`` replaces config entries before building: whole groups
    (``{"sampler": {...}}``) or dotted keys (``{"module.compile": False}``).
    """
    ckpt = read_checkpoint(path)
    cfg = OmegaConf.create(checkpoint_config(ckpt, path))
    for key, value in (overrides or {}).items():
        OmegaConf.update(cfg, key, value, merge=False)
    check_sigma_max_resolved(cfg, path)
    module = build_module(cfg)
    state = ckpt["state_dict"]
    module.check_state(state, f"checkpoint {path} does not fit the model of its config")
    module.load_state_dict(state)
    return module


# ----------------------------------------------------------------------------- validation
def validate_config(cfg: DictConfig) -> None:
    """Refuse bad values and combinations that the constructors cannot see on their own."""
    d, m = cfg.data, cfg.model
    net = m.get("net") if not m.get("oracle", False) else None
    if net is not None:
        for key in ("image_size", "channels"):
            nv, dv = net.get(key), d.get(key)
            if nv is not None and dv is not None and int(nv) != int(dv):
                raise ConfigError(
                    f"model.net.{key}={nv} differs from data.{key}={dv}; set them equal (model "
                    f"configs default to ${{data.{key}}})"
                )
        if d.get("image_size") is None and ("image_size" in net or "channels" in net):
            raise ConfigError(
                f"model {net._target_.rsplit('.', 1)[-1]} is an image network but data "
                f"{d.get('name', d._target_)} is points; use model=mlp for 2-D/low-dim data"
            )
        levels = cfg.get("sde", {}).get("num_scales") if cfg.get("sde") else None
        try:
            classes = net.get("num_classes")
        except InterpolationKeyError:  # build_score_model names the missing group
            classes = None
        if classes is not None and levels is not None and int(classes) != int(levels):
            raise ConfigError(
                f"model.net.num_classes={classes} differs from sde.num_scales={levels}: the "
                "network embeds one entry per noise level; set them equal (model configs "
                "default to ${sde.num_scales})"
            )
        if d.get("image_size") is not None and net.get("dim") is not None:
            raise ConfigError(
                "model=mlp works on points but data is images; use model=unet_small or another "
                "image network"
            )
    ckpt = cfg.get("ckpt_path")
    if ckpt not in (None, "last"):
        problem = checkpoint_path_problem(ckpt)
        if problem:
            raise CheckpointError(f"ckpt_path: {problem}")
    seed = cfg.get("seed", 0)
    if seed is not None and not 0 <= int(seed) < 2**32:
        raise ConfigError(f"seed must be in [0, 2**32 - 1], got {seed}")
    n = cfg.get("n_samples", 0)
    if n is None or int(n) < 0:
        raise ConfigError(f"n_samples must be >= 0, got {n}")
    if "trainer" in cfg:
        steps = cfg.trainer.get("max_steps", -1)
        if steps is not None and int(steps) == 0:
            raise ConfigError("trainer.max_steps=0 trains nothing; use >= 1 (or -1 for epochs)")
        if steps is not None and int(steps) < -1:
            raise ConfigError(
                f"trainer.max_steps={steps} must be >= 1, or -1 (no step limit: "
                "trainer.max_epochs or max_time ends the run)"
            )
        epochs = cfg.trainer.get("max_epochs")
        if epochs is not None and (int(epochs) == 0 or int(epochs) < -1):
            raise ConfigError(
                f"trainer.max_epochs={epochs} must be >= 1, or -1 / null (no epoch limit)"
                + ("; 0 trains nothing" if int(epochs) == 0 else "")
            )
        every = cfg.trainer.get("log_every_n_steps")
        if every is not None and int(every) < 1:
            raise ConfigError(f"trainer.log_every_n_steps={every} must be >= 1 (50 is the default)")
        lvb = cfg.trainer.get("limit_val_batches")
        if _is_number(lvb) and (lvb < 0 or (isinstance(lvb, float) and lvb > 1)):
            raise ConfigError(
                f"trainer.limit_val_batches={lvb} must be an integer >= 0 (batches) or a float "
                "in [0, 1] (fraction of the validation set); 0 turns validation off"
            )
        vci = cfg.trainer.get("val_check_interval")
        if vci is not None and not (
            (isinstance(vci, int) and vci >= 1) or (isinstance(vci, float) and 0 < vci <= 1)
        ):
            raise ConfigError(
                f"trainer.val_check_interval must be an integer >= 1 (steps) or a float in "
                f"(0, 1] (fraction of an epoch), got {vci}"
            )
        lightning_acc = cfg.trainer.get("accumulate_grad_batches")
        if lightning_acc not in (None, 1):
            raise ConfigError(
                f"trainer.accumulate_grad_batches={lightning_acc} does not work with this "
                f"module's manual optimisation; use module.accumulate_grad_batches="
                f"{lightning_acc} instead"
            )
        k = (cfg.get("module") or {}).get("accumulate_grad_batches", 1)
        if isinstance(k, int) and k > 1 and isinstance(vci, int) and vci % k:
            lower = vci - vci % k
            fix = f"{lower} or {lower + k}" if lower else f"{lower + k}"
            raise ConfigError(
                f"trainer.val_check_interval={vci} is not a multiple of "
                f"module.accumulate_grad_batches={k}; validation and checkpoints must fall at "
                f"the end of an accumulation cycle: use {fix}"
            )
    callbacks = cfg.get("callbacks") or {}
    if not any(v is not None for v in (cfg.get("logger") or {}).values()):
        for name, cb in callbacks.items():
            if cb is not None and str(cb.get("_target_", "")).endswith("LearningRateMonitor"):
                raise ConfigError(
                    f"callbacks.{name} (LearningRateMonitor) needs a logger, but logger is "
                    f"empty; set callbacks.{name}=null or choose a logger (logger=csv)"
                )
