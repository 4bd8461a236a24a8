"""The score model and sampler that ``scorelab.sample`` and ``scorelab.evaluate`` draw with, and
the draw itself.

With a checkpoint: its own config (data, model, SDE, sampler) with the command line's changes on
top; the checkpoint is read once and only the score model, its noise process and the sampler are
built (no loss, optimizer, EMA copy or data). Without one, the exact score of an analytic mixture
(``model=oracle``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from scorelab.guidance import (
    AutoGuidedScore,
    GuidanceError,
    check_guide_fits,
    check_weight,
    guided,
)
from scorelab.io import CheckpointError, describe_state_mismatch, read_checkpoint
from scorelab.lit.build import (
    ConfigError,
    build_noise,
    build_sampler,
    build_score_model,
    check_sampler,
    check_sigma_max_resolved,
    checkpoint_config,
    data_range,
    data_shape,
    to_plain,
)
from scorelab.lit.module import to_unit_range
from scorelab.runs import DRAW_GROUPS, group_choice, task_overrides
from scorelab.sampling.start import DataMoments

# Config groups a checkpoint carries: the command line may change their keys on top of the
# checkpoint's (sde.N=2000), not swap the group for another option (sde=vp). The sampler is free.
CHECKPOINT_GROUPS = ("data", "model", "sde", "loss")


def command_line(cfg: DictConfig, overrides: list[str] | None = None) -> list[str]:
    """``overrides`` if given, else the current Hydra job's. A config composed in code (no
    Hydra job) has no command line: a sampler in it counts as picked."""
    if overrides is not None:
        return list(overrides)
    if HydraConfig.initialized():
        return task_overrides()
    return ["sampler=(composed)"] if cfg.get("sampler") is not None else []


def _key(item: str) -> str:
    return item.split("=", 1)[0].lstrip("+~")


def checkpoint_sampler_keys(args: list[str]) -> list[str]:
    """Command-line ``args`` of ``scorelab.sample``/``evaluate`` with ``sampler.KEY=VALUE``
    (likewise ``schedule.``, ``init.``) made ``++sampler.KEY=VALUE`` when a checkpoint is given
    and the group is not picked (``sampler=NAME`` picks all three).

    Then the keys are meant for the checkpoint's own settings, which the entry point's config
    (``sampler: null``) does not hold: Hydra would refuse them ("Key 'sampler' is not in
    struct") unless written with ``+``. ``+KEY`` and ``~KEY`` stay as they are."""
    ckpt = any(_key(a) == "ckpt_path" and a.split("=", 1)[1] not in ("", "null") for a in args)
    if not ckpt:
        return list(args)
    picked = {_key(a) for a in args if "=" in a and _key(a) in DRAW_GROUPS}
    if "sampler" in picked:
        picked.update(DRAW_GROUPS)
    free = tuple(f"{g}." for g in DRAW_GROUPS if g not in picked)
    return [f"++{a}" if a.startswith(free) and "=" in a else a for a in args]


def _kind(node) -> tuple:
    """A sampler config's function and, for the PC family, its predictor's and corrector's."""
    node = node or {}

    def target(v) -> str | None:
        return v.get("_target_") if v else None

    return target(node), target(node.get("predictor")), target(node.get("corrector"))


def draw_for_checkpoint(
    cfg: DictConfig, ckpt: dict, overrides: list[str] | None = None
) -> dict[str, DictConfig | None]:
    """``sampler``, ``schedule`` and ``init`` to use on a checkpoint: its own, with the
    ``group.*`` keys of the command line on top, unless the command line picks another option
    (``schedule=NAME``), which comes with its group's settings; ``sampler=NAME`` picks all three
    (the sampler's own schedule and start). Picking the checkpoint's own sampler
    (``sampler=ald`` on an ALD-trained run) keeps its experiment-specific settings (e.g.
    NCSNv2's step_lr and final denoising); an experiment's sampler (``experiment=NAME`` alone)
    does not replace the checkpoint's. ``overrides``: see :func:`command_line`."""
    overrides = command_line(cfg, overrides)
    saved = ckpt.get("scorelab_config") or {}
    same_sampler = group_choice(overrides, "sampler") is None or _kind(
        saved.get("sampler")
    ) == _kind(cfg.get("sampler"))
    out: dict[str, DictConfig | None] = {}
    for group in DRAW_GROUPS:
        own = saved.get(group)
        picked = not same_sampler or (
            group != "sampler" and group_choice(overrides, group) is not None
        )
        if not own or picked:
            out[group] = cfg.get(group)
            continue
        merged = OmegaConf.create(own)
        for item in overrides:
            key = _key(item)
            if key.startswith(f"{group}."):
                OmegaConf.update(
                    merged, key[len(group) + 1 :], OmegaConf.select(cfg, key), force_add=True
                )
        out[group] = merged
    return out


def checkpoint_overrides(cfg: DictConfig, ckpt: dict, overrides: list[str] | None = None) -> dict:
    """What the command line changes in the config of the checkpoint ``ckpt`` (read from
    ``cfg.ckpt_path``): how to draw (see :func:`draw_for_checkpoint`) and keys of its other
    groups (``sde.N=2000``). Everything else, an experiment's settings included, comes from the
    checkpoint. Picking another data, model, sde or loss is refused.
    ``overrides``: see :func:`command_line`."""
    overrides = command_line(cfg, overrides)
    changes: dict = {}
    for item in overrides:
        key = _key(item)
        group = key.split(".")[0]
        if group not in CHECKPOINT_GROUPS or item.startswith("~"):
            continue
        if key == group:
            raise ConfigError(
                f"ckpt_path={cfg.ckpt_path} carries its own {group}, which {item!r} cannot "
                f"replace; drop it (a key such as {group}.NAME=VALUE changes one setting)"
            )
        changes[key] = OmegaConf.select(cfg, key)
    if any(_key(item).split(".")[0] in DRAW_GROUPS for item in overrides):
        changes.update(draw_for_checkpoint(cfg, ckpt, overrides))
    return changes


@dataclass
class SamplingModel:
    """What sampling a checkpoint needs: the score model (EMA or raw weights, eval mode, with
    the data moments it was trained on), the sampler (None only when not asked for), the shape
    of one example, the map of samples to [0, 1], and the config it was built from (the
    checkpoint's, with the command line's changes)."""

    model: Any
    sampler: Any
    shape: tuple[int, ...]
    to_unit: Any
    config: dict


def load_sampling_model(
    cfg: DictConfig, overrides: list[str] | None = None, *, need_sampler: bool = True
) -> SamplingModel:
    """Read ``cfg.ckpt_path`` once (memory-mapped) and build from its config, with the command
    line's changes (:func:`checkpoint_overrides`) on top, the noise process, the score model
    and the sampler, and load the EMA weights (``use_ema``, the default) or the raw ones into
    the model. Every bad value is refused before the weights are loaded."""
    path = cfg.ckpt_path
    ckpt = read_checkpoint(path, mmap=True)
    config = OmegaConf.create(checkpoint_config(ckpt, path))
    for key, value in checkpoint_overrides(cfg, ckpt, overrides).items():
        OmegaConf.update(config, key, value, merge=False)
    check_sigma_max_resolved(config, path)
    noise = build_noise(config)
    model = build_score_model(config, noise)
    sampler = build_sampler(config)
    if sampler is None and need_sampler:
        raise ConfigError("the checkpoint has no sampler configured; pass sampler=NAME")
    shape = data_shape(config)
    if (config.get("module") or {}).get("channels_last") and len(shape) == 3:
        model.to(memory_format=torch.channels_last)  # as training kept the weights
    state = ckpt["state_dict"]
    # The data's mean and variance, saved beside the weights (unknown in older checkpoints).
    moments = DataMoments(shape)
    saved = {k: state.get(f"data_moments.{k}", v) for k, v in moments.state_dict().items()}
    moments.load_state_dict(saved)
    object.__setattr__(model, "data_moments", moments)
    check_sampler(sampler, model, shape)
    prefix = "ema.module." if cfg.get("use_ema", True) else "model."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    mismatch = describe_state_mismatch(model.state_dict(), weights)
    if mismatch:
        raise CheckpointError(
            f"checkpoint {path} does not fit the architecture in its config ({prefix}*: {mismatch})"
        )
    model.load_state_dict(weights)
    model.eval()
    unit = partial(to_unit_range, data_range=data_range(config))
    return SamplingModel(model, sampler, shape, unit, to_plain(config))


def build_sampling_model(cfg: DictConfig, overrides: list[str] | None = None):
    """(score model, sampler, example shape, to-unit-range fn, config) for a checkpoint
    (:func:`load_sampling_model`) or the oracle. Refuses a sampler that does not fit before any
    sampling. ``overrides``: the command line (see :func:`command_line`)."""
    if cfg.get("ckpt_path"):
        m = load_sampling_model(cfg, overrides)
        return m.model, m.sampler, m.shape, m.to_unit, m.config
    if not cfg.model.get("oracle", False):
        raise ConfigError(
            "give ckpt_path=PATH to sample a trained model, or model=oracle data=gmm (or "
            "model=oracle experiment=toy_gmm) for the exact score of a mixture"
        )
    if cfg.get("sampler") is None:
        raise ConfigError("model=oracle needs a sampler: pass sampler=ald, pc, ode, heun, ...")
    noise = build_noise(cfg)
    model = build_score_model(cfg, noise)
    sampler = build_sampler(cfg)
    check_sampler(sampler, model, data_shape(cfg))
    return model, sampler, data_shape(cfg), (lambda x: x), OmegaConf.to_container(cfg, resolve=True)


class NonFiniteSamplesError(RuntimeError):
    """Sampling produced NaN or inf: nothing is written, the entry point exits with code 3."""

    exit_code = 3


def check_request(cfg: DictConfig, *, n_samples: bool = True) -> None:
    """The numbers of a sampling request (``n_samples``, ``batch_size``, ``seed``), refused before
    any model is built."""
    n = cfg.get("n_samples")
    if n_samples and (n is None or int(n) < 1):
        raise ConfigError(f"n_samples={n} must be >= 1 (the number of samples to draw)")
    b = cfg.get("batch_size")
    if b is None or int(b) < 1:
        raise ConfigError(
            f"batch_size={b} must be >= 1 (samples drawn at once; lower it for memory)"
        )
    seed = cfg.get("seed", 0)
    if seed is None or not 0 <= int(seed) < 2**32:
        raise ConfigError(f"seed={seed} must be in [0, 2**32 - 1]")
    sampling_dtype(cfg.get("precision", 32))


PRECISIONS = {"32": None, "bf16": torch.bfloat16}


def sampling_dtype(precision) -> torch.dtype | None:
    """The autocast dtype of ``precision=`` (None: float32 throughout); refuses other values."""
    if str(precision) not in PRECISIONS:
        raise ConfigError(
            f"precision={precision} is not one of 32, bf16 (bf16: the network in bfloat16 "
            "autocast, the sampler's own arithmetic in float32)"
        )
    return PRECISIONS[str(precision)]


def draw(
    model,
    sampler,
    shape,
    n: int,
    batch_size: int,
    seed: int,
    device: str = "cpu",
    precision: str | int = 32,
):
    """``n`` samples in batches; returns (samples (n, ...), total NFE of one batch, wall time).
    ``precision="bf16"`` runs the sampler under bfloat16 autocast: convolutions and matrix
    products in bf16, the sampler's updates (element-wise, float32 inputs) in float32."""
    dtype = sampling_dtype(precision)
    if n < 1:
        raise ConfigError(f"n_samples must be >= 1, got {n}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    gen = torch.Generator(device=device).manual_seed(seed)
    chunks, nfe, t0 = [], 0, time.time()
    model = model.to(device)
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        with (
            torch.no_grad(),
            torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None),
        ):
            res = sampler(model, (b, *shape), device=device, generator=gen, progress=True)
        chunks.append(res.x.detach().float())
        nfe = max(nfe, int(res.nfe))
    x = torch.cat(chunks)
    bad = ~torch.isfinite(x)
    if bad.any():
        rows = int(bad.reshape(len(x), -1).any(dim=1).sum())
        raise NonFiniteSamplesError(
            f"sampling gave non-finite values in {rows} of {len(x)} samples "
            f"(sampler {sampler.describe().get('name', type(sampler).__name__)}); nothing was "
            "written; check that the checkpoint's weights are finite, or make the sampler more "
            "stable (more steps, a smaller corrector snr or step size)"
        )
    return x, nfe, time.time() - t0


def apply_guidance(
    model: torch.nn.Module, cfg: Any, config: dict, overrides: list[str] | None = None
) -> torch.nn.Module:
    """``model`` with the ``guidance`` node of ``cfg`` applied: classifier-free guidance
    (``label``, ``weight``: :func:`guided`) or autoguidance (``guide_ckpt``, ``weight``:
    :class:`AutoGuidedScore`). ``config``: the model's own config (a checkpoint's, with the
    command line's changes), which the guide's must fit. Every bad setting is refused before
    any sampling, the guide's path before its weights are read."""
    guidance = cfg.get("guidance")
    path = None if guidance is None else guidance.get("guide_ckpt")
    if path is None:
        return guided(model, guidance)
    if guidance.get("label") is not None:
        raise GuidanceError(
            "guidance.label (classifier-free guidance) and guidance.guide_ckpt (autoguidance) "
            "are both set; use one of them"
        )
    weight = check_weight(guidance.get("weight", 0.0))
    if not Path(str(path)).is_file():
        raise GuidanceError(
            f"guidance.guide_ckpt={path} does not exist; give a checkpoint of the same run "
            "from earlier in training (a run with callbacks.guide_snapshot set writes "
            "checkpoints/guide.ckpt), or drop guidance.guide_ckpt"
        )
    guide_cfg = OmegaConf.merge(cfg, {"ckpt_path": str(path)})
    guide = load_sampling_model(guide_cfg, overrides, need_sampler=False)
    check_guide_fits(config, guide.config, str(path))
    return AutoGuidedScore(model, guide.model, weight, str(path))
