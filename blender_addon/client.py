"""The backend child process: start, send requests, read events, notice when it dies.

Blender never imports torch: the backend runs as `python -m backend serve` with the
interpreter the user configured, and talks JSON lines over its stdin/stdout. A reader
thread turns stdout lines into events on a queue (and reads a result's mesh file off the
main thread); the main thread drains that queue, from a `bpy.app.timers` callback in the
UI or in a blocking loop in background mode. This module has no `bpy` import, so it can be
used (and tested) from any Python.
"""
from __future__ import annotations

import collections
import importlib.util
import itertools
import json
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time

ADDON_DIR = os.path.dirname(os.path.realpath(__file__))
PACKAGE = __package__ or "kiln"


def backend_root() -> str | None:
    """The folder holding `backend/` and `models/`: the add-on's own folder when installed
    from the zip, the repository root when the add-on runs from a checkout."""
    for cand in (ADDON_DIR, os.path.dirname(ADDON_DIR)):
        if os.path.isfile(os.path.join(cand, "backend", "protocol.py")) and os.path.isdir(os.path.join(cand, "models")):
            return cand
    return None


def _load_protocol():
    """backend/protocol.py (standard library only), loaded by path under a private name so
    it never clashes with another add-on's top-level `backend` module."""
    root = backend_root()
    if root is None:
        return None
    name = PACKAGE + "._kiln_protocol"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, "backend", "protocol.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


protocol = _load_protocol()


class KilnError(Exception):
    """A failure with a protocol error code (or one of the client's own codes below)."""

    # client-side codes, next to the backend's fixed list (protocol.ERROR_CODES)
    CLIENT_CODES = {
        "backend_not_configured": "no usable backend Python interpreter",
        "backend_missing": "the add-on's backend files are missing",
        "backend_crashed": "the backend process stopped unexpectedly",
        "backend_stopped": "the backend is not running and may not be started automatically",
        "backend_start_failed": "the backend process could not be started",
        "timeout": "no answer from the backend in time",
    }

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


# ---------------------------------------------------------------- interpreter


def venv_python(venv_dir: str) -> str:
    if os.name == "nt":
        return os.path.join(venv_dir, "Scripts", "python.exe")
    return os.path.join(venv_dir, "bin", "python")


def find_interpreter(configured: str = "", setup_venv: str = "") -> tuple[str, str]:
    """-> (path, where it came from). Order: the preference, $KILN_PYTHON, the checkout's
    `.venv` (development), the venv made by "Set up backend". ("", reason) when none."""
    if configured:
        path = os.path.abspath(os.path.expanduser(configured))
        if os.path.isfile(path):
            return path, "preferences"
        return "", f"the interpreter set in preferences does not exist: {path}"
    env = os.environ.get("KILN_PYTHON", "")
    if env and os.path.isfile(env):
        return env, "$KILN_PYTHON"
    root = backend_root()
    if root:
        dev = venv_python(os.path.join(root, ".venv"))
        if os.path.isfile(dev):
            return dev, "the checkout's .venv"
    if setup_venv:
        made = venv_python(setup_venv)
        if os.path.isfile(made):
            return made, "the venv made by Set up backend"
    return "", "no backend Python yet: click 'Set up backend' in the add-on preferences, or set the interpreter path"


# ---------------------------------------------------------------- result side files


def read_latent_metadata(path: str) -> dict:
    """The `kiln` metadata of a latent.safetensors, read with the standard library
    (a safetensors file starts with a little-endian u64 header length and a JSON header)."""
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > 16 << 20:
                return {}
            header = json.loads(fh.read(n))
        return json.loads((header.get("__metadata__") or {}).get("kiln", "{}"))
    except (OSError, ValueError, struct.error):
        return {}


def read_mesh_file(path: str) -> dict:
    """protocol.read_kmesh plus a count of triangles that repeat a vertex, so the main thread
    runs Blender's (slow) mesh.validate() only when there is something to clean."""
    arrays = protocol.read_kmesh(path)
    f = arrays["faces"]
    arrays["degenerate"] = sum(1 for a, b, c in zip(f[0::3], f[1::3], f[2::3]) if a == b or b == c or a == c)
    return arrays


def load_result_files(ev: dict) -> None:
    """Attach the mesh arrays and the latent's metadata to a result event (runs on the
    reader thread, so the main thread only builds the Blender mesh)."""
    if ev.get("mesh_file"):
        try:
            ev["_arrays"] = read_mesh_file(ev["mesh_file"])
        except protocol.MeshFileError as exc:
            ev["_arrays_error"] = str(exc)
    if ev.get("latent"):
        ev["_latent_meta"] = read_latent_metadata(ev["latent"])


# ---------------------------------------------------------------- the process


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Backend:
    """One `python -m backend serve` child at a time; restartable.

    State: stopped -> starting (process up, waiting for `hello`) -> ready; crashed when the
    process ends without being asked to. Events come out of `poll()` / `wait_event()` as
    dicts; the process ending is the synthetic event {"event": "_exit", ...}."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.events: queue.Queue = queue.Queue()
        self.state = "stopped"
        self.info: dict = {}          # the hello result: device, models, versions
        self.error = ""               # why it is crashed / failed to start
        self.log_tail: collections.deque = collections.deque(maxlen=60)
        self.log_path = ""
        self.python = ""
        self.output_root = ""
        self.generation = 0
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._stopping = False

    # -- lifecycle

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.alive else None

    def start(self, python: str, output_root: str, device: str = "auto", threads: int = 0,
              extra_env: dict | None = None) -> None:
        if self.alive:
            return
        root = backend_root()
        if root is None or protocol is None:
            raise KilnError("backend_missing", f"Kiln's backend files are missing next to the add-on ({ADDON_DIR})")
        if not python or not os.path.isfile(python):
            raise KilnError("backend_not_configured",
                            f"backend Python not found{': ' + python if python else ''}; set it in "
                            "Preferences > Add-ons > Kiln or click 'Set up backend'")
        output_root = os.path.abspath(os.path.expanduser(output_root))
        try:
            os.makedirs(output_root, exist_ok=True)
        except OSError as exc:
            raise KilnError("backend_start_failed", f"cannot create the output folder {output_root}: {exc}") from None
        self.log_path = os.path.join(output_root, "kiln_backend.log")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")}
        env.update(PYTHONPATH=root, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
        if threads:
            env["KILN_THREADS"] = str(threads)
        env.update(extra_env or {})
        cmd = [python, "-m", "backend", "serve", "--output-root", output_root, "--device", device,
               "--log-file", self.log_path]
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if os.name == "nt" else 0
        try:
            proc = subprocess.Popen(cmd, cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, creationflags=flags)
        except OSError as exc:
            self.state, self.error = "crashed", f"could not start the backend with {python}: {exc}"
            raise KilnError("backend_start_failed", self.error) from None
        self.generation += 1
        self.proc, self.python, self.output_root = proc, python, output_root
        self.state, self.error, self.info = "starting", "", {}
        self.log_tail.clear()
        self._stopping = False
        gen = self.generation
        threading.Thread(target=self._read_stdout, args=(proc, gen), name="kiln-reader", daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(proc,), name="kiln-stderr", daemon=True).start()
        self.send("hello", f"hello-{gen}", client=f"kiln-blender-addon {PACKAGE}")

    def stop(self, wait: float = 0.0) -> None:
        """Ask the backend to shut down (it also exits on stdin EOF); kill it if it lingers."""
        proc = self.proc
        self._stopping = True
        self.state = "stopped"
        if proc is None or proc.poll() is not None:
            return
        try:
            with self._send_lock:
                proc.stdin.write((protocol.request("shutdown", "shutdown") + "\n").encode())
                proc.stdin.flush()
                proc.stdin.close()
        except (OSError, ValueError):
            pass

        def reap():
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

        if wait:
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        else:
            threading.Thread(target=reap, name="kiln-reaper", daemon=True).start()

    def kill(self) -> None:
        """For tests and emergencies: end the process without asking."""
        if self.alive:
            self.proc.kill()

    # -- I/O

    def new_id(self, stem: str = "job") -> str:
        return f"{stem}-{next(self._ids)}"

    def send(self, op: str, id: str, **fields) -> None:
        if not self.alive:
            why = f" ({self.error})" if self.error else ""
            raise KilnError("backend_crashed", f"the backend is not running{why}")
        line = protocol.request(op, id, **fields) + "\n"
        try:
            with self._send_lock:
                self.proc.stdin.write(line.encode("utf-8"))
                self.proc.stdin.flush()
        except (OSError, ValueError):
            raise KilnError("backend_crashed", "the backend stopped accepting requests") from None

    def _read_stdout(self, proc: subprocess.Popen, gen: int) -> None:
        for raw in proc.stdout:
            try:
                ev = protocol.parse_event(raw.decode("utf-8"))
            except ValueError:
                self.log_tail.append("unexpected stdout line: " + raw[:200].decode("utf-8", "replace").rstrip())
                continue
            if ev["event"] == "result" and ev.get("op") in ("generate", "edit", "encode"):
                load_result_files(ev)
            ev["_gen"] = gen
            self.events.put(ev)
        code = proc.wait()
        self.events.put({"event": "_exit", "_gen": gen, "code": code})

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        for raw in proc.stderr:
            self.log_tail.append(raw.decode("utf-8", "replace").rstrip())

    def last_log_line(self) -> str:
        for line in reversed(self.log_tail):
            if line.strip() and "Traceback" not in line:
                return line.strip()[-300:]
        return ""

    def handle_control(self, ev: dict) -> bool:
        """Backend-level events (hello, exit): update the state. True when consumed."""
        if ev.get("_gen") != self.generation:
            return True  # from a process we already replaced
        if ev["event"] == "_exit":
            self.proc_exit_code = ev["code"]
            if self._stopping:
                self.state = "stopped"
            else:
                what = (f"the backend could not start with {self.python}" if self.state == "starting"
                        else "the backend stopped unexpectedly")
                self.state = "crashed"
                detail = self.last_log_line()
                self.error = f"{what} ({_describe_exit(ev['code'])})" + \
                    (f": {detail}" if detail else "") + (f"; log: {self.log_path}" if self.log_path else "")
            return False  # the job layer fails its running jobs too
        if ev.get("id") == f"hello-{self.generation}":
            if ev["event"] == "result":
                self.info = ev
                self.state = "ready"
            else:
                self.error = ev.get("message", "hello failed")
            return True
        return False

    def poll(self, max_events: int = 200, budget_s: float = 0.02) -> list[dict]:
        """Events that have arrived, without blocking (at most `max_events` or `budget_s`)."""
        out, t0 = [], time.perf_counter()
        while len(out) < max_events and time.perf_counter() - t0 < budget_s:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                break
        return out

    def wait_event(self, timeout: float) -> dict | None:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def model_available(self, mode: str, model_id: str | None = None) -> bool | None:
        """Whether the running backend has a model for `mode` (that model, when `model_id` is
        given) available (None: not known yet)."""
        models = self.info.get("models")
        if not models:
            return None
        return any(mode in m["modes"] and m["available"] and model_id in (None, m["id"]) for m in models)
