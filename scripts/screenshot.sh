#!/usr/bin/env bash
# docs/screenshot.png: Kiln's sidebar tab in a real Blender window (Debian's Blender 3.4 under
# Xvfb) after generating two assets through the UI path. Also prints the real timer figures.
#   bash scripts/screenshot.sh [OUT.png]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_blender.sh
OUT=${1:-docs/screenshot.png}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
KILN_THREADS=${KILN_THREADS:-2} BLENDER_USER_SCRIPTS="$TMP/scripts" BLENDER_USER_CONFIG="$TMP/config" \
  xvfb-run -a -s "-screen 0 1600x1000x24" blender --factory-startup --enable-event-simulate -noaudio \
  -P scripts/gui_check.py -- --python "$(pwd)/.venv/bin/python" --screenshot "$OUT" --report "$TMP/report.json" \
  --out "$TMP/out" >"$TMP/blender.log" 2>&1 || true
python3 - "$TMP/report.json" "$TMP/blender.log" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except OSError:
    print(open(sys.argv[2]).read()[-3000:]); sys.exit(1)
if not r.get("ok"):
    print(r.get("error")); sys.exit(1)
print(f"wrote {r['screenshot']} (Blender {r['blender']}); timer drain max {r['timer']['drain']['max_ms']} ms "
      f"over {r['timer']['drain']['count']} ticks, result import max {r['timer']['import']['max_ms']} ms")
PY
