#!/usr/bin/env bash
# The Blender runtimes the add-on tests use, installed on a fresh machine:
#  - Debian's `blender` (3.4) for `blender -b -P`, plus Xvfb for the real-window check;
#  - the `bpy` 5.0.1 wheel (Blender 5.0 as a Python module) in .venv-bpy/ (it pins numpy<2,
#    so it gets its own venv; it needs Python 3.11).
# Idempotent and quiet on re-runs. KILN_SKIP_BLENDER=1 skips it (the add-on tests then skip).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[kiln setup-blender] $*" >&2; }
[[ "${KILN_SKIP_BLENDER:-0}" == 1 ]] && { log "skipped (KILN_SKIP_BLENDER=1)"; exit 0; }

BPY_VERSION=5.0.1
missing=()
command -v blender >/dev/null 2>&1 || missing+=(blender)
command -v xvfb-run >/dev/null 2>&1 || missing+=(xvfb xauth)
if (( ${#missing[@]} )); then
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  log "apt-get install ${missing[*]}"
  APTLOG=$(mktemp)
  if ! { $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"; } >"$APTLOG" 2>&1; then
    log "apt-get failed; log:"; tail -n 30 "$APTLOG" >&2; exit 1
  fi
fi

STAMP=.venv-bpy/.kiln-bpy
if [[ ! -x .venv-bpy/bin/python ]] || [[ "$(cat "$STAMP" 2>/dev/null)" != "bpy==$BPY_VERSION" ]]; then
  PY=${KILN_BPY_PYTHON:-python3.11}
  command -v "$PY" >/dev/null 2>&1 || { log "bpy $BPY_VERSION needs Python 3.11 ($PY not found)"; exit 1; }
  log "creating .venv-bpy with bpy==$BPY_VERSION ($($PY --version))"
  [[ -x .venv-bpy/bin/python ]] || "$PY" -m venv .venv-bpy
  PIPLOG=.venv-bpy/pip-install.log
  .venv-bpy/bin/python -m pip install -q --disable-pip-version-check "bpy==$BPY_VERSION" >>"$PIPLOG" 2>&1 \
    || { log "pip install bpy failed; log:"; tail -n 30 "$PIPLOG" >&2; exit 1; }
  echo "bpy==$BPY_VERSION" > "$STAMP"
fi
log "ready: $(blender --version 2>/dev/null | head -n 1), bpy $BPY_VERSION in .venv-bpy"
