#!/usr/bin/env bash
# The README's main job on the bundled default weights: set up, then
#  1. text -> asset: "a red chair with a tall back" -> out/main/chair/{asset.glb, preview.png, latent.safetensors}
#  2. any mesh -> latent: fit Kiln's latent to a Blender-made mesh -> out/main/suzanne/...
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-out/main}
PROMPT=${KILN_PROMPT:-"a red chair with a tall back"}
.venv/bin/python -m backend generate --prompt "$PROMPT" --seed 0 --out "$OUT/chair"
.venv/bin/python -m backend encode --mesh tests/data/suzanne_blender.obj --fit-steps 60 --out "$OUT/suzanne"
echo "main job done: $OUT/chair and $OUT/suzanne (asset.glb, preview.png, latent.safetensors)"
