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
  large matmul, both in fp32 and in bf16 (the fp32 peak is the reference on CPU, the bf16 peak on
  GPU: model FLOP utilisation, MFU);
* with ``--compile``, the same modes under ``torch.compile`` and the compile time (the first
  step's wall time).

Results go to ``benchmarks/results/nets_<device>.json`` and ``.md`` (rewritten atomically after
every row, so an interrupted run leaves the rows it finished).

    python benchmarks/bench_nets.py                      # every network, CPU defaults
    python benchmarks/bench_nets.py --nets ncsnpp ddpmpp --batch 8 --modes fp32 bf16
    python benchmarks/bench_nets.py --device cuda --compile    # GPU: bf16 + channels_last + compile
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
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from scorelab.io import write_text_atomic  # noqa: E402

SDE_NETS = ["ncsnpp", "ncsnpp_deep", "ddpmpp", "ddpmpp_deep", "ddpm"]
# Other networks of the repository, benchmarked when their modules exist.
OTHER_NETS = {
    "unet_small": "scorelab.nets.unet_small",
    "ncsn": "scorelab.nets.refinenet",
    "ncsnv2": "scorelab.nets.refinenet",
}
MODES = ["fp32", "bf16", "channels_last", "channels_last_bf16"]  # each can take "+compile"


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


def measured_peak_flops(
    device: torch.device, dtype: torch.dtype | None = None, seconds: float = 3.0
) -> dict:
    """Best observed throughput of a large square matmul in ``dtype`` (default: fp32 on CPU,
    bf16 on GPU), in FLOP/s. TF32 stays off, so the fp32 peak is true fp32 on GPU too."""
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        sync(device)
        t0 = time.perf_counter()
        (a @ b).sum()
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return {"flops": best, "matmul": f"{n}x{n} {dtype_name(dtype)}"}


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def compute_dtype(mode: str) -> torch.dtype:
    """The dtype a mode's matmuls and convolutions run in."""
    return torch.bfloat16 if "bf16" in mode else torch.float32


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RssPeak:
    """Peak resident set size while the context is active, from the kernel's high-water mark
    (``VmHWM``, reset on entry through ``/proc/self/clear_refs``), so nothing polls and steals
    CPU from the timed steps. Falls back to sampling every 2 ms where that file is missing."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rss(self) -> int:
        return self.proc.memory_info().rss

    @staticmethod
    def _hwm() -> int | None:
        with contextlib.suppress(OSError, ValueError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return None

    def __enter__(self) -> RssPeak:
        self.peak = self.rss()
        try:
            Path("/proc/self/clear_refs").write_bytes(b"5")  # resets VmHWM to the current RSS
            self._use_hwm = self._hwm() is not None
        except OSError:
            self._use_hwm = False
        if not self._use_hwm:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.rss())

    def __exit__(self, *exc: object) -> None:
        if self._use_hwm:
            self.peak = max(self.peak, self._hwm() or 0)
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()


# ----------------------------------------------------------------------------------------------
# Networks


def build_net(name: str, image_size: int = 32, channels: int = 3) -> tuple[nn.Module, str]:
    """Instantiate ``conf/model/<name>.yaml`` (with its default parametrisation) at the given
    data size; returns (net, the kind of cond it expects, ``scorelab.nets.conditioning``)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from scorelab.nets.conditioning import cond_input

    cfg = OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")
    for entry in cfg.pop("defaults", []):
        if OmegaConf.is_dict(entry) and "parametrization" in entry:
            path = ROOT / "conf" / "model" / "parametrization" / f"{entry.parametrization}.yaml"
            cfg.parametrization = OmegaConf.load(path)
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
    return net, cond_input(net) or "sigma"


def make_cond(kind: str, batch: int, device: torch.device, num_classes: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    u = torch.rand(batch, generator=g)
    if kind == "index":
        return torch.randint(0, num_classes, (batch,), generator=g).to(device)
    if kind == "step":
        return (999.0 * u).to(device)
    if kind == "time":
        return u.to(device)
    sigma = 0.01 * 5000.0**u  # sigma in (0.01, 50); also used for "none"
    return (0.25 * torch.log(sigma) if kind == "c_noise" else sigma).to(device)


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
    opt = torch.optim.Adam(net.parameters(), lr=2e-4, fused=True)  # as conf/train.yaml selects
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


def time_steps(
    step: Callable[[], None],
    device: torch.device,
    warmup: int,
    steps: int,
    chunk: int = 1,
    min_time: float = 0.0,
) -> tuple[list[float], float]:
    """Per-step wall times of at least ``steps`` steps after ``warmup`` untimed ones, and the
    wall time of the first warm-up step (which includes any compilation).

    Timing goes on past ``steps`` until ``min_time`` seconds are timed (at most 1000 entries),
    so that fast networks get enough steps for a stable median. On GPU the steps are timed in
    chunks of ``chunk`` with one synchronisation per chunk, so the host queues work ahead as
    it does in training; each entry is a chunk's mean."""
    first = 0.0
    for i in range(warmup):
        t0 = time.perf_counter()
        step()
        sync(device)
        if i == 0:
            first = time.perf_counter() - t0
    times: list[float] = []
    n = max(1, steps // chunk)
    while len(times) < n or (sum(times) * chunk < min_time and len(times) < 1000):
        t0 = time.perf_counter()
        for _ in range(chunk):
            step()
        sync(device)
        times.append((time.perf_counter() - t0) / chunk)
    return times, first


def bench_one(
    name: str, mode: str, args: argparse.Namespace, device: torch.device, with_flops: bool
) -> dict:
    import hydra.utils  # noqa: F401  (imported before the baseline is taken)

    torch.manual_seed(0)
    rss = RssPeak() if device.type == "cpu" else None
    base = rss.rss() if rss else 0
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    net, kind = build_net(name, args.image_size, args.channels)
    net = net.to(device).train()
    x = torch.rand(args.batch, args.channels, args.image_size, args.image_size, device=device)
    x = x * 2 - 1
    cond = make_cond(kind, args.batch, device)
    base_mode, compiled = mode.removesuffix("+compile"), mode.endswith("+compile")
    if "channels_last" in base_mode:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    params = sum(p.numel() for p in net.parameters())
    flops = count_flops(net, x[:1], cond[:1]) if with_flops else None
    model = torch.compile(net, mode=args.compile_mode) if compiled else net
    step = make_step(model, x, cond, base_mode, device)
    # The peak is measured again next to each row, in the row's compute dtype: on a shared
    # machine it drifts with load.
    row_peak = measured_peak_flops(device, compute_dtype(mode), seconds=args.peak_seconds / 2)
    row_peak = row_peak["flops"]
    chunk = 1 if device.type == "cpu" else 5
    with rss if rss else contextlib.nullcontext():
        times, first = time_steps(step, device, args.warmup, args.steps, chunk, args.min_time)
    med = statistics.median(times)
    res = {
        "net": name,
        "mode": mode,
        "compile_mode": args.compile_mode if compiled else None,
        "batch": args.batch,
        "params": params,
        "step_s": times,
        "median_step_s": med,
        "first_step_s": first,
        "img_per_s": args.batch / med,
        "peak_mem_mib": (
            (rss.peak - base) / 2**20 if rss else torch.cuda.max_memory_allocated(device) / 2**20
        ),
        "fwd_bwd_flops_per_img": flops,
        "row_peak_flops": row_peak,
        "row_peak_dtype": dtype_name(compute_dtype(mode)),
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
        "--image-size",
        str(args.image_size),
        "--channels",
        str(args.channels),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--compile-mode",
        args.compile_mode,
        "--peak-seconds",
        str(args.peak_seconds),
        "--min-time",
        str(args.min_time),
        "--row",
        name,
        mode,
        "1" if with_flops else "0",
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="inductor_") as cache:
        if mode.endswith("+compile") and not args.warm_cache:
            # An empty compile cache per row: the first step is the cold compile a new user
            # (or a new machine) pays, not a lookup in the cache an earlier row filled.
            env["TORCHINDUCTOR_CACHE_DIR"] = cache
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"row {name} {mode} failed (exit {proc.returncode}): {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fraction(r: dict, peaks: dict, dtype: str) -> float | None:
    """Achieved FLOP/s of row ``r`` over the ``dtype`` matmul peak (the larger of the run's and
    the row's own measurement when the row ran in that dtype)."""
    flops = r.get("fwd_bwd_flops_per_img")
    if not flops or dtype not in peaks:
        return None
    peak = peaks[dtype]["flops"]
    if r.get("row_peak_dtype") == dtype:
        peak = max(peak, r["row_peak_flops"])
    return r["img_per_s"] * flops / peak


def to_markdown(report: dict) -> str:
    m, peaks = report["machine"], report["peaks"]
    gpu = m["device"].startswith("cuda")
    peak_text = "; ".join(
        f"{k} {v['flops'] / 1e12:.3g} TFLOP/s ({v['matmul']} matmul)" for k, v in peaks.items()
    )
    lines = [
        f"# Network training benchmark ({m['device']})",
        "",
        f"- Machine: {m.get('gpu', m['cpu'])}; {m['cpu_count']} cores, "
        f"{m['torch_threads']} torch threads; torch {m['torch']}, Python {m['python']}; "
        f"avx512_bf16: {m['avx512_bf16']}.",
        f"- Load average at start: {[round(v, 2) for v in m['load_average_at_start'] or []]}. "
        "The machine may be shared with other jobs; compare rows of the same run.",
        f"- Measured peaks: {peak_text}.",
        f"- Batch {report['args']['batch']}, "
        f"{report['args'].get('image_size', 32)}x{report['args'].get('image_size', 32)}x"
        f"{report['args'].get('channels', 3)}, median of at least "
        f"{report['args']['steps']} timed steps"
        + (f" and {report['args']['min_time']:g} s" if report["args"].get("min_time") else "")
        + f" after {report['args']['warmup']} warm-up (forward + backward + Adam).",
        f"- Command: `{report['command']}`",
        "",
        "| network | params (M) | mode | img/s | step (s) | first step (s) | peak mem (MiB) | "
        "fwd+bwd GFLOP/img | of fp32 peak | of bf16 peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(v: float | None) -> str:
        return "" if v is None else f"{v:.0%}"

    for r in report["results"]:
        lines.append(
            f"| {r['net']} | {r['params'] / 1e6:.2f} | {r['mode']} | {r['img_per_s']:.2f} | "
            f"{r['median_step_s']:.3g} | {r.get('first_step_s', float('nan')):.3g} | "
            f"{r['peak_mem_mib']:.0f} | {r['gflops_per_img']:.1f} | "
            f"{pct(fraction(r, peaks, 'fp32'))} | {pct(fraction(r, peaks, 'bf16'))} |"
        )
    lines += [
        "",
        "Achieved FLOP/s is img/s × the forward + backward FLOPs per image counted by "
        "`torch.utils.flop_counter` (2 per multiply-add, the same count in every mode). "
        + (
            "The bf16 column is the model FLOP utilisation (MFU) against the measured bf16 "
            "matmul peak. "
            if gpu
            else "On CPU the reference is the fp32 matmul peak; bf16 rows can exceed 100% of "
            "it, and the bf16 column compares them with the bf16 matmul peak. "
        )
        + (
            "The first step of a `+compile` row includes compiling it, with torch.compile's "
            "on-disk cache from earlier runs. "
            if report["args"].get("warm_cache")
            else "The first step of a `+compile` row includes compiling it from an empty "
            "compile cache (a cold compile). "
        )
        + "Peak memory is the "
        + (
            "CUDA allocator's maximum."
            if gpu
            else "resident set size above the level before the network was built."
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nets", nargs="*", default=None, help="default: all available")
    p.add_argument(
        "--modes",
        nargs="*",
        default=None,
        choices=[*MODES, *(f"{m}+compile" for m in MODES)],
        help="default: fp32 bf16 channels_last (CPU); fp32 bf16 channels_last_bf16 (GPU); "
        "a '+compile' mode times that mode under torch.compile alone",
    )
    p.add_argument(
        "--compile", action="store_true", help="also time every mode under torch.compile"
    )
    p.add_argument(
        "--compile-mode",
        default="default",
        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
        help="torch.compile mode (reduce-overhead uses CUDA graphs)",
    )
    p.add_argument(
        "--warm-cache",
        action="store_true",
        help="let compiled rows reuse torch.compile's on-disk cache (default on CPU: a fresh "
        "cache per row, so the first-step column is a cold compile)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="default 4 on CPU, 128 on GPU")
    p.add_argument("--image-size", type=int, default=32, help="default 32 (CIFAR-10)")
    p.add_argument("--channels", type=int, default=3, help="default 3 (MNIST: 1)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 3 CPU, 30 GPU)")
    p.add_argument("--warmup", type=int, default=None, help="default 1 CPU, 5 GPU")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--min-time",
        type=float,
        default=2.0,
        help="keep timing past --steps until this many seconds are timed (fast networks)",
    )
    p.add_argument(
        "--peak-seconds",
        type=float,
        default=3.0,
        help="how long each matmul peak is measured (half that again next to each row)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--tag", default="", help="suffix of the result file names")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="on CPU, run every row in this process (faster, memory less exact)",
    )
    p.add_argument("--row", nargs=3, metavar=("NET", "MODE", "FLOPS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible; run on a GPU machine or --device cpu")
    cpu = device.type == "cpu"
    if not args.peak_seconds > 0:
        p.error(f"--peak-seconds {args.peak_seconds}: must be > 0")
    if not args.min_time >= 0:
        p.error(f"--min-time {args.min_time}: must be >= 0 (0: exactly --steps steps)")
    for flag in ("batch", "steps", "warmup", "threads", "image_size", "channels"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "warmup" else 1):
            p.error(
                f"--{flag.replace('_', '-')} {value}: must be >= {0 if flag == 'warmup' else 1}"
            )
    args.batch = args.batch or (4 if cpu else 128)
    args.steps = args.steps or (3 if cpu else 30)
    args.warmup = args.warmup if args.warmup is not None else (1 if cpu else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    compiled_rows = args.compile or any(m.endswith("+compile") for m in args.modes or [])
    if not cpu and compiled_rows and not args.warm_cache:  # rows share this process
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor_")
    if args.row:  # child process of run_isolated: one row, printed as JSON
        name, mode, with_flops = args.row
        print(json.dumps(bench_one(name, mode, args, device, with_flops == "1")))
        return
    modes = args.modes or (
        ["fp32", "bf16", "channels_last"] if cpu else ["fp32", "bf16", "channels_last_bf16"]
    )
    if args.compile:
        modes = [*modes, *(f"{m}+compile" for m in modes if not m.endswith("+compile"))]
        modes = list(dict.fromkeys(modes))

    report = {
        "command": "python " + " ".join(["benchmarks/bench_nets.py", *(argv or sys.argv[1:])]),
        "machine": machine_description(device),
        "args": {
            "batch": args.batch,
            "steps": args.steps,
            "warmup": args.warmup,
            "compile_mode": args.compile_mode,
            "warm_cache": args.warm_cache,
            "min_time": args.min_time,
            "image_size": args.image_size,
            "channels": args.channels,
        },
        "peaks": {
            "fp32": measured_peak_flops(device, torch.float32, args.peak_seconds),
            "bf16": measured_peak_flops(device, torch.bfloat16, args.peak_seconds),
        },
        "results": [],
    }
    print(
        "peaks "
        + ", ".join(f"{k} {v['flops'] / 1e9:.1f} GFLOP/s" for k, v in report["peaks"].items()),
        flush=True,
    )
    stem = args.out / f"nets_{device.type}{'_' + args.tag if args.tag else ''}"
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
            r["fraction_of_fp32_peak"] = fraction(r, report["peaks"], "fp32")
            r["fraction_of_bf16_peak"] = fraction(r, report["peaks"], "bf16")
            report["results"].append(r)
            print(
                f"{name:12s} {mode:28s} {r['img_per_s']:8.2f} img/s  "
                f"{r['peak_mem_mib']:8.0f} MiB  {r['gflops_per_img']:.1f} GFLOP/img  "
                f"first step {r['first_step_s']:.1f} s",
                flush=True,
            )
            # Written after every row so that a long run leaves partial results.
            write_text_atomic(stem.with_suffix(".json"), json.dumps(report, indent=1) + "\n")
            write_text_atomic(stem.with_suffix(".md"), to_markdown(report))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
