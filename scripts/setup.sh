#!/usr/bin/env bash
# One set-up path for a fresh machine: the backend venv at .venv/ with pinned
# dependencies. Idempotent and quiet on re-runs (a stamp of requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { echo "[kiln setup] $*" >&2; }

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

log "ready: $ROOT/.venv"
