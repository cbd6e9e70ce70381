#!/usr/bin/env bash
# Train the images reconstructor (version 1.4) on one CUDA machine with many cores, in about
# 8 minutes: a larger transformer, one stage with both losses, on assets made by every other core
# while it trains (models/train/asset_stream.py). The weights record the asset count N and the
# step count K the machine reached, so
#   python -m models.train images --seed 0 --stream N --steps K --schedule-steps K <the arguments below>
# reproduces them (up to CUDA's floating-point order) on any machine, slowly.
#
#   OUT=runs/gpu bash scripts/train_images_gpu.sh [seconds of the whole run, default 480]
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
PY=${PYTHON:-python3}
BUDGET=${1:-480}
CORES=$($PY -c "import os; print(os.cpu_count())")  # before OMP_NUM_THREADS=1: nproc obeys it
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
mkdir -p "$OUT"
START=$(date +%s)
echo "cores $CORES; $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null)"
$PY -m models.train images --seed 0 --stream auto --stream-warm 512 --variants 1 \
  --width 256 --heads 8 --encoder-depth 4 --decoder-depth 4 \
  --batch 256 --lr 5e-4 --decoded-batch 32 --decoded-points 2048 \
  --workers $(( CORES > 3 ? CORES - 2 : 1 )) --device ${DEVICE:-cuda} --deadline $((START + BUDGET)) \
  --run-dir "$OUT/run" --out "$OUT/images.safetensors" 2>&1 | tee "$OUT/train.log"
echo "exit ${PIPESTATUS[0]} after $(( $(date +%s) - START ))s"
