#!/usr/bin/env bash
# The README's main job on the bundled default weights: set up, then encode a held-out
# procedural asset into the triplane latent, decode it and write asset.glb + preview.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-out/main}
.venv/bin/python -m models.roundtrip --category chair --out "$OUT"
echo "wrote $OUT/asset.glb and $OUT/preview.png"
