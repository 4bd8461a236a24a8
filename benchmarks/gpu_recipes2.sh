set -u
W=/tmp/gpu_recipes2; mkdir -p $W data/raw/MNIST/raw
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:$PYTHONPATH" OMP_NUM_THREADS=2
for f in .gpu/mnist/*.gz; do gunzip -c "$f" > "data/raw/MNIST/raw/$(basename "$f" .gz)"; done
lane() { local name=$1; shift; local t0=$(date +%s)
  timeout 400 python3 experiments/07_mnist_budget/run.py --train-args trainer=gpu --out $W/$name --work $W/work_$name "$@" > $W/lane_$name.log 2>&1
  echo "lane $name: exit $? after $(( $(date +%s) - t0 )) s: $*" | tee -a $W/lanes.txt; }
lane e --recipes edm_cos_lr2e-3 --steps 7000 &
lane f --recipes edm_ch32 --steps 1500 &
lane g --recipes edm_blocks2 --steps 1500 &
wait
tar czf $OUT/results2.tgz -C $W --exclude='work_*' .
cat $W/*/results.md
