"""Training throughput, memory and FLOP efficiency of every score network.

For each network (built from its ``conf/model/<name>.yaml`` at CIFAR-10 size) and each mode
(fp32 eager, bf16 autocast, channels_last, optionally torch.compile) this measures

* training images/s: forward + backward + Adam step, median over ``--steps`` timed steps after
  ``--warmup`` untimed ones, at batch ``--batch``;
* peak memory: ``torch.cuda.max_memory_allocated`` on GPU; on CPU the peak resident set size
  (sampled every 2 ms) above the level before the network was built, each row in a fresh
  subprocess so that memory freed by earlier rows cannot hide it;
* forward + backward FLOPs per image, counted by ``torch.utils.flop_counter.FlopCounterMode``;
* the fraction of the machine's peak reached, where the peak is measured in the same run with a
  large matmul (fp32 on CPU, bf16 on GPU).

Results go to ``benchmarks/results/nets_<device>.json`` and ``.md``.

    python benchmarks/bench_nets.py                      # every network, CPU defaults
    python benchmarks/bench_nets.py --nets ncsnpp ddpmpp --batch 8 --modes fp32 bf16
    python benchmarks/bench_nets.py --device cuda --batch 128 --compile
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from scorelab.runs import write_text_atomic  # noqa: E402

SDE_NETS = ["ncsnpp", "ncsnpp_deep", "ddpmpp", "ddpmpp_deep", "ddpm"]
# Other networks of the repository, benchmarked when their modules exist.
OTHER_NETS = {
    "unet_small": "scorelab.nets.unet_small",
    "ncsn": "scorelab.nets.refinenet",
    "ncsnv2": "scorelab.nets.refinenet",
}
MODES = ["fp32", "bf16", "channels_last", "channels_last_bf16"]


# ----------------------------------------------------------------------------------------------
# Machine


def machine_description(device: torch.device) -> dict:
    """CPU/GPU model, core and thread counts, library versions and the load at start."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    flags = ""
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def measured_peak_flops(device: torch.device, seconds: float = 3.0) -> dict:
    """Best observed matmul throughput (fp32 on CPU, bf16 on GPU) in FLOP/s."""
    if device.type == "cuda":
        n, dtype = 8192, torch.bfloat16
    else:
        n, dtype = 2048, torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        sync(device)
        t0 = time.perf_counter()
        (a @ b).sum()
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return {"flops": best, "matmul": f"{n}x{n} {str(dtype).removeprefix('torch.')}"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RssPeak:
    """Peak resident set size, sampled by a background thread while the context is active."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def rss(self) -> int:
        return self.proc.memory_info().rss

    def __enter__(self) -> RssPeak:
        self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------------------------------------
# Networks


def build_net(name: str, image_size: int = 32, channels: int = 3) -> tuple[nn.Module, str]:
    """Instantiate ``conf/model/<name>.yaml`` at the given data size; returns (net, cond kind).

    The cond kind is ``sigma`` (σ > 0), ``time`` (999·t), ``index`` (an integer noise level)
    or ``none``.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")
    ctx = OmegaConf.create(
        {
            "data": {
                "image_size": image_size,
                "channels": channels,
                "dim": channels * image_size**2,
            },
            "sde": {"num_scales": 10},
            "model": cfg,
        }
    )
    net = instantiate(ctx.model.net)
    if "parametrization" in cfg:
        kind = str(cfg.parametrization.net_cond)
    else:
        kind = "sigma" if getattr(net, "embedding_type", "") == "fourier" else "time"
    return net, kind


def make_cond(kind: str, batch: int, device: torch.device, num_classes: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    u = torch.rand(batch, generator=g)
    if kind == "index":
        return torch.randint(0, num_classes, (batch,), generator=g).to(device)
    if kind == "time":
        return (999.0 * u).to(device)
    return (0.01 * 5000.0**u).to(device)  # sigma in (0.01, 50); also used for "none"


def available_nets(requested: list[str] | None) -> Iterator[str]:
    names = requested or SDE_NETS + list(OTHER_NETS)
    for name in names:
        module = OTHER_NETS.get(name)
        if module is not None:
            try:
                importlib.import_module(module)
            except ImportError as err:
                print(f"skip {name}: {err}", file=sys.stderr)
                continue
        if not (ROOT / "conf" / "model" / f"{name}.yaml").exists():
            print(f"skip {name}: no conf/model/{name}.yaml", file=sys.stderr)
            continue
        yield name


# ----------------------------------------------------------------------------------------------
# Measurements


def autocast_for(mode: str, device: torch.device) -> contextlib.AbstractContextManager:
    if "bf16" in mode:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_step(
    net: nn.Module, x: torch.Tensor, cond: torch.Tensor, mode: str, device: torch.device
) -> Callable[[], None]:
    """One training step: forward, MSE to a fixed target, backward, Adam update."""
    opt = torch.optim.Adam(net.parameters(), lr=2e-4)
    target = torch.randn_like(x)
    fwd = net

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast_for(mode, device):
            out = fwd(x, cond)
        loss = (out.float() - target).square().mean()
        loss.backward()
        opt.step()

    return step


def count_flops(net: nn.Module, x: torch.Tensor, cond: torch.Tensor) -> int:
    """Forward + backward FLOPs of one batch (FlopCounterMode convention: 2 per MAC)."""
    with FlopCounterMode(display=False) as counter:
        net(x, cond).square().mean().backward()
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def time_steps(step: Callable[[], None], device: torch.device, warmup: int, steps: int):
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def bench_one(
    name: str, mode: str, args: argparse.Namespace, device: torch.device, with_flops: bool
) -> dict:
    import hydra.utils  # noqa: F401  (imported before the baseline is taken)

    torch.manual_seed(0)
    rss = RssPeak() if device.type == "cpu" else None
    base = rss.rss() if rss else 0
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    net, kind = build_net(name)
    net = net.to(device).train()
    x = torch.rand(args.batch, 3, 32, 32, device=device) * 2 - 1
    cond = make_cond(kind, args.batch, device)
    if "channels_last" in mode:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    params = sum(p.numel() for p in net.parameters())
    flops = count_flops(net, x[:1], cond[:1]) if with_flops else None
    model = torch.compile(net) if mode.endswith("compile") else net
    step = make_step(model, x, cond, mode.removesuffix("+compile"), device)
    # The peak is measured again next to each row: on a shared machine it drifts with load.
    row_peak = measured_peak_flops(device, seconds=1.5)["flops"]
    with rss if rss else contextlib.nullcontext():
        times = time_steps(step, device, args.warmup, args.steps)
    med = statistics.median(times)
    res = {
        "net": name,
        "mode": mode,
        "batch": args.batch,
        "params": params,
        "step_s": times,
        "median_step_s": med,
        "img_per_s": args.batch / med,
        "peak_mem_mib": (
            (rss.peak - base) / 2**20 if rss else torch.cuda.max_memory_allocated(device) / 2**20
        ),
        "fwd_bwd_flops_per_img": flops,
        "row_peak_flops": row_peak,
    }
    del net, model, step
    return res


def run_isolated(name: str, mode: str, args: argparse.Namespace, with_flops: bool) -> dict:
    """Run :func:`bench_one` in a fresh interpreter and return its result."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--device",
        "cpu",
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--row",
        name,
        mode,
        "1" if with_flops else "0",
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def to_markdown(report: dict) -> str:
    m, peak = report["machine"], report["peak"]
    lines = [
        f"# Network training benchmark ({m['device']})",
        "",
        f"- Machine: {m.get('gpu', m['cpu'])}; {m['cpu_count']} cores, "
        f"{m['torch_threads']} torch threads; torch {m['torch']}, Python {m['python']}; "
        f"avx512_bf16: {m['avx512_bf16']}.",
        f"- Load average at start: {m['load_average_at_start']}. The machine was shared with "
        "other jobs, so absolute numbers are noisy; compare rows of the same run.",
        f"- Measured peak: {peak['flops'] / 1e9:.1f} GFLOP/s ({peak['matmul']} matmul).",
        f"- Batch {report['args']['batch']}, 32x32x3, median of {report['args']['steps']} timed "
        f"steps after {report['args']['warmup']} warm-up (forward + backward + Adam).",
        f"- Command: `{report['command']}`",
        "",
        "| network | params (M) | mode | img/s | step (s) | peak mem (MiB) | "
        "fwd+bwd GFLOP/img | fraction of peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        frac = r.get("fraction_of_peak")
        lines.append(
            f"| {r['net']} | {r['params'] / 1e6:.2f} | {r['mode']} | {r['img_per_s']:.2f} | "
            f"{r['median_step_s']:.2f} | {r['peak_mem_mib']:.0f} | "
            f"{r['gflops_per_img']:.1f} | {'' if frac is None else f'{frac:.0%}'} |"
        )
    lines += [
        "",
        "The fraction of peak compares achieved FLOP/s (img/s × FLOPs/img, counted in "
        "fp32) with the fp32 (CPU) or bf16 (GPU) matmul peak, the larger of the one above "
        "and one measured just before the row; for bf16 rows on CPU it can exceed 100%.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nets", nargs="*", default=None, help="default: all available")
    p.add_argument(
        "--modes", nargs="*", default=None, choices=MODES, help="default: fp32 bf16 channels_last"
    )
    p.add_argument("--compile", action="store_true", help="also time torch.compile (fp32)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="default 4 on CPU, 128 on GPU")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 3 CPU, 20 GPU)")
    p.add_argument("--warmup", type=int, default=None, help="default 1 CPU, 5 GPU")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="on CPU, run every row in this process (faster, memory less exact)",
    )
    p.add_argument("--row", nargs=3, metavar=("NET", "MODE", "FLOPS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    args.batch = args.batch or (4 if cpu else 128)
    args.steps = args.steps or (3 if cpu else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if cpu else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.row:  # child process of run_isolated: one row, printed as JSON
        name, mode, with_flops = args.row
        print(json.dumps(bench_one(name, mode, args, device, with_flops == "1")))
        return
    modes = args.modes or ["fp32", "bf16", "channels_last"]
    if args.compile:
        modes = [*modes, "fp32+compile"]

    report = {
        "command": "python " + " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "machine": machine_description(device),
        "args": {"batch": args.batch, "steps": args.steps, "warmup": args.warmup},
        "peak": measured_peak_flops(device),
        "results": [],
    }
    print(f"peak {report['peak']['flops'] / 1e9:.1f} GFLOP/s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"nets_{device.type}"
    for name in available_nets(args.nets):
        flops = None
        for i, mode in enumerate(modes):
            if cpu and not args.in_process:
                r = run_isolated(name, mode, args, with_flops=i == 0)
            else:
                r = bench_one(name, mode, args, device, with_flops=i == 0)
            flops = r["fwd_bwd_flops_per_img"] or flops
            r["fwd_bwd_flops_per_img"] = flops
            r["gflops_per_img"] = (flops or 0) / 1e9
            r["fraction_of_peak"] = (
                r["img_per_s"] * flops / max(r["row_peak_flops"], report["peak"]["flops"])
                if flops
                else None
            )
            report["results"].append(r)
            print(
                f"{name:12s} {mode:20s} {r['img_per_s']:8.2f} img/s  "
                f"{r['peak_mem_mib']:8.0f} MiB  {r['gflops_per_img']:.1f} GFLOP/img",
                flush=True,
            )
            # Written after every row so that a long run leaves partial results.
            write_text_atomic(stem.with_suffix(".json"), json.dumps(report, indent=1) + "\n")
            write_text_atomic(stem.with_suffix(".md"), to_markdown(report))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
