#!/usr/bin/env bash
# The README's test command: set up everything the suite needs, then run all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Ray extra too: tests/test_batch.py starts a local Ray cluster (and fails, not skips, without ray).
KILN_EXTRAS="${KILN_EXTRAS:+$KILN_EXTRAS,}ray" bash scripts/setup.sh
export KILN_REQUIRE_RAY=1
# Blender for the add-on tests (Debian's blender 3.4 + Xvfb, the bpy 5.0.1 wheel in .venv-bpy/);
# once installed, a missing runtime fails the add-on tests instead of skipping them.
bash scripts/setup_blender.sh
[[ "${KILN_SKIP_BLENDER:-0}" == 1 ]] || export KILN_REQUIRE_BLENDER=1
set +e
.venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit $rc
