#!/usr/bin/env bash
# One set-up path for a fresh machine: system packages (apt, only when missing),
# the backend venv at .venv/ with pinned dependencies. Idempotent and quiet on re-runs.
#   scripts/setup.sh            backend venv only
#   scripts/setup.sh --test     also what the test suite needs (Blender, bpy venv)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WANT_TEST=0
[[ "${1:-}" == "--test" ]] && WANT_TEST=1

log() { echo "[kiln setup] $*" >&2; }

apt_install() {
  # Install Debian packages only when one of the given commands is missing.
  local missing=()
  for spec in "$@"; do
    local cmd=${spec%%:*} pkg=${spec##*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

PY=${KILN_PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

# Backend venv. A stamp of requirements.txt avoids re-running pip when nothing changed.
STAMP=.venv/.kiln-requirements
if [[ ! -x .venv/bin/python ]] || ! cmp -s requirements.txt "$STAMP"; then
  log "creating .venv with $($PY --version)"
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  PIPLOG=.venv/pip-install.log
  pip_install() {
    .venv/bin/python -m pip install -q --disable-pip-version-check "$@" >>"$PIPLOG" 2>&1 \
      || { echo "[kiln setup] pip install $* failed; log:" >&2; tail -n 40 "$PIPLOG" >&2; exit 1; }
  }
  # torch first and pinned, so nothing below resolves a CUDA build.
  pip_install "$(grep -E '^torch==' requirements.txt)"
  pip_install -r requirements.txt
  cp requirements.txt "$STAMP"
fi

if [[ $WANT_TEST -eq 1 ]]; then
  apt_install blender:blender xvfb-run:xvfb
fi
log "ready: $ROOT/.venv"
