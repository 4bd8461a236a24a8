#!/usr/bin/env bash
# GPU figures, third set (allow 8 minutes on one H100): the demo recipe's learning-rate schedule
# and its step budget (experiments/07_mnist_budget), four training lanes side by side on one GPU.
# Each lane runs experiments/07_mnist_budget/run.py with trainer=gpu (train a fixed number of
# steps, then score 1,000 samples of the final weights); one lane also scores the first lane's
# 1,500-step checkpoint with other sampler settings. Everything is packed into $OUT/results.tgz.
# MNIST as .gz files in $MNIST_GZ (or already under data/raw/MNIST/raw).
#   MNIST_GZ=.gpu/mnist bash benchmarks/gpu_recipes.sh            # SET=2 or SET=3 for the others
set -u
OUT=${OUT:-benchmarks/results/gpu_run}
W=${WORK:-/tmp/gpu_recipes}
LANE_S=${LANE_S:-400}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=2
mkdir -p "$OUT" "$W"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$W/gpu.txt"
$PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" | tee -a "$W/gpu.txt"
if [ -n "${MNIST_GZ:-}" ]; then
  mkdir -p data/raw/MNIST/raw
  for f in "$MNIST_GZ"/*.gz; do gunzip -c "$f" > "data/raw/MNIST/raw/$(basename "$f" .gz)"; done
fi
lane() {
  local name=$1; shift
  local t0=$(date +%s)
  timeout "$LANE_S" $PY experiments/07_mnist_budget/run.py --train-args trainer=gpu \
      --out "$W/$name" --work "$W/work_$name" "$@" > "$W/lane_$name.log" 2>&1
  echo "lane $name: exit $? after $(( $(date +%s) - t0 )) s: $*" | tee -a "$W/lanes.txt"
}
sampler_variants() {
  local ck
  while [ -z "$(ls "$W"/work_a/edm_cos_lr2e-3_1500/evaluate/runs/*/metrics.json 2>/dev/null)" ]; do
    sleep 5
  done
  ck=$(ls "$W"/work_a/edm_cos_lr2e-3_1500/train/runs/*/checkpoints/last.ckpt)
  for v in "+schedule.num_steps=32" "+sampler.s_churn=10" "+sampler.s_churn=40"; do
    timeout 120 $PY -m scorelab.evaluate "ckpt_path=$ck" n_samples=1000 "$v" \
        "paths.log_dir=$W/variants/${v//[.=+]/_}" > "$W/variant_${v//[.=+]/_}.log" 2>&1
    echo "variant $v: exit $?" | tee -a "$W/lanes.txt"
  done
}
T0=$(date +%s)
if [ "${SET:-1}" = 1 ]; then  # the learning-rate schedule (about 5 minutes)
  lane a --recipes edm_cos_lr2e-3 --steps 1500 4000 &
  lane b --recipes edm_cos_lr1e-3 edm_cos_lr4e-3 --steps 1500 &
  lane c --recipes edm_lin_lr2e-3 edm_cos_lr2e-3_ema995 --steps 1500 &
  lane d --recipes edm_cos_lr2e-3 --steps 5000 &
  ( timeout "$LANE_S" bash -c "$(declare -f sampler_variants); W=$W PY=$PY sampler_variants" ) &
elif [ "${SET:-1}" = 2 ]; then  # a longer budget, and a wider or deeper network (about 5 minutes)
  lane e --recipes edm_cos_lr2e-3 --steps 7000 &
  lane f --recipes edm_ch32 --steps 1500 &
  lane g --recipes edm_blocks2 --steps 1500 &
else  # SET=3: batch 512 with bigger networks (about 5 minutes), and the demo's fast path
  lane h --recipes edm_cos_lr2e-3_b512 --steps 3000 &
  lane i --recipes edm_blocks2_cos_b512 --steps 3000 &
  lane j --recipes edm_ch32_blocks2_cos_b512 --steps 3000 &
  lane k --recipes edm_ema99_lr1e-3 --steps 1500 &
  lane l --recipes demo_fast demo_cudagraphs --steps 1500 &
fi
wait
echo "all lanes: $(( $(date +%s) - T0 )) s" | tee -a "$W/lanes.txt"
find "$W/variants" -name metrics.json -path "*evaluate*" -exec sh -c 'echo "$1"; cat "$1"' _ {} \; > "$W/variants.txt" 2>/dev/null
tar czf "$OUT/results${SET:-1}.tgz" -C "$W" --exclude='*.ckpt' --exclude='*.npz' --exclude='*.pt' --exclude='variants' .
cat "$W"/*/results.md 2>/dev/null
