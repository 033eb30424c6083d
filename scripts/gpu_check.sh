#!/usr/bin/env bash
# The GPU check (about 7 minutes on one H100/H200): scripts/gpu_check.py (a tiny run with bf16,
# compile, channels-last and the store on the GPU, killed and resumed, and its files loaded on
# the CPU), then the benchmark of the fast CIFAR recipe on 5,000 CIFAR-shaped crops in the real
# loop. Prints every figure; exits non-zero if a check fails.
#   bash scripts/gpu_check.sh
#   MIRI_GPU_CHECK_CPU=1 MIRI_GPU_CHECK_COMPILE=0 bash scripts/gpu_check.sh   # dry run on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
python scripts/gpu_check.py
if [[ "${MIRI_GPU_CHECK_CPU:-0}" == "1" ]]; then  # the benchmark's dry run: shrunk to a CPU
  bench=(trainer=cpu trainer.precision=bf16-mixed data.n=256 model=unet_small miri.batch_size=32
         miri.impute_batch_size=100 "miri.compile=${MIRI_GPU_CHECK_COMPILE:-1}" benchmark.steps=3 benchmark.warmup=2)
else
  bench=()
fi
python scripts/benchmark.py experiment=fast_cifar10 data=sample data.n=5000 trainer.enable_progress_bar=false \
  benchmark.csv=checkpoints/gpu_check/benchmark.csv "${bench[@]}"
