"""Kill-and-resume soak: ``python benchmarks/soak.py --runs 5`` (``make soak``; not in CI).

Trains one uninterrupted reference run of a small toy configuration, then ``--runs`` copies of
the same command, each killed with SIGKILL at a random step plus a random fraction of a second
(so kills land inside steps, validation and checkpoint writes) and rerun with the same command
until it finishes. A run resumed correctly when its final ``last.ckpt`` holds the reference's
step, model and EMA weights bit for bit. The work lost by a kill is the number of optimizer
steps the killed process had done beyond the checkpoint it left behind (read from its progress
bar).

Writes ``soak.json`` and ``soak.md`` into ``--out`` (default ``benchmarks/results``).
It is the long form of ``tests/reliability/test_kill_resume.py`` and runs the tests' harness
(toy command, checkpoint polling, weight comparison: ``tests/reliability/reliability_helpers.py``).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests"), str(REPO / "tests" / "reliability")]
from reliability_helpers import (  # noqa: E402
    checkpoint_step,
    compare_weights,
    last_checkpoint,
    progress_step,
    run_dir,
    train_command,
)

from run_helpers import subprocess_env  # noqa: E402
from scorelab.io import write_text_atomic  # noqa: E402


def run_to_end(cmd: list[str], log: Path, timeout: float = 600) -> float:
    t0 = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.run(
            cmd, cwd=REPO, env=subprocess_env(), stdout=fh, stderr=subprocess.STDOUT,
            timeout=timeout,
        )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}; see {log}")
    return time.monotonic() - t0


def _kill_at_step(proc: subprocess.Popen, log: Path, step: int, jitter: float) -> bool:
    """SIGKILL ``proc`` ``jitter`` seconds after its progress bar reached ``step``; False if it
    finished first."""
    while proc.poll() is None:
        if progress_step(log.read_text(errors="replace")) >= step:
            time.sleep(jitter)
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    return False


def soak(
    runs: int, steps: int, every: int, seed: int, workdir: Path, accelerator: str = "cpu"
) -> dict:
    rng = random.Random(seed)
    ref_dir = workdir / "reference"
    ref_cmd = train_command(ref_dir, steps, every, accelerator=accelerator)
    ref_time = run_to_end(ref_cmd, workdir / "reference.log")
    reference = run_dir(ref_dir) / "checkpoints" / "last.ckpt"
    results = []
    for i in range(runs):
        log_dir = workdir / f"run{i}"
        cmd = train_command(log_dir, steps, every, accelerator=accelerator)
        target = rng.randint(1, steps - 1)  # kill once the bar shows this step, plus a jitter
        jitter = rng.uniform(0.0, 0.5)  # that lands in steps, validation and checkpoint writes
        log = workdir / f"run{i}.kill.log"
        with open(log, "w") as fh:
            proc = subprocess.Popen(
                cmd, cwd=REPO, env=subprocess_env(), stdout=fh, stderr=subprocess.STDOUT
            )
            killed = _kill_at_step(proc, log, target, jitter)
        done = progress_step(log.read_text(errors="replace"))
        saved = checkpoint_step(last_checkpoint(log_dir)) or 0
        resume_time = run_to_end(cmd, workdir / f"run{i}.resume.log")
        cmp = compare_weights(reference, run_dir(log_dir) / "checkpoints" / "last.ckpt")
        results.append(
            {
                "run": i,
                "kill_at_step": target,
                "jitter_s": round(jitter, 2),
                "killed": killed,
                "steps_done_when_killed": done,
                "checkpoint_step_left": saved,
                "steps_lost": max(0, done - saved),
                "resume_wall_s": round(resume_time, 1),
                "resumed_correctly": cmp["equal"] and all(cmp["rng_equal"].values()),
                "rng_equal": cmp["rng_equal"],
                "max_abs_diff": cmp["max_abs_diff"],
                "differing_tensors": len(cmp["differing"]),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    lost = [r["steps_lost"] for r in results]
    return {
        "config": {
            "runs": runs,
            "steps": steps,
            "checkpoint_every": every,
            "seed": seed,
            "accelerator": accelerator,
            "device": torch.cuda.get_device_name(0)
            if accelerator == "gpu" and torch.cuda.is_available()
            else "cpu",
            "command": " ".join(
                [
                    "python -m scorelab.train",
                    *train_command("LOG", steps, every, accelerator=accelerator)[3:],
                ]
            ),
        },
        "reference_wall_s": round(ref_time, 1),
        "resumed_correctly": sum(r["resumed_correctly"] for r in results),
        "killed": sum(r["killed"] for r in results),
        "steps_lost_max": max(lost, default=0),
        "steps_lost_mean": sum(lost) / len(lost) if lost else 0.0,
        "runs": results,
    }


def to_markdown(report: dict) -> str:
    c = report["config"]
    lines = [
        "# Kill-and-resume soak",
        "",
        f"`python benchmarks/soak.py --runs {c['runs']} --steps {c['steps']} --every "
        f"{c['checkpoint_every']} --seed {c['seed']} --accelerator {c.get('accelerator', 'cpu')}`"
        f" on {c.get('device', 'cpu')}: {c['runs']} toy runs of {c['steps']} steps "
        f"(checkpoint every {c['checkpoint_every']}), each killed with SIGKILL at a random step "
        "(plus a random 0-0.5 s, so kills land in steps, validation and checkpoint writes) and "
        "rerun with the same command; compared bit for bit with an uninterrupted reference "
        "(model, EMA, step, and the CPU and CUDA random-number states saved in last.ckpt).",
        "",
        f"- resumed correctly: **{report['resumed_correctly']}/{c['runs']}** "
        f"({report['killed']} actually killed before finishing)",
        f"- steps lost per kill: max {report['steps_lost_max']}, mean "
        f"{report['steps_lost_mean']:.1f} (bound: {c['checkpoint_every'] - 1} completed steps, "
        "as a checkpoint is written every "
        f"{c['checkpoint_every']})",
        "",
        "| run | kill at step (+ s) | killed | steps done | checkpoint left | steps lost "
        "| RNG states equal | equal |",
        "|---:|---:|:---:|---:|---:|---:|:---|:---:|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['run']} | {r['kill_at_step']} (+{r['jitter_s']}) | "
            f"{'yes' if r['killed'] else 'no'} | "
            f"{r['steps_done_when_killed']} | {r['checkpoint_step_left']} | {r['steps_lost']} | "
            + (
                ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in r.get("rng_equal", {}).items())
                or "n/a"
            )
            + f" | {'yes' if r['resumed_correctly'] else 'NO'} |"
        )
    lines += ["", f"Command run in each: `{c['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="number of killed runs (>= 1)")
    ap.add_argument("--steps", type=int, default=60, help="steps per run (>= 2)")
    ap.add_argument("--every", type=int, default=10, help="checkpoint interval in steps (>= 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument(
        "--accelerator", choices=["cpu", "gpu"], default="cpu", help="trainer.accelerator"
    )
    ap.add_argument("--workdir", type=Path, default=None, help="run outputs (default: a tmp dir)")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.steps < 2 or not 1 <= args.every <= args.steps:
        ap.error(f"need --runs >= 1, --steps >= 2 and 1 <= --every <= --steps, got {args}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="scorelab-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        ap.error("--accelerator gpu: no CUDA device is visible; run on a GPU machine")
    report = soak(args.runs, args.steps, args.every, args.seed, workdir, args.accelerator)
    report["workdir"] = str(workdir)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "soak" if args.accelerator == "cpu" else f"soak_{args.accelerator}"
    write_text_atomic(args.out / f"{stem}.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(args.out / f"{stem}.md", to_markdown(report))
    print(f"{report['resumed_correctly']}/{args.runs} resumed correctly; {args.out / stem}.md")
    return 0 if report["resumed_correctly"] == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
