"""Throughput of the real training entry point on a CIFAR-10-shaped run.

Runs ``python -m scorelab.train experiment=<name> <overrides>`` in this process on synthetic
CIFAR-10 files written in the real format (``cifar-10-batches-py`` pickles of random pixels: the
data cannot be downloaded here, and throughput does not depend on the pixels; torchvision's MD5
check is the one thing bypassed). Everything else is the user's path: Hydra config, DataModule,
ScoreModule with its loss, EMA and optimizer, Lightning's loop, logger and checkpoint callback.

A callback times the steps after ``--warmup`` (the first steps include ``torch.compile`` and
cuDNN autotuning), synchronising the device at both ends, and reads the peak memory. With the
network's forward + backward FLOPs per image (counted as in ``bench_nets.py``) and a bf16 matmul
peak measured in the same process, it reports the model FLOP utilisation (MFU) of the whole
training step.

    python benchmarks/bench_train.py --device cuda perf=fast            # NCSN++ (VE), fast path
    python benchmarks/bench_train.py --experiment ddpmpp_cifar10_vp --device cuda perf=fast

Results: ``benchmarks/results/train_<device>[_tag].json`` and ``.md`` (one row per run,
appended).
"""

from __future__ import annotations

import argparse
import json
import pickle
import runpy
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_nets  # noqa: E402

from scorelab.io import write_text_atomic  # noqa: E402

RESULT: dict = {}  # filled by StepTimer


class StepTimer(L.Callback):
    """Wall time of the optimizer steps after ``warmup`` (device synchronised at both ends)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.t_start = self.t0 = self.t_first = None
        self.step0 = 0

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_start(self, trainer, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self.t_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.t_first is None:
            self._sync(pl_module)
            self.t_first = time.perf_counter() - self.t_start
        if step == self.warmup:
            self._sync(pl_module)
            self.t0, self.step0 = time.perf_counter(), step
        if step == trainer.max_steps and self.t0 is not None:
            self._sync(pl_module)
            steps = step - self.step0
            seconds = time.perf_counter() - self.t0
            RESULT.update(
                timed_steps=steps,
                timed_s=seconds,
                steps_per_s=steps / seconds,
                first_step_s=self.t_first,
                peak_mem_mib=(
                    torch.cuda.max_memory_allocated(pl_module.device) / 2**20
                    if pl_module.device.type == "cuda"
                    else None
                ),
                batch=int(batch.shape[0]) if torch.is_tensor(batch) else None,
            )


def write_fake_cifar(root: Path, n_per_batch: int, seed: int = 0) -> None:
    """``root/cifar-10-batches-py`` with five training batches and a test batch of random
    pixels, in torchvision's pickle layout."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3 * 32 * 32), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n_per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f, protocol=2)


def flops_per_image(experiment: str, channels_last: bool) -> tuple[str, float | None]:
    """Forward + backward FLOPs per image of the experiment's network (on the CPU)."""
    from omegaconf import OmegaConf

    exp = OmegaConf.load(ROOT / "conf" / "experiment" / f"{experiment}.yaml")
    entries = [e for e in exp.defaults if OmegaConf.is_dict(e)]
    model = next(v for e in entries for k, v in e.items() if k.endswith("/model"))
    net, kind = bench_nets.build_net(str(model))
    x = torch.randn(2, 3, 32, 32)
    cond = bench_nets.make_cond(kind, 2, torch.device("cpu"))
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return str(model), bench_nets.count_flops(net, x, cond) / 2


def to_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Training throughput through `scorelab.train` (CIFAR-10 shape)",
        "",
        f"Machine: {m.get('gpu') or m.get('cpu')}; torch {m.get('torch')}. bf16 matmul peak "
        f"measured in the same run: {report['bf16_peak_tflops']:.0f} TFLOP/s.",
        "Synthetic CIFAR-10 files in the real format (random pixels); the whole training step: "
        "DSM loss, backward, gradient clipping, fused Adam, EMA, logging and checkpoint callbacks.",
        "",
        "| experiment | network | overrides | batch | steps/s | img/s | MFU (bf16 peak) "
        "| first step (compile) | peak memory |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["runs"]:
        mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") is not None else "n/a"
        mem = f"{r['peak_mem_mib']:.0f} MiB" if r.get("peak_mem_mib") is not None else "n/a"
        lines.append(
            f"| {r['experiment']} | {r['network']} | `{' '.join(r['overrides'])}` | {r['batch']} "
            f"| {r['steps_per_s']:.2f} | {r['img_per_s']:.0f} | {mfu} | {r['first_step_s']:.1f} s "
            f"| {mem} |"
        )
    lines += [
        "",
        "Steps/s: the wall time of all steps after the warm-up, device synchronised at "
        "both ends. MFU: img/s × forward+backward FLOPs per image (FlopCounterMode, 2 per MAC) "
        "/ the bf16 peak.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--experiment", default="ncsnpp_cifar10_ve")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps in all")
    p.add_argument("--warmup", type=int, default=40, help="untimed first steps")
    p.add_argument("--n-per-batch", type=int, default=10000, help="images per CIFAR batch file")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--tag", default="")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. perf=fast")
    args = p.parse_args(argv)
    if not 1 <= args.warmup < args.steps:
        p.error(f"need 1 <= --warmup < --steps, got --warmup {args.warmup} --steps {args.steps}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible; run on a GPU machine or --device cpu")

    import torchvision.datasets.cifar as tv_cifar

    tv_cifar.check_integrity = lambda fpath, md5=None: Path(fpath).is_file()
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    write_fake_cifar(work / "data", args.n_per_batch)

    overrides = [
        f"experiment={args.experiment}",
        f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
        "trainer.devices=1",
        f"trainer.max_steps={args.steps}",
        f"trainer.val_check_interval={args.steps}",
        "trainer.limit_val_batches=0",
        "callbacks.sample_grid=null",
        "n_samples=0",
        *args.overrides,
    ]
    argv_run = [
        "scorelab.train",
        *overrides,
        f"paths.data_dir={work / 'data'}",
        f"paths.log_dir={work / 'logs'}",
        "+callbacks.step_timer._target_=bench_train.StepTimer",
        f"+callbacks.step_timer.warmup={args.warmup}",
    ]
    peak = bench_nets.measured_peak_flops(device, torch.bfloat16, 2.0)["flops"]
    model, flops = flops_per_image(args.experiment, channels_last=False)
    sys.argv = argv_run
    t0 = time.time()
    try:
        runpy.run_module("scorelab.train", run_name="__main__")
    except SystemExit as err:
        if err.code not in (0, None):
            raise
    import bench_train  # Hydra built the callback from the importable module, not __main__

    res = dict(bench_train.RESULT)
    if not res:
        print("no timing recorded (did training reach --steps?)", file=sys.stderr)
        return 1
    res.update(
        experiment=args.experiment,
        network=model,
        overrides=args.overrides,
        wall_s=time.time() - t0,
        img_per_s=res["steps_per_s"] * (res["batch"] or 0),
        flops_per_img=flops,
    )
    res["mfu"] = res["img_per_s"] * flops / peak if flops and device.type == "cuda" else None
    stem = args.out / f"train_{device.type}{'_' + args.tag if args.tag else ''}"
    report = {"runs": []}
    if stem.with_suffix(".json").is_file():
        report = json.loads(stem.with_suffix(".json").read_text())
    report["machine"] = bench_nets.machine_description(device)
    report["bf16_peak_tflops"] = peak / 1e12
    report["runs"].append(res)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(stem.with_suffix(".json"), json.dumps(report, indent=1) + "\n")
    write_text_atomic(stem.with_suffix(".md"), to_markdown(report))
    print(json.dumps(res, indent=1))
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
