"""Import a released checkpoint of the official NCSN, NCSNv2 or score SDE (PyTorch) code.

    python -m scorelab.convert --format score_sde --experiment ncsnpp_cifar10_ve \\
        --official checkpoint_8.pth --out ncsnpp_cifar10_ve.ckpt

The experiment config fixes the architecture; the official weights (and their EMA) are mapped
onto it key by key, and any key or shape that does not fit is refused with a list of the
offenders. The result is a scorelab checkpoint: ``python -m scorelab.sample ckpt_path=OUT`` and
``python -m scorelab.evaluate ckpt_path=OUT`` use it like a trained one. It carries weights and
EMA only (no optimizer state), so it is for sampling and evaluation, not for resuming training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning
import torch
from hydra import compose, initialize_config_dir

from scorelab.io import atomic_torch_save
from scorelab.lit.build import build_module, to_plain
from scorelab.runs import CONF_DIR

FORMATS = ("ncsn", "ncsnv2", "score_sde")


def _load_official(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(
            f"cannot read {path} with weights_only=True ({type(err).__name__}); it is corrupt or "
            "not an official NCSN/NCSNv2/score SDE checkpoint"
        ) from None


def convert_weights(fmt: str, official, net) -> tuple[dict, dict | None, int]:
    """(raw weights, EMA weights or None, training step) mapped onto ``net``'s keys."""
    if fmt == "ncsn":
        from scorelab.conversion.ncsn import convert_ncsn_state_dict

        states = official if isinstance(official, list | tuple) else [official]
        return convert_ncsn_state_dict(states[0], net), None, 0
    if fmt == "ncsnv2":
        from scorelab.conversion.ncsn import convert_ncsnv2_checkpoint

        raw = convert_ncsnv2_checkpoint(official, net, ema=False)
        ema = convert_ncsnv2_checkpoint(official, net, ema=True) if len(official) >= 5 else None
        step = int(official[3]) if len(official) >= 4 else 0
        return raw, ema, step
    from scorelab.conversion.score_sde import convert_score_sde_checkpoint

    raw = convert_score_sde_checkpoint(official, net, use_ema=False)
    ema = convert_score_sde_checkpoint(official, net, use_ema=True) if "ema" in official else None
    return raw, ema, int(official.get("step", 0))


def convert(
    fmt: str,
    experiment: str,
    official_path: str | Path,
    out: str | Path,
    overrides: list[str] | None = None,
) -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, got {fmt!r}")
    if not Path(official_path).is_file():  # before the network is built
        what = "is a directory" if Path(official_path).is_dir() else "not found"
        raise FileNotFoundError(f"official checkpoint {what}: {official_path}; give the file")
    if Path(out).is_dir():
        raise ValueError(
            f"--out {out} is a directory; give a file name, e.g. {Path(out) / 'converted.ckpt'}"
        )
    known = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
    if experiment not in known:
        raise ValueError(
            f"--experiment {experiment!r} is not an experiment; choose one of: {', '.join(known)}"
        )
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"experiment={experiment}", "paths.output_dir=.", *(overrides or [])],
        )
    module = build_module(cfg)
    official = _load_official(Path(official_path))
    raw, ema, step = convert_weights(fmt, official, module.model.net)
    module.model.net.load_state_dict(raw, strict=True)
    module.ema.module.net.load_state_dict(ema if ema is not None else raw, strict=True)
    checkpoint = {
        "state_dict": module.state_dict(),
        "scorelab_config": to_plain(cfg),
        "global_step": step,
        "epoch": 0,
        "pytorch-lightning_version": lightning.__version__,
        "converted_from": {"format": fmt, "path": str(official_path), "had_ema": ema is not None},
    }
    atomic_torch_save(checkpoint, out)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--experiment", required=True, help="experiment config fixing the architecture")
    p.add_argument("--official", required=True, help="path to the official checkpoint")
    p.add_argument("--out", required=True, help="where to write the scorelab checkpoint")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. model.net.ngf=64")
    args = p.parse_args(argv)
    try:
        path = convert(args.format, args.experiment, args.official, args.out, args.overrides)
    except (ValueError, FileNotFoundError) as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        msg = " | ".join(lines) if lines else type(err).__name__
        print(f"error: {msg[:1500]}", file=sys.stderr)
        return 2
    print(f"wrote {path}; sample it with: python -m scorelab.sample ckpt_path={path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
