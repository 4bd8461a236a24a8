"""Where a training step's time goes: one experiment's step, profiled by kind of operation.

Builds the ScoreModule of a Hydra configuration (the same overrides as ``python -m
scorelab.train``) and runs its training step as the module does: zero the gradients, the loss
under the trainer's autocast, backward, gradient clipping, the optimizer step and the EMA
update, on a batch of the data's shape. Each variant (extra overrides on top of the base ones)
is timed in interleaved rounds, so a busy machine slows them alike, and then profiled with
``torch.profiler``; every operator's self time is put in one category (convolution,
normalisation, activation, matmul / attention, optimizer + EMA, copies / casts, other).

    python benchmarks/profile_step.py --tag mnist_demo experiment=mnist_demo \\
        --variant channels_last=module.channels_last=true

Results: ``benchmarks/results/profile_<tag>.json`` and ``.md``. CPU only: on a GPU the
profiler's CPU self times measure kernel launches, not the kernels.
"""

from __future__ import annotations

import argparse
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _study import write_results  # noqa: E402
from bench_nets import machine_description  # noqa: E402

# First match wins; matched against the operator's name (aten::..., Optimizer.step#Adam.step).
CATEGORIES: list[tuple[str, re.Pattern]] = [
    ("convolution", re.compile(r"conv")),
    ("normalisation", re.compile(r"group_norm|layer_norm|batch_norm|native_norm")),
    ("activation", re.compile(r"silu|gelu|relu|sigmoid|tanh|swish")),
    (
        "matmul / attention",
        re.compile(r"\b(aten::)?(mm|addmm|bmm|matmul|linear)\b|softmax|attention"),
    ),
    ("optimizer + EMA", re.compile(r"adam|optimizer|lerp|_foreach|clip_grad|vector_norm")),
    ("copies / casts", re.compile(r"copy_|_to_copy|aten::to$|contiguous|clone")),
]


def category(op: str) -> str:
    """The category of one profiler operator name ("other" when none matches)."""
    name = op.lower()
    for label, pattern in CATEGORIES:
        if pattern.search(name):
            return label
    return "other"


def build_step(overrides: list[str], batch: int | None):
    """A zero-argument training step of the configured module, and the module."""
    from hydra import compose, initialize_config_dir

    from scorelab.lit.build import build_module
    from scorelab.runs import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "paths.output_dir=unused"])
    module = build_module(cfg)
    opt = module.optimizer_factory(module.model.parameters())
    n = int(batch or cfg.data.batch_size)
    x = torch.rand(n, *module.data_shape) * 2 - 1
    bf16 = str(cfg.trainer.precision).startswith("bf16")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = module.loss_fn(module, module._prep(x)).loss
        loss.backward()
        module._clip_gradients()
        opt.step()
        module.ema.update_parameters(module.model)

    return step, module


def profile(step, steps: int) -> dict:
    """Self CPU time per category and the eight costliest operators, in ms per step."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    per_op = {e.key: e.self_cpu_time_total / 1e3 / steps for e in prof.key_averages()}
    total = sum(per_op.values())
    cats: dict[str, float] = {}
    for op, ms in per_op.items():
        cats[category(op)] = cats.get(category(op), 0.0) + ms
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:8]
    return {
        "profiled_ms_per_step": round(total, 2),
        "categories_ms": {k: round(v, 2) for k, v in sorted(cats.items(), key=lambda kv: -kv[1])},
        "top_ops_ms": {k: round(v, 2) for k, v in top},
    }


def to_markdown(report: dict, command: str) -> str:
    m = report["machine"]
    lines = [
        f"# Where a training step's time goes: {report['tag']}",
        "",
        f"`{command}`",
        "",
        f"{m['cpu']}, {m['torch_threads']} threads, torch {m['torch']}; load average at start "
        f"{m['load_average_at_start']}. Step time: median of {report['rounds']} interleaved "
        f"rounds of {report['steps']} steps; categories: operator self time under the profiler, "
        f"{report['steps']} more steps.",
        "",
    ]
    variants = report["variants"]
    cats = list(dict.fromkeys(c for v in variants.values() for c in v["categories_ms"]))
    lines += [
        "| variant | s/step | " + " | ".join(f"{c} (ms)" for c in cats) + " |",
        "|---|---:|" + "---:|" * len(cats),
    ]
    for name, v in variants.items():
        share = [v["categories_ms"].get(c, 0.0) for c in cats]
        total = v["profiled_ms_per_step"] or 1.0
        cells = [f"{ms:.1f} ({100 * ms / total:.0f} %)" for ms in share]
        lines.append(f"| {name} | {v['s_per_step']:.3f} | " + " | ".join(cells) + " |")
    for name, v in variants.items():
        lines += ["", f"Costliest operators, {name} (ms per step):", ""]
        lines += [f"- `{op}`: {ms:.1f}" for op, ms in v["top_ops_ms"].items()]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the training config")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=OVERRIDE[,OVERRIDE...]",
        help="extra overrides compared against the base configuration (repeatable)",
    )
    p.add_argument("--tag", required=True)
    p.add_argument("--batch", type=int, default=None, help="default: data.batch_size")
    p.add_argument("--steps", type=int, default=5, help="steps per timing round and profiled")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = p.parse_args(argv)
    if a.steps < 1 or a.rounds < 1:
        p.error(f"--steps and --rounds must be >= 1, got {a.steps} and {a.rounds}")
    variants = {"base": list(a.overrides)}
    for item in a.variant:
        name, sep, extra = item.partition("=")
        if not sep or not name or not extra:
            p.error(f"--variant {item!r}: expected NAME=OVERRIDE[,OVERRIDE...]")
        variants[name] = [*a.overrides, *extra.split(",")]
    torch.manual_seed(0)
    steps = {name: build_step(ov, a.batch)[0] for name, ov in variants.items()}
    for step in steps.values():
        step()  # warm-up: allocations, oneDNN primitive creation
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(a.rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(a.steps):
                step()
            times[name].append((time.perf_counter() - t0) / a.steps)
    report = {
        "tag": a.tag,
        "overrides": variants,
        "steps": a.steps,
        "rounds": a.rounds,
        "machine": machine_description(torch.device("cpu")),
        "variants": {
            name: {"s_per_step": statistics.median(times[name]), **profile(step, a.steps)}
            for name, step in steps.items()
        },
    }
    command = "python benchmarks/profile_step.py " + shlex.join(argv or sys.argv[1:])
    write_results(a.out, f"profile_{a.tag}", report, to_markdown(report, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
