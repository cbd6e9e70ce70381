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
  rm -f .venv/.kiln-requirements-*.txt  # re-check the extras against the new pins
fi

# Optional extras, e.g. KILN_EXTRAS=ray (batch runs on a Ray cluster): requirements-<extra>.txt,
# installed with requirements.txt as constraints so torch and numpy stay as pinned.
EXTRAS=${KILN_EXTRAS:-}
for extra in ${EXTRAS//,/ }; do
  REQ=requirements-$extra.txt
  [[ -f "$REQ" ]] || { log "unknown extra '$extra' (no $REQ)"; exit 1; }
  XSTAMP=.venv/.kiln-$REQ
  if ! cmp -s "$REQ" "$XSTAMP"; then
    log "installing the $extra extra ($REQ)"
    .venv/bin/python -m pip install -q --disable-pip-version-check -r "$REQ" -c requirements.txt >>.venv/pip-install.log 2>&1 \
      || { log "pip install -r $REQ failed; log:"; tail -n 40 .venv/pip-install.log >&2; exit 1; }
    cp "$REQ" "$XSTAMP"
  fi
done

log "ready: $ROOT/.venv"
