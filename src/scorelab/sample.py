"""Draw samples: ``python -m scorelab.sample ckpt_path=PATH sampler=NAME n_samples=N``.

With ``model=oracle data=gmm`` (mixture given by ``data.weights``, ``data.means``,
``data.stds``) it samples from the exact score of the mixture, with no checkpoint.

Writes ``samples.npz`` (array ``samples``: images N×C×H×W in [0, 1], points N×D), a grid PNG or a
scatter plot, and ``sample_info.json`` (sampler, NFE, wall time) into the run directory.
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from scorelab.lit.build import (
    ConfigError,
    build_noise,
    build_sampler,
    build_score_model,
    data_shape,
    load_module,
    read_checkpoint,
)
from scorelab.plots import save_samples_figure
from scorelab.runs import (
    CONF_DIR,
    entry_point,
    run_cli,
    save_npz_atomic,
    task_overrides,
    write_json_atomic,
)


def write_samples(x: Tensor, out: str | Path, *, reference: Tensor | None = None) -> dict:
    """Save ``x`` (images in [0, 1] or points) as samples.npz plus a figure."""
    out = Path(out)
    npz = save_npz_atomic(out / "samples.npz", samples=x.detach().float().cpu().numpy())
    name = "samples_grid.png" if x.ndim == 4 else "samples_scatter.png"
    fig = save_samples_figure(x.detach().float().cpu(), out / name, reference=reference)
    return {"samples_npz": npz, "figure": fig}


def sampler_for_checkpoint(
    cfg: DictConfig, ckpt: dict, overrides: list[str] | None = None
) -> DictConfig:
    """The sampler to use on a checkpoint. Choosing the checkpoint's own sampler
    (``sampler=ald`` on an ALD-trained run) keeps its experiment-specific settings (e.g. NCSNv2's
    step_lr and final denoising), with only the ``sampler.*`` keys given on the command line
    replaced; another sampler comes with its group's defaults."""
    own = (ckpt.get("scorelab_config") or {}).get("sampler")
    if not own or own.get("_target_") != cfg.sampler.get("_target_"):
        return cfg.sampler
    merged = OmegaConf.create(own)
    for item in task_overrides() if overrides is None else overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key.startswith("sampler."):
            OmegaConf.update(
                merged, key[len("sampler.") :], OmegaConf.select(cfg, key), force_add=True
            )
    return merged


def build_sampling_model(cfg: DictConfig):
    """(score model, sampler, example shape, to-unit-range fn, meta) for a checkpoint or the
    oracle. Refuses a sampler that does not fit before any sampling."""
    if cfg.get("ckpt_path"):
        overrides = None
        if cfg.get("sampler") is not None:
            overrides = {"sampler": sampler_for_checkpoint(cfg, read_checkpoint(cfg.ckpt_path))}
        module = load_module(cfg.ckpt_path, overrides)
        module.eval()
        model = module.ema_model() if cfg.get("use_ema", True) else module.model
        if module.sampler is None:
            raise ConfigError("the checkpoint has no sampler configured; pass sampler=NAME")
        return model, module.sampler, module.data_shape, module.to_unit_range, module.config
    if not cfg.model.get("oracle", False):
        raise ConfigError(
            "give ckpt_path=PATH to sample a trained model, or model=oracle data=gmm for the "
            "exact score of a mixture"
        )
    if cfg.get("sampler") is None:
        raise ConfigError("model=oracle needs a sampler: pass sampler=ald, pc, ode, heun, ...")
    noise = build_noise(cfg)
    model = build_score_model(cfg, noise)
    sampler = build_sampler(cfg)
    try:
        sampler.check(model)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return model, sampler, data_shape(cfg), (lambda x: x), OmegaConf.to_container(cfg, resolve=True)


def draw(model, sampler, shape, n: int, batch_size: int, seed: int, device: str = "cpu"):
    """``n`` samples in batches; returns (samples (n, ...), total NFE of one batch, wall time)."""
    if n < 1:
        raise ConfigError(f"n_samples must be >= 1, got {n}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    gen = torch.Generator(device=device).manual_seed(seed)
    chunks, nfe, t0 = [], 0, time.time()
    model = model.to(device)
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        with torch.no_grad():
            res = sampler(model, (b, *shape), device=device, generator=gen, progress=True)
        chunks.append(res.x.detach())
        nfe = max(nfe, int(res.nfe))
    return torch.cat(chunks), nfe, time.time() - t0


def sample(cfg: DictConfig) -> dict:
    model, sampler, shape, to_unit, _ = build_sampling_model(cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, nfe, wall = draw(
        model, sampler, shape, int(cfg.n_samples), int(cfg.batch_size), int(cfg.seed), device
    )
    x = to_unit(x.float().cpu())
    out = Path(cfg.paths.output_dir)
    reference = None
    if getattr(model, "mixture", None) is not None:
        reference = model.mixture.sample(
            min(2000, len(x)), generator=torch.Generator().manual_seed(0)
        )
    files = write_samples(x, out, reference=reference)
    info = {
        "n_samples": int(cfg.n_samples),
        "sampler": sampler.describe(),
        "nfe": nfe,
        "wall_time_s": wall,
        "ckpt_path": cfg.get("ckpt_path"),
        **{k: str(v) for k, v in files.items()},
    }
    write_json_atomic(info, out / "sample_info.json")
    print(f"samples: {files['samples_npz']}\nfigure:  {files['figure']}")
    return info


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="sample")
@entry_point
def main(cfg: DictConfig) -> None:
    sample(cfg)


if __name__ == "__main__":
    run_cli(main)
