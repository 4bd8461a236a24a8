"""Side-by-side training throughput: official score_sde_pytorch networks vs ours.

Both networks are built for the same CIFAR-10 configuration, given identical weights (the
official ones converted with :mod:`scorelab.conversion.score_sde`, after checking that the
outputs agree), and timed in the same process at the same batch. Steps are interleaved
(official, ours fp32, ours bf16, official, ...), so that a machine shared with other jobs slows
every variant alike; the figures are medians and the speed-up is the ratio of medians.

The official checkout is not part of this repository; pass its path:

    python benchmarks/bench_official.py --official-repo /path/to/score_sde_pytorch \\
        --nets ncsnpp ddpmpp --batch 4 8

On CPU the official code runs its pure-PyTorch ``upfirdn2d_native`` path; its CUDA extension
is never compiled (``torch.utils.cpp_extension.load`` is stubbed while it is imported). The
official network runs with ``scale_by_sigma=False`` and ``centered=True`` so that both compute
the same raw function. Writes ``benchmarks/results/official_vs_ours_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_nets import (  # noqa: E402
    ROOT,
    autocast_for,
    build_net,
    machine_description,
    make_cond,
    measured_peak_flops,
    sync,
)

from scorelab.conversion.score_sde import convert_score_sde_state_dict  # noqa: E402
from scorelab.io import write_text_atomic  # noqa: E402

# Official config fields that our yaml files do not carry.
_EXTRA = dict(
    nonlinearity="swish",
    attention_type="ddpm",
    conv_size=3,
    scale_by_sigma=False,
    sigma_min=0.01,
    sigma_max=50.0,
    num_scales=1000,
    beta_min=0.1,
    beta_max=20.0,
)


def import_official(repo: Path):
    """Import the official ``models`` package without building its CUDA extension."""
    sys.path.insert(0, str(repo))
    with mock.patch("torch.utils.cpp_extension.load", return_value=None):
        import op  # noqa: F401
    from models import ddpm, ncsnpp  # noqa: F401  (register the model classes)
    from models import utils as mutils

    return mutils


def official_net(mutils, name: str, ours_kwargs: dict, image_size: int = 32) -> nn.Module:
    """Build the official model from the keyword arguments of our yaml config."""
    model = dict(_EXTRA, **ours_kwargs)
    model["name"] = "ddpm" if name == "ddpm" else "ncsnpp"
    model.pop("image_size", None)
    channels = model.pop("channels", 3)
    model["ch_mult"] = tuple(model["ch_mult"])
    model["attn_resolutions"] = tuple(model["attn_resolutions"])
    if "fir_kernel" in model:
        model["fir_kernel"] = list(model["fir_kernel"])
    config = SimpleNamespace(
        model=SimpleNamespace(**model),
        data=SimpleNamespace(image_size=image_size, num_channels=channels, centered=True),
        training=SimpleNamespace(continuous=True),
    )
    return mutils.get_model(model["name"])(config)


def our_kwargs(name: str) -> dict:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")
    kw = OmegaConf.to_container(cfg.net, resolve=False)
    kw.pop("_target_")
    kw["image_size"], kw["channels"] = 32, 3
    return kw


def compare(name: str, batch: int, args: argparse.Namespace, mutils, device: torch.device):
    torch.manual_seed(0)
    ours, kind = build_net(name)
    official = official_net(mutils, name, our_kwargs(name))
    with torch.no_grad():  # move away from the near-zero init so that outputs are comparable
        for p in official.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ours.load_state_dict(convert_score_sde_state_dict(official.state_dict(), ours))
    ours, official = ours.to(device), official.to(device)
    x = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1
    cond = make_cond(kind, batch, device)
    with torch.no_grad():
        diff = (ours.eval()(x, cond) - official.eval()(x, cond)).abs().max().item()
    ours.train()
    official.train()
    target = torch.randn_like(x)

    def stepper(net: nn.Module, mode: str, fused: bool):
        # Each side trains as its own code does: the official trainer builds a plain Adam; ours
        # uses the fused Adam that conf/train.yaml selects (one kernel over all parameters).
        opt = torch.optim.Adam(net.parameters(), lr=2e-4, fused=fused)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with autocast_for(mode, device):
                out = net(x, cond)
            (out.float() - target).square().mean().backward()
            opt.step()

        return step

    # Separate copies so that each variant trains its own weights with its own optimiser.
    ours_bf16 = build_net(name)[0].to(device).train()
    ours_bf16.load_state_dict(ours.state_dict())
    variants = {
        "official_fp32": stepper(official, "fp32", fused=False),
        "ours_fp32": stepper(ours, "fp32", fused=True),
        "ours_bf16_autocast": stepper(ours_bf16, "bf16", fused=True),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.warmup + args.steps):
        for k, step in variants.items():
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            if r >= args.warmup:
                times[k].append(time.perf_counter() - t0)
        print(
            f"  {name} batch {batch} round {r}: "
            + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items() if v),
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in times.items()}
    img_s = {k: batch / v for k, v in med.items()}
    return {
        "net": name,
        "batch": batch,
        "max_abs_output_diff": diff,
        "params": sum(p.numel() for p in ours.parameters()),
        "step_s": times,
        "median_step_s": med,
        "img_per_s": img_s,
        "speedup_fp32": img_s["ours_fp32"] / img_s["official_fp32"],
        "speedup_bf16_vs_official_fp32": img_s["ours_bf16_autocast"] / img_s["official_fp32"],
        # Median over rounds of the ratio of neighbouring steps: robust to slow phases of load.
        "paired_speedup_fp32": statistics.median(
            o / u for o, u in zip(times["official_fp32"], times["ours_fp32"])
        ),
        "paired_speedup_bf16_vs_official_fp32": statistics.median(
            o / u for o, u in zip(times["official_fp32"], times["ours_bf16_autocast"])
        ),
    }


def to_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Official score_sde_pytorch vs scorelab networks ({m['device']})",
        "",
        f"- Machine: {m.get('gpu', m['cpu'])}; {m['cpu_count']} cores, {m['torch_threads']} "
        f"torch threads; torch {m['torch']}; avx512_bf16: {m['avx512_bf16']}.",
        f"- Load average at start: {m['load_average_at_start']}. The machine was shared with "
        "other jobs; steps of the three variants were interleaved so that load affects them "
        "alike, but absolute img/s are lower than on an idle machine.",
        f"- Measured fp32 matmul peak in this run: {report['peak']['flops'] / 1e9:.1f} GFLOP/s.",
        f"- Median of {report['args']['steps']} timed training steps (forward + backward + "
        f"Adam; official: plain Adam as its trainer builds it, ours: fused Adam as conf/train.yaml "
        f"selects) after {report['args']['warmup']} warm-up, per variant.",
        f"- Command: `{report['command']}`",
        "",
        "| network | batch | official fp32 img/s | ours fp32 img/s | ours bf16 img/s | "
        "fp32 speed-up | bf16 vs official fp32 | paired fp32 / bf16 speed-up | "
        "max output diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        i = r["img_per_s"]
        lines.append(
            f"| {r['net']} | {r['batch']} | {i['official_fp32']:.2f} | {i['ours_fp32']:.2f} | "
            f"{i['ours_bf16_autocast']:.2f} | {r['speedup_fp32']:.2f}x | "
            f"{r['speedup_bf16_vs_official_fp32']:.2f}x | {r['paired_speedup_fp32']:.2f}x / "
            f"{r['paired_speedup_bf16_vs_official_fp32']:.2f}x | "
            f"{r['max_abs_output_diff']:.1e} |"
        )
    lines += [
        "",
        "Speed-ups are ratios of median img/s; the paired speed-up is the median over rounds "
        "of (official step time / our step time) for steps run back to back, which is less "
        "sensitive to other jobs' load. Max output diff: largest |ours - official| over one "
        "batch with identical (converted) weights, in eval mode.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--official-repo",
        type=Path,
        required=True,
        help="a checkout of yang-song/score_sde_pytorch",
    )
    p.add_argument("--nets", nargs="*", default=["ncsnpp", "ddpmpp"])
    p.add_argument("--batch", type=int, nargs="*", default=[4])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    if not (args.official_repo / "models" / "ncsnpp.py").exists():
        raise SystemExit(f"--official-repo {args.official_repo} has no models/ncsnpp.py")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mutils = import_official(args.official_repo)
    report = {
        "command": "python bench_official.py --official-repo <checkout> "
        + " ".join(
            a
            for a in (argv or sys.argv[1:])
            if not a.startswith("--official-repo") and a != str(args.official_repo)
        ),
        "machine": machine_description(device),
        "args": {"steps": args.steps, "warmup": args.warmup},
        "peak": measured_peak_flops(device),
        "results": [],
    }
    out = args.out / f"official_vs_ours_{device.type}"
    args.out.mkdir(parents=True, exist_ok=True)
    for batch in args.batch:
        for name in args.nets:
            report["results"].append(compare(name, batch, args, mutils, device))
            # Write after every comparison so that a long run leaves partial results.
            write_text_atomic(out.with_suffix(".json"), json.dumps(report, indent=1) + "\n")
            write_text_atomic(out.with_suffix(".md"), to_markdown(report))
    print(to_markdown(report))


if __name__ == "__main__":
    main()
