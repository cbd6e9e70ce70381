"""'Set up backend': create a venv and install Kiln's pinned requirements in a background
thread (pip runs as a child process), with a stage, a fraction and the last pip line for
the UI. No `bpy` here: the operator polls `current` from a timer."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time

from .client import backend_root, venv_python

# Rough number of distributions pip resolves for requirements.txt (torch and its deps,
# transformers, scikit-image, ...): only used to turn "Collecting ..." lines into a fraction.
EXPECTED_PACKAGES = 45
IMPORT_CHECK = "import torch, numpy, safetensors, trimesh, skimage, scipy, PIL, transformers"


def default_base_python() -> str:
    """Blender's own Python where it has venv (official builds), else a python3 on PATH."""
    candidates = [sys.executable] if os.path.basename(sys.executable).lower().startswith("python") else []
    candidates += [shutil.which(n) or "" for n in ("python3.11", "python3.12", "python3.10", "python3")]
    for c in candidates:
        if c and os.path.isfile(c):
            return c
    return ""


class Setup:
    def __init__(self, venv_dir: str, base_python: str = "", requirements: str | None = None,
                 pip_args: str = "", check_imports: str = IMPORT_CHECK):
        root = backend_root() or ""
        self.venv_dir = os.path.abspath(venv_dir)
        self.base_python = base_python or default_base_python()
        self.requirements = requirements or os.path.join(root, "requirements.txt")
        self.pip_args = shlex.split(pip_args)
        self.check_imports = check_imports
        self.stage = "waiting"
        self.fraction = 0.0
        self.message = ""
        self.running = False
        self.finished = False
        self.ok = False
        self.error = ""
        self.log_path = os.path.join(self.venv_dir + "-setup.log")
        self._proc: subprocess.Popen | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = 0.0
        self.elapsed = 0.0

    @property
    def python(self) -> str:
        return venv_python(self.venv_dir)

    def summary(self) -> str:
        if self.ok:
            return f"Backend set up in {self.elapsed:.0f} s: {self.python}"
        return f"Set-up failed: {self.error} (log: {self.log_path})"

    # -- running

    def start(self) -> None:
        self.running, self.finished, self.started = True, False, time.monotonic()
        self._thread = threading.Thread(target=self.run, name="kiln-setup", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """All steps, blocking (the thread target; background mode calls it directly)."""
        self.running, self.started = True, self.started or time.monotonic()
        try:
            os.makedirs(os.path.dirname(self.venv_dir) or ".", exist_ok=True)
            with open(self.log_path, "w", encoding="utf-8") as log:
                self._log = log
                self._steps()
            self.ok = True
            self.stage, self.fraction, self.message = "done", 1.0, ""
        except Exception as exc:  # noqa: BLE001 - reported in the UI
            self.error = "cancelled" if self._cancel.is_set() else str(exc)
            self.stage = "failed"
        finally:
            self.elapsed = time.monotonic() - self.started
            self.running, self.finished = False, True

    def _steps(self) -> None:
        if not os.path.isfile(self.requirements):
            raise RuntimeError(f"requirements file not found: {self.requirements}")
        if not os.path.isfile(self.python):
            if not self.base_python:
                raise RuntimeError("no Python 3.10+ found to create the venv; set 'Base Python'")
            self._run([self.base_python, "-m", "venv", self.venv_dir], "creating the venv", 0.0, 0.05)
        reqs = _read_requirements(self.requirements)
        pip = [self.python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
               *self.pip_args]
        torch = [r for r in reqs if re.match(r"torch([=<>!~ ]|$)", r)]
        if torch:  # first and pinned, so nothing else resolves a different build
            self._run(pip + torch, "installing torch", 0.05, 0.55, count_packages=True)
        self._run(pip + ["-r", self.requirements], "installing requirements", 0.55 if torch else 0.05, 0.95,
                  count_packages=True)
        if self.check_imports:
            self._run([self.python, "-c", self.check_imports], "checking the install", 0.95, 1.0)

    def _run(self, cmd: list[str], stage: str, start: float, end: float, count_packages: bool = False) -> None:
        if self._cancel.is_set():
            raise RuntimeError("cancelled")
        self.stage, self.fraction = stage, start
        self._log.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        self._log.flush()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                      text=True, encoding="utf-8", errors="replace")
        seen = 0
        tail: list[str] = []
        for line in self._proc.stdout:
            self._log.write(line)
            line = line.strip()
            if not line:
                continue
            tail = (tail + [line])[-8:]
            self.message = line
            if count_packages and line.startswith(("Collecting ", "Requirement already satisfied")):
                seen += 1
                self.fraction = start + (end - start) * min(0.9, seen / EXPECTED_PACKAGES)
            elif count_packages and line.startswith("Installing collected packages"):
                self.fraction = start + (end - start) * 0.92
        code = self._proc.wait()
        self._log.flush()
        if code != 0:
            if self._cancel.is_set():
                raise RuntimeError("cancelled")
            raise RuntimeError(f"{stage} failed (exit code {code}): {tail[-1] if tail else ''}")
        self.fraction = end


def _read_requirements(path: str) -> list[str]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                out.append(line)
    return out


current: Setup | None = None  # the set-up shown in the preferences
