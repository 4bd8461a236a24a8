#!/usr/bin/env bash
# GPU figures, second set (allow 9 minutes on one H100), in order of certainty:
#   1. the demo recipe (experiment=mnist_demo) with trainer=gpu: wall time of training and of
#      the evaluation of 1,000 samples, with the scores, exactly as `make demo` runs them;
#   2. the CIFAR-10-shaped training run through scorelab.train with perf=fast (NCSN++, batch 128,
#      torch.compile included; the compile time is reported apart from the timed steps);
#   3. the network benchmark's compiled row for NCSN++ (bf16, channels_last, torch.compile),
#      which reuses the inductor cache the previous step filled where the graphs agree.
# MNIST must be under data/raw/MNIST/raw (or as .gz files in $MNIST_GZ). Everything lands in
# $OUT (default benchmarks/results/gpu_run); each part has its own time limit.
#   bash benchmarks/gpu_demo_and_compile.sh
set -u
OUT=${OUT:-benchmarks/results/gpu_run}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" | tee -a "$OUT/gpu.txt"
if [ -n "${MNIST_GZ:-}" ]; then
  mkdir -p data/raw/MNIST/raw
  for f in "$MNIST_GZ"/*.gz; do gunzip -c "$f" > "data/raw/MNIST/raw/$(basename "$f" .gz)"; done
fi
RUN=logs/gpu_demo
t0=$(date +%s.%N)
timeout ${DEMO_TRAIN_S:-150} $PY -m scorelab.train experiment=mnist_demo trainer=gpu hydra.run.dir=$RUN 2>&1 | tee "$OUT/demo_train.log" | grep -v "it/s" | tail -25
t1=$(date +%s.%N)
timeout ${DEMO_EVAL_S:-60} $PY -m scorelab.evaluate ckpt_path=$RUN/checkpoints/last.ckpt n_samples=1000 \
    hydra.run.dir=$RUN/evaluation 2>&1 | tee "$OUT/demo_eval.log" | tail -15
t2=$(date +%s.%N)
$PY - "$t0" "$t1" "$t2" "$OUT" <<'PY'
import json, sys
t0, t1, t2 = map(float, sys.argv[1:4])
json.dump({"train_s": t1 - t0, "evaluate_s": t2 - t1, "total_s": t2 - t0},
          open(sys.argv[4] + "/demo_gpu_wall.json", "w"), indent=1)
print(f"demo on GPU: train {t1 - t0:.1f} s, evaluate {t2 - t1:.1f} s")
PY
cp -f $RUN/metrics.json "$OUT/demo_train_metrics.json" 2>/dev/null
cp -f $RUN/evaluation/metrics.json "$OUT/demo_eval_metrics.json" 2>/dev/null
cp -f $RUN/samples_grid.png "$OUT/demo_samples_grid.png" 2>/dev/null
timeout ${TRAIN_S:-210} $PY benchmarks/bench_train.py --device cuda --steps 200 --warmup 40 \
    --out "$OUT" perf=fast || echo "bench_train: exit $?"
timeout ${NETS_S:-150} $PY benchmarks/bench_nets.py --device cuda --nets ncsnpp \
    --modes channels_last_bf16 channels_last_bf16+compile --out "$OUT" || echo "bench_nets: exit $?"
