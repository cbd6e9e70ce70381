"""Where the Blender runtimes for the add-on tests are, and how to run a script in them.

- Blender 5.0: the `bpy` 5.0.1 module from PyPI in `.venv-bpy/` (it pins numpy<2, so it has
  its own venv); `scripts/setup_blender.sh` makes it.
- Blender 3.4: Debian's `blender` binary (`apt-get install blender`), run as `blender -b -P`.

When a runtime is missing the tests skip, unless KILN_REQUIRE_BLENDER=1 (scripts/test.sh
sets it after installing both), where they fail.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BPY_PYTHON = os.path.join(REPO, ".venv-bpy", "bin", "python")
BLENDER = shutil.which("blender") or ""
EDIT_WEIGHTS = os.path.join(REPO, "models", "weights", "edit.safetensors")
REQUIRE = os.environ.get("KILN_REQUIRE_BLENDER") == "1"


def need(path: str, what: str) -> None:
    if path and os.path.exists(path):
        return
    msg = f"{what} not found ({path or 'not on PATH'}): run scripts/setup_blender.sh"
    if REQUIRE:
        pytest.fail(msg)
    pytest.skip(msg)


def runtime_cmd(runtime: str, script: str, script_args: list[str]) -> list[str]:
    if runtime == "blender-5.0":
        need(BPY_PYTHON, "the bpy 5.0.1 venv")
        return [BPY_PYTHON, script, "--", *script_args]
    need(BLENDER, "Debian's blender")
    return [BLENDER, "-b", "--factory-startup", "-noaudio", "-P", script, "--", *script_args]


def blender_env(work: str) -> dict:
    """Blender's user folders in `work` (never $HOME), one CPU thread for the backend."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(KILN_THREADS="1", BLENDER_USER_RESOURCES=os.path.join(work, "user"),
               BLENDER_USER_SCRIPTS=os.path.join(work, "user", "scripts"),
               BLENDER_USER_CONFIG=os.path.join(work, "user", "config"))
    return env


def run_json(cmd: list[str], out: str, env: dict, timeout: float) -> tuple[dict, str]:
    """Run a Blender script that writes JSON to `out`; -> (that JSON, all it printed)."""
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    if not os.path.isfile(out):
        pytest.fail(f"{cmd[0]} wrote no report (exit {proc.returncode}):\n{output[-6000:]}")
    with open(out) as fh:
        return json.load(fh), output


def build_zip(out_dir: str) -> str:
    sys.path.insert(0, REPO)
    import build

    return build.build(out_dir)
