#!/usr/bin/env bash
# The GPU figures in one go (allow 10 minutes on one H100: cold compiles of NCSN++ take minutes):
#   1. kill-and-resume soak on the GPU: model, EMA and the CUDA RNG state bit for bit;
#   2. a CIFAR-10-shaped training run through scorelab.train with perf=fast (NCSN++, batch 128);
#   3. the network benchmark with bf16, channels_last and torch.compile (MFU against the
#      measured bf16 matmul peak).
# Results go to $OUT (default benchmarks/results). Each part has its own time limit, and
# every benchmark rewrites its files after each row, so a cut-off run keeps what it finished.
#   bash benchmarks/gpu_figures.sh
set -u
OUT=${OUT:-benchmarks/results}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
timeout ${SOAK_S:-90} $PY benchmarks/soak.py --runs 2 --steps 40 --every 10 --accelerator gpu \
    --out "$OUT" || echo "soak: exit $?"
timeout ${TRAIN_S:-240} $PY benchmarks/bench_train.py --device cuda --steps 300 --warmup 60 \
    --out "$OUT" perf=fast || echo "bench_train: exit $?"
timeout ${NETS_S:-300} $PY benchmarks/bench_nets.py --device cuda \
    --nets ncsnpp ddpmpp unet_small ncsnv2 \
    --modes fp32 bf16 channels_last_bf16 channels_last_bf16+compile --out "$OUT" \
    || echo "bench_nets: exit $?"
