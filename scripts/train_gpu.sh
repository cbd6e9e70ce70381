#!/usr/bin/env bash
# Train the text, edit and images models side by side on one CUDA machine, planned for about
# 9 minutes. The shipped weights do NOT come from this script yet: its one try (an H100, with
# BLAS threads not yet pinned) spent 438 s building the asset data, and the text weights it then
# trained were lost (see models/cards/text.md). The three trainings share the GPU; data
# generation (numpy, the procedural world) uses every CPU core first. Each training fits its
# step count to the time left (--deadline) and records it in its weights, so
#   python -m models.train text --seed 0 --steps K --schedule-steps K <the arguments below>
# reproduces it (up to CUDA's floating-point order). Then it runs the CUDA inference path once.
#
#   OUT=runs/gpu bash scripts/train_gpu.sh [seconds, default 470]
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
CACHE=${KILN_CACHE:-/tmp/kiln_cache}
PY=${PYTHON:-python3}
BUDGET=${1:-470}
ASSETS=${ASSETS:-6000}
SOURCES=${SOURCES:-3000}
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1
# one BLAS/OpenMP thread per process: with a thread pool per data worker on every core, the
# first try on a 16-core machine built the asset data 5x slower than this 2-core machine per core,
# and a second (2026-11-27, images only) printed nothing in 10 minutes. The data workers now pin
# themselves (models/parallel.py); these also cover the trainings' own processes.
CORES=$($PY -c "import os; print(os.cpu_count())")  # before the export below: nproc obeys OMP_NUM_THREADS
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
mkdir -p "$OUT" "$CACHE"
START=$(date +%s)
DEADLINE=$((START + BUDGET))
log() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/checks.log"; }
log "cores $CORES; $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null)"

# the autoencoder's training assets, shared by text and images
$PY -c "from models.data import load_or_build; load_or_build('train', $ASSETS, '$CACHE', $CORES)" \
  >>"$OUT/checks.log" 2>&1 || log "asset data FAILED"
log "asset data ready"

COMMON=(--seed 0 --device $DEVICE --cache "$CACHE" --deadline "$DEADLINE")
$PY -m models.train text "${COMMON[@]}" --assets $ASSETS --captions 20 --batch 256 --lr 5e-4 --workers 1 \
  --run-dir /tmp/kiln_runs/text --out "$OUT/text.safetensors" >"$OUT/text.log" 2>&1 &
$PY -m models.train edit "${COMMON[@]}" --sources $SOURCES --batch 256 --lr 5e-4 --workers $((CORES / 2)) \
  --run-dir /tmp/kiln_runs/edit --out "$OUT/edit.safetensors" >"$OUT/edit.log" 2>&1 &
$PY -m models.train images "${COMMON[@]}" --assets $ASSETS --variants 2 --batch 128 --lr 5e-4 \
  --workers $(( CORES / 2 > 3 ? CORES / 2 - 2 : 1 )) --run-dir /tmp/kiln_runs/images --out "$OUT/images.safetensors" \
  >"$OUT/images.log" 2>&1 &
wait
log "training done: $(ls "$OUT"/*.safetensors 2>/dev/null | xargs -n1 basename | tr '\n' ' ')"

# the CUDA inference path once, on the new weights
for m in text edit images; do [ -f "$OUT/$m.safetensors" ] && cp "$OUT/$m.safetensors" models/weights/; done
timeout 60 $PY -m backend generate --device $DEVICE --prompt "a red wooden chair with a tall back" --seed 1 \
  --out /tmp/kiln_out/chair --json >>"$OUT/checks.log" 2>&1 || log "text generate FAILED"
timeout 40 $PY -m backend edit --device $DEVICE --asset /tmp/kiln_out/chair/latent.safetensors \
  --instruction "make it blue" --out /tmp/kiln_out/chair_blue --json >>"$OUT/checks.log" 2>&1 || log "edit FAILED"
timeout 40 $PY -m backend generate --device $DEVICE --front /tmp/kiln_out/chair/preview.png --refine-steps 3 \
  --out /tmp/kiln_out/chair_img --json >>"$OUT/checks.log" 2>&1 || log "images generate FAILED"
timeout 60 $PY bench/text.py --device $DEVICE >>"$OUT/checks.log" 2>&1 || log "bench/text FAILED"
log "end"
