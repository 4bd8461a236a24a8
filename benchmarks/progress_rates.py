"""Step rates read back from training logs (the progress bar of ``python -m scorelab.train``).

Runs launched by a study script leave only their logs; this reads the training bar's
``step/total [elapsed<...`` marks and reports, per log: the elapsed time at ``--first`` steps
(start-up of the loop, including ``torch.compile`` and CUDA-graph recording where they are on),
the steady step rate from ``--from-step`` to the last step (validation and checkpoints
included, as a user sees them) and the bar's total time.

    python benchmarks/progress_rates.py --device-name "NVIDIA H200" --tag demo_gpu_h200 \\
        eager=RUN/train.log fast=RUN2/train.log

Results: ``benchmarks/results/rates_<tag>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from _study import write_results  # noqa: E402

# "Epoch 3:  50%|█████     | 750/1500 [00:54<00:54, ..." (validation bars are skipped)
BAR = re.compile(r"^Epoch \d+:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+) \[(?:(\d+):)?(\d+):(\d+)<")


def marks(text: str) -> list[tuple[int, int]]:
    """(step, elapsed seconds) for every update of the training bar, in order."""
    out = []
    for line in re.split(r"[\r\n]", text):
        m = BAR.match(line.strip())
        if m:
            h, mi, s = int(m[3] or 0), int(m[4]), int(m[5])
            out.append((int(m[1]), 3600 * h + 60 * mi + s))
    return out


def rates(text: str, first: int, from_step: int) -> dict:
    pts = marks(text)
    if not pts:
        raise ValueError("no training progress bar in the log (was it written with the bar on?)")
    last_step, last_t = max(pts)
    t_first = min((t for s, t in pts if s >= first), default=None)
    t_from = min((t for s, t in pts if s >= from_step), default=None)
    steady = None
    if t_from is not None and last_t > t_from:
        steady = round((last_step - from_step) / (last_t - t_from), 2)
    return {
        "steps": last_step,
        "bar_seconds": last_t,
        f"seconds_to_step_{first}": t_first,
        f"steps_per_s_from_{from_step}": steady,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("logs", nargs="+", help="LABEL=PATH of a train.log")
    p.add_argument("--device-name", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--first", type=int, default=10)
    p.add_argument("--from-step", type=int, default=250)
    p.add_argument("--note", default="")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = p.parse_args(argv)
    rows = []
    for item in a.logs:
        label, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            p.error(f"log {item!r}: expected LABEL=PATH of an existing train.log")
        rows.append({"run": label, **rates(Path(path).read_text(), a.first, a.from_step)})
    head = ["run", "steps", "bar_seconds", f"seconds_to_step_{a.first}"]
    head.append(f"steps_per_s_from_{a.from_step}")
    md = [
        f"# Step rates from training logs ({a.device_name})",
        "",
        f"`python benchmarks/progress_rates.py {shlex.join(argv or sys.argv[1:])}`",
        "",
        *([a.note, ""] if a.note else []),
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
        *("| " + " | ".join(str(r[k]) for k in head) + " |" for r in rows),
        "",
    ]
    write_results(a.out, f"rates_{a.tag}", {"device": a.device_name, "rows": rows}, "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
