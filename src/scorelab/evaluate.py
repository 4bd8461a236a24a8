"""Evaluate samples: ``python -m scorelab.evaluate ckpt_path=PATH [sampler=NAME] [metrics=[...]]``.

Three sources of samples:

- a checkpoint (``ckpt_path=...``): samples are drawn with the EMA weights (``use_ema=false``
  for the raw ones) and the checkpoint's sampler, or ``sampler=NAME``; the checkpoint's own
  config wins over an ``experiment=``'s, with the command line's keys (``sampler.*``,
  ``sde.*``, ...) on top;
- the exact score of an analytic mixture (``model=oracle data=gmm sde=... sampler=...``, or
  ``experiment=NAME model=oracle`` for that experiment's data, SDE and sampler);
- existing samples (``samples_path=``): a ``samples.npz`` with array ``samples`` (images
  ``(N, C, H, W)`` in [0, 1] or uint8, points ``(N, D)``) or a folder of image files, evaluated
  against ``data=...``.

Metrics (``metrics=null`` takes the data's defaults, see :mod:`scorelab.metrics.suite`):
points → ``sliced_w2, mmd, mode_weight_error, exact_nll``; MNIST → ``mnist_fid,
classifier_score, mode_coverage``; CIFAR-10 / CelebA → ``fid, is, kid``. ``bpd`` adds bits/dim of
the test split through the probability-flow ODE (nats/dim for points).

Writes ``metrics.json`` (atomically) into the run directory: per metric its value (and std or
standard error where defined), number of samples, the sampler's ``describe()``, its NFE and the
wall time; ``metrics`` holds the bare numbers for ``scorelab.report``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from scorelab.guidance import describe_guidance
from scorelab.io import write_json_atomic
from scorelab.likelihood import bits_per_dim, dequantize, ode_likelihood
from scorelab.lit.build import (
    ConfigError,
    build_datamodule,
    build_noise,
    build_score_model,
)
from scorelab.lit.sampling_model import (
    apply_guidance,
    build_sampling_model,
    check_request,
    checkpoint_sampler_keys,
    draw,
    load_sampling_model,
)
from scorelab.metrics.suite import (
    MetricConfigError,
    MetricValue,
    build_metric_suite,
    check_samples,
    data_info,
)
from scorelab.outputs import write_samples
from scorelab.runs import CONF_DIR, entry_point, run_cli, task_overrides
from scorelab.sde import SDE

BPD = "bpd"


# ------------------------------------------------------------------------------ samples on disk
def load_samples(path: str | Path) -> tuple[Tensor, dict]:
    """Samples from ``samples.npz`` (array ``samples``) or an image folder, as floats.

    uint8 images become floats in [0, 1]. Returns (samples, what ``sample_info.json`` next to
    them says about the sampler, or {}).
    """
    p = Path(path)
    if p.is_dir():
        x = _load_image_folder(p)
        info_file = p / "sample_info.json"
    elif p.is_file():
        if p.suffix != ".npz":
            raise ConfigError(f"samples_path={p} must be a .npz file or an image folder")
        with np.load(p, allow_pickle=False) as data:
            if "samples" not in data.files:
                raise ConfigError(
                    f"samples_path={p} has arrays {data.files}, not 'samples'; save with "
                    "np.savez(path, samples=x)"
                )
            arr = data["samples"]
        x = torch.from_numpy(arr)
        info_file = p.parent / "sample_info.json"
    else:
        raise ConfigError(
            f"samples_path={p} does not exist; give the samples.npz that scorelab.sample wrote, "
            "or a folder of images"
        )
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif x.is_floating_point():
        x = x.float()
    else:
        raise ConfigError(f"samples in {p} have dtype {x.dtype}; use float32 or uint8")
    meta = json.loads(info_file.read_text()) if info_file.is_file() else {}
    return x, meta


def _load_image_folder(folder: Path) -> Tensor:
    from PIL import Image

    from scorelab.metrics.inception import list_image_files

    files = list_image_files(folder)
    if not files:
        raise ConfigError(f"samples_path={folder} holds no .png/.jpg/.jpeg/.bmp/.webp images")
    arrays = []
    for f in files:
        with Image.open(f) as im:
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB")
            a = np.asarray(im)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        if arrays and a.shape != arrays[0].shape:
            raise ConfigError(
                f"image {f} has shape {a.shape} (C, H, W), but {files[0].name} has "
                f"{arrays[0].shape}; all images must share one size and channel count"
            )
        arrays.append(a)
    return torch.from_numpy(np.stack(arrays))


# ------------------------------------------------------------------------------ bits/dim
def _bpd_options(cfg: DictConfig) -> dict:
    b = OmegaConf.to_container(cfg.get("bpd") or {}, resolve=True)
    opts = {
        "repeats": 1,
        "n": None,
        "batch_size": 500,
        "split": "test",
        "rtol": 1e-5,
        "atol": 1e-5,
        "eps": 1e-5,
        "method": "dopri5",
        "divergence": "hutchinson_rademacher",
        **b,
    }
    if int(opts["repeats"]) < 1:
        raise ConfigError(f"bpd.repeats must be >= 1 (the paper uses 5), got {opts['repeats']}")
    if int(opts["batch_size"]) < 1:
        raise ConfigError(f"bpd.batch_size must be >= 1, got {opts['batch_size']}")
    from scorelab.likelihood import DIVERGENCES
    from scorelab.sampling.ode import ADAPTIVE_METHODS, FIXED_METHODS

    methods = (*ADAPTIVE_METHODS, *FIXED_METHODS)
    if opts["method"] not in methods:
        raise ConfigError(
            f"bpd.method={opts['method']!r} is not an ODE solver; use one of {', '.join(methods)}"
        )
    if opts["divergence"] not in DIVERGENCES:
        raise ConfigError(
            f"bpd.divergence={opts['divergence']!r} must be one of {', '.join(DIVERGENCES)}"
        )
    for key in ("rtol", "atol"):
        if not float(opts[key]) > 0:
            raise ConfigError(f"bpd.{key}={opts[key]} must be > 0 (the solver's tolerance; 1e-5)")
    if not 0 < float(opts["eps"]) < 1:
        raise ConfigError(
            f"bpd.eps={opts['eps']} must be in (0, T) = (0, 1) (the ODE's end time; 1e-5)"
        )
    if opts["n"] is not None and int(opts["n"]) < 2:
        raise ConfigError(
            f"bpd.n={opts['n']} must be >= 2 (test examples, for a standard error) or null"
        )
    return opts


def _check_bpd_split(split: str, info) -> None:
    """The held-out split bits/dim is computed on must exist for the data."""
    allowed = ("test",) if info.is_points else ("train", "test")
    if str(info.name).startswith("celeba"):
        allowed = ("train", "valid", "test")
    if split not in allowed:
        what = "toy data has one held-out split" if info.is_points else "image data has splits"
        raise ConfigError(f"bpd.split={split!r}: {what} {', '.join(map(repr, allowed))}")


def bpd_data(dm, info, split: str, n: int) -> Tensor:
    """The first ``n`` test examples: uint8 images (n, C, H, W), or points (n, D)."""
    if info.is_points:
        if split != "test":
            raise ConfigError(f"bpd.split={split!r}: toy data has one held-out split, 'test'")
        dm.setup("test")
        data = dm.test_dataloader()
        x = torch.cat(list(iter(data)))
    else:
        dm.check_files()
        src = dm.source(split)
        x = src.images(torch.arange(min(n, src.n)))
    if len(x) < 2:
        raise ConfigError(
            f"bpd needs >= 2 {split} examples to report a standard error, got {len(x)}"
        )
    return x[:n]


def bits_per_dim_eval(model, dm, info, opts: dict, n: int, seed: int, device: str) -> MetricValue:
    """Bits/dim (images) or NLL in nats/dim (points) of the test split under the
    probability-flow ODE of ``model``: mean over examples and standard error.

    Images are uniformly dequantized in the data's scale, ``bpd.repeats`` times; the offset for
    the scaling (zero_one: +8, minus_one_one: +7) is applied by
    :func:`scorelab.likelihood.bits_per_dim`.
    """
    t0 = time.time()
    data = bpd_data(dm, info, str(opts["split"]), n)
    sde = model.noise
    score = model.time_score()
    D = int(np.prod(info.shape))
    repeats = 1 if info.is_points else int(opts["repeats"])
    gen = torch.Generator(device=device).manual_seed(seed)
    per = torch.zeros(repeats, len(data), dtype=torch.float64)
    nfes = []
    model = model.to(device)
    for r in range(repeats):
        for start in range(0, len(data), int(opts["batch_size"])):
            chunk = data[start : start + int(opts["batch_size"])].to(device)
            x = chunk.float() if info.is_points else dequantize(chunk, gen, data_range=info.scaling)
            res = ode_likelihood(
                score,
                x,
                sde,
                divergence=opts["divergence"],
                rtol=float(opts["rtol"]),
                atol=float(opts["atol"]),
                eps=float(opts["eps"]),
                method=str(opts["method"]),
                generator=gen,
            )
            logp = res.logp.detach().double().cpu()
            v = -logp / D if info.is_points else bits_per_dim(logp, D, data_range=info.scaling)
            per[r, start : start + len(chunk)] = v
            nfes.append(res.nfe)
    point = per.mean(0)
    extra = {
        "unit": "nats/dim" if info.is_points else "bits/dim",
        "split": opts["split"],
        "n_data": len(data),
        "repeats": repeats,
        "dequantization": None if info.is_points else f"uniform, {info.scaling} scale",
        "offset": None if info.is_points else {"zero_one": 8, "minus_one_one": 7}[info.scaling],
        "solver": {k: opts[k] for k in ("method", "rtol", "atol", "eps", "divergence")},
        "nfe": float(np.mean(nfes)),
    }
    mix = getattr(dm, "distribution", None)
    if info.is_points and mix is not None:
        # The density is known: the exact value on the same points, and the paired error.
        exact = -mix.log_prob(data.double().cpu()) / D
        err = point - exact
        extra["exact_value"] = float(exact.mean())
        extra["error_vs_exact"] = float(err.mean())
        extra["error_vs_exact_stderr"] = float(err.std() / math.sqrt(len(err)))
    return MetricValue(
        BPD,
        float(point.mean()),
        len(data),
        time.time() - t0,
        stderr=float(point.std() / math.sqrt(len(point))),
        extra=extra,
    )


# ------------------------------------------------------------------------------ the task
def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _split_metrics(cfg: DictConfig) -> tuple[list[str] | None, bool]:
    m = cfg.get("metrics")
    if m is None:
        return None, False
    names = [str(n) for n in (m if OmegaConf.is_list(m) or isinstance(m, list) else [m])]
    if not names:
        raise ConfigError("metrics=[] selects nothing; name metrics or use metrics=null")
    want_bpd = BPD in names
    rest = [n for n in names if n != BPD]
    return (rest if rest or not want_bpd else []), want_bpd


def _options(cfg: DictConfig) -> dict:
    keys = ("toy", "mnist", "fid", "is", "kid")
    opts = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in keys if cfg.get(k)}
    toy = opts.get("toy") or {}
    for key, low, what in (
        ("n_reference", 2, "reference points drawn from the distribution"),
        ("n_projections", 1, "sliced-W2 directions"),
        ("mmd_max_n", 2, "points per side of the MMD"),
    ):
        v = toy.get(key)
        if v is not None and int(v) < low:
            raise ConfigError(f"toy.{key}={v} must be >= {low} ({what})")
    return opts


def _model_for_bpd(cfg: DictConfig):
    """(score model, data config) of the checkpoint or the oracle, for bpd without sampling."""
    if cfg.get("ckpt_path"):
        loaded = load_sampling_model(cfg, need_sampler=False)
        return loaded.model, loaded.config["data"]
    if not cfg.model.get("oracle", False):
        raise ConfigError("metrics=[bpd] needs a model: ckpt_path=PATH or model=oracle data=gmm")
    return build_score_model(cfg, build_noise(cfg)), OmegaConf.to_container(cfg.data, resolve=True)


def _check_bpd_model(model) -> None:
    if not isinstance(model.noise, SDE):
        raise ConfigError(
            "bpd needs a model trained with an SDE (sde=ve, vp or subvp); this one uses discrete "
            "noise levels (sde=ncsn), which define no probability-flow ODE"
        )


def evaluate(cfg: DictConfig) -> dict:
    """Sample (or read samples), compute the metrics, write metrics.json; returns its content."""
    check_request(cfg, n_samples=False)
    start = time.time()
    device = _device()
    sample_names, want_bpd = _split_metrics(cfg)
    n = int(cfg.n_samples)
    sampler_desc, nfe, sampling_wall, source = None, None, 0.0, {}
    model, drawn = None, {}
    x = None

    # 1. Everything cheap first: the source, the data, the metrics' prerequisites.
    if cfg.get("samples_path"):
        if want_bpd:
            raise ConfigError("bpd needs a model, not samples: give ckpt_path=PATH or model=oracle")
        x, meta = load_samples(cfg.samples_path)
        data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
        n = len(x)
        sampler_desc, nfe = meta.get("sampler"), meta.get("nfe")
        sampling_wall = float(meta.get("wall_time_s", 0.0))
        source = {"kind": "samples", "samples_path": str(cfg.samples_path)}
    elif sample_names == [] and want_bpd:
        model, data_cfg = _model_for_bpd(cfg)
        source = {"kind": "checkpoint" if cfg.get("ckpt_path") else "oracle"}
    else:
        model, sampler, shape, to_unit, meta = build_sampling_model(cfg)
        model = apply_guidance(model, cfg, meta)  # guidance.label / guide_ckpt, refused early
        data_cfg = (
            meta["data"] if cfg.get("ckpt_path") else OmegaConf.to_container(cfg.data, resolve=True)
        )
        sampler_desc = sampler.describe()
        source = {"kind": "checkpoint" if cfg.get("ckpt_path") else "oracle"}
    if cfg.get("ckpt_path"):
        source.update(ckpt_path=str(cfg.ckpt_path), use_ema=bool(cfg.get("use_ema", True)))

    suite = None
    if sample_names != []:
        suite = build_metric_suite(data_cfg, sample_names, _options(cfg), device)
        if x is not None:
            check_samples(x, suite.info)
        suite.check(n)
    if want_bpd:
        _check_bpd_model(model)
        bpd_opts = _bpd_options(cfg)
        n_bpd = int(bpd_opts["n"]) if bpd_opts["n"] is not None else n
        if n_bpd < 2:
            raise ConfigError(
                f"bpd is computed on n_samples={n} test examples; it needs >= 2 (set bpd.n)"
            )
        dm = (
            suite.dm
            if suite is not None
            else build_datamodule(OmegaConf.create({"data": data_cfg}))
        )
        info = suite.info if suite is not None else data_info(data_cfg, dm)
        _check_bpd_split(str(bpd_opts["split"]), info)
        if not info.is_points:
            dm.check_files()

    # 2. Sampling.
    if x is None and suite is not None:
        if n < 1:
            raise ConfigError(f"n_samples must be >= 1, got {n}")
        suite.prepare()  # reference data and extractors: fail before a long sampling run
        x, nfe, sampling_wall = draw(
            model,
            sampler,
            shape,
            n,
            int(cfg.batch_size),
            int(cfg.seed),
            device,
            cfg.get("precision", 32),
        )
        x = to_unit(x.float().cpu())
        check_samples(x, suite.info)
        # images as uint8 (50,000 CIFAR-10 samples: 150 MB), the grid of the first 100
        drawn = write_samples(x, Path(cfg.paths.output_dir), max_figure=100, uint8=True)

    # 3. Metrics.
    results: list[MetricValue] = suite.compute(x) if suite is not None else []
    records = {}
    for mv in results:
        records[mv.name] = {
            **mv.as_dict(),
            "sampler": sampler_desc,
            "nfe": nfe,
            "sampling_wall_time_s": sampling_wall,
        }
    if want_bpd:
        mv = bits_per_dim_eval(model, dm, info, bpd_opts, n_bpd, int(cfg.seed), device)
        rec = mv.as_dict()
        rec.update(sampler={"name": "probability_flow_ode_likelihood", **rec["solver"]})
        records[BPD] = rec
        results.append(mv)

    flat = {}
    for mv in results:
        flat[mv.name] = mv.value
        if mv.std is not None:
            flat[f"{mv.name}_std"] = mv.std
        if mv.stderr is not None:
            flat[f"{mv.name}_stderr"] = mv.stderr
    out = Path(cfg.paths.output_dir)
    result = {
        "status": "ok",
        "task": "evaluate",
        "source": source,
        "data": {
            "name": (suite.info if suite else info).name,
            "shape": list((suite.info if suite else info).shape),
        },
        "n_samples": n if suite is not None else 0,
        "sampler": sampler_desc,
        "guidance": describe_guidance(model),
        "nfe": nfe,
        "precision": str(cfg.get("precision", 32)),
        "sampling_wall_time_s": sampling_wall,
        "results": records,
        "skipped": suite.skipped if suite is not None else {},
        "files": {k: str(v) for k, v in drawn.items()},
        "metrics": flat,
        "overrides": task_overrides(),
        "seed": int(cfg.seed),
        "wall_time_s": time.time() - start,
    }
    path = write_json_atomic(result, out / "metrics.json")
    for mv in results:
        err = (
            f" ± {mv.stderr:.4g} (s.e.)"
            if mv.stderr is not None
            else (f" ± {mv.std:.4g} (std)" if mv.std is not None else "")
        )
        note = ""
        if mv.name == "mode_coverage" and "confident_share" in mv.extra:
            note = (
                f" ({mv.extra['covered']}/10 digits; "
                f"{100 * mv.extra['confident_share']:.1f} % of samples classified with "
                f"confidence >= {mv.extra['confidence']})"
            )
        print(
            f"{mv.name:>18}: {mv.value:.6g}{err}{note}  [n={mv.n_samples}, {mv.wall_time_s:.1f}s]"
        )
    if drawn:
        print(f"samples: {drawn['samples_npz']}\ngrid:    {drawn['figure']} (the first 100)")
    print(f"metrics: {path}")
    return result


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
@entry_point
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except MetricConfigError as err:
        raise ConfigError(str(err)) from None


if __name__ == "__main__":
    sys.argv[1:] = checkpoint_sampler_keys(sys.argv[1:])  # sampler.KEY=V on a checkpoint
    run_cli(main)
