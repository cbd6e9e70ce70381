#!/usr/bin/env bash
# The README's main job on the bundled default weights: set up, then
#  1. text -> asset: "a red chair with a tall back" -> out/main/chair/{asset.glb, preview.png, latent.safetensors}
#  2. edit it in latent space: "make it blue" -> out/main/chair_blue/...
#  3. any mesh -> latent -> edit: fit Kiln's latent to a Blender-made mesh and make it taller,
#     in the mesh's own frame -> out/main/suzanne_taller/...
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-out/main}
PROMPT=${KILN_PROMPT:-"a red chair with a tall back"}
.venv/bin/python -m backend generate --prompt "$PROMPT" --seed 0 --out "$OUT/chair"
.venv/bin/python -m backend edit --asset "$OUT/chair/latent.safetensors" --instruction "make it blue" --seed 0 \
  --out "$OUT/chair_blue"
.venv/bin/python -m backend edit --mesh tests/data/suzanne_blender.obj --instruction "make it taller" --seed 0 \
  --out "$OUT/suzanne_taller"
echo "main job done: $OUT/chair, $OUT/chair_blue and $OUT/suzanne_taller (asset.glb, preview.png, latent.safetensors)"
