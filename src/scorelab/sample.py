"""Draw samples: ``python -m scorelab.sample ckpt_path=PATH sampler=NAME n_samples=N``.

With ``model=oracle data=gmm`` (mixture given by ``data.weights``, ``data.means``,
``data.stds``) it samples from the exact score of the mixture, with no checkpoint;
``experiment=NAME model=oracle`` takes the experiment's data, SDE and sampler. With a checkpoint
its own config wins over an experiment's, with the command line's keys on top.

Writes ``samples.npz`` (array ``samples``: images N×C×H×W in [0, 1], points N×D), a grid PNG or a
scatter plot, and ``sample_info.json`` (sampler, NFE, wall time) into the run directory.
``task=inpaint|colorize|class`` samples conditionally (:mod:`scorelab.tasks`) and adds a figure
of input, samples and ground truth; ``guidance.label``/``guidance.weight`` apply classifier-free
guidance, ``guidance.guide_ckpt``/``guidance.weight`` autoguidance (:mod:`scorelab.guidance`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from scorelab.guidance import describe_guidance
from scorelab.io import write_json_atomic
from scorelab.lit.sampling_model import (
    apply_guidance,
    build_sampling_model,
    check_request,
    checkpoint_sampler_keys,
    draw,
)
from scorelab.outputs import write_samples
from scorelab.runs import CONF_DIR, entry_point, run_cli
from scorelab.tasks import build_task


def sample(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Draw ``cfg.n_samples`` and write them; ``overrides``: the command line, which goes on top
    of a checkpoint's own config (see :func:`scorelab.lit.sampling_model.command_line`)."""
    check_request(cfg)
    model, sampler, shape, to_unit, meta = build_sampling_model(cfg, overrides)
    task = build_task(cfg.get("task"), model, sampler, shape, meta, int(cfg.n_samples))
    if task is not None:  # it wraps the sampler, bad input refused already
        sampler = task
    if (
        task is not None
        and task.name == "class"
        and (cfg.get("guidance") or {}).get("label") is not None
    ):
        raise ValueError(
            "task=class (classifier guidance) and guidance.label (classifier-free guidance) both "
            "ask for a class; use one of them"
        )
    # classifier-free (guidance.label / weight) or autoguidance (guidance.guide_ckpt / weight)
    model = apply_guidance(model, cfg, meta, overrides)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, nfe, wall = draw(
        model,
        sampler,
        shape,
        int(cfg.n_samples),
        int(cfg.batch_size),
        int(cfg.seed),
        device,
        cfg.get("precision", 32),
    )
    x = to_unit(x.float().cpu())
    out = Path(cfg.paths.output_dir)
    reference = None
    if getattr(model, "mixture", None) is not None:
        reference = model.mixture.sample(
            min(2000, len(x)), generator=torch.Generator().manual_seed(0)
        )
    files = write_samples(x, out, reference=reference)
    if task is not None:
        files["task_figure"] = task.figure(x, out, to_unit)
    info = {
        "n_samples": int(cfg.n_samples),
        "sampler": sampler.describe(),
        "nfe": nfe,
        "precision": str(cfg.get("precision", 32)),
        "wall_time_s": wall,
        "ckpt_path": cfg.get("ckpt_path"),
        "guidance": describe_guidance(model),
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
    sys.argv[1:] = checkpoint_sampler_keys(sys.argv[1:])  # sampler.KEY=V on a checkpoint
    run_cli(main)
