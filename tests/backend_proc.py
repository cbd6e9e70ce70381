"""Test helper: a real `python -m backend serve` subprocess and a line reader with timeouts."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BackendProcess:
    def __init__(self, output_root: str, *extra: str, env: dict | None = None):
        full_env = {**os.environ, "PYTHONPATH": REPO, "KILN_THREADS": "2", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve", "--output-root", output_root, *extra],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env)
        self.events: queue.Queue = queue.Queue()
        self.raw_lines: list[bytes] = []
        self.stderr_lines: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.raw_lines.append(line)
            self.events.put(json.loads(line))
        self.events.put(None)

    def _drain_stderr(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def send_raw(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, op: str, id: str, **fields) -> None:
        self.send_raw((json.dumps({"op": op, "id": id, **fields}) + "\n").encode())

    def next_event(self, timeout: float = 60.0) -> dict:
        ev = self.events.get(timeout=timeout)
        if ev is None:
            raise EOFError("backend closed stdout; stderr:\n" + b"".join(self.stderr_lines[-30:]).decode(errors="replace"))
        return ev

    def wait_for(self, id: str, types=("result", "error", "cancelled"), timeout: float = 120.0,
                 seen: list | None = None) -> dict:
        """Next event for `id` whose type is in `types` (other events are kept in `seen`)."""
        deadline = time.monotonic() + timeout
        while True:
            ev = self.next_event(max(0.1, deadline - time.monotonic()))
            if seen is not None:
                seen.append(ev)
            if ev.get("id") == id and ev["event"] in types:
                return ev

    def close(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
