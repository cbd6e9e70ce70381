"""`python -m backend batch`: local runs (references, resume, retries, a poisoned job, Ctrl-C) and
a real Ray cluster on 127.0.0.1 (a worker killed mid-run, re-run, same latents as the local path)."""
import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
import trimesh

from backend.batch import BatchOptions, BatchFileError, Worker, load_jobs, run_batch
from backend.results import load_latent

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ["a red chair", "a blue car", "a green tree", "a yellow lamp", "a white mug", "a black sword",
           "an orange house", "a purple vase"]


def text_job(i: int, **kw) -> dict:
    return {"op": "generate", "id": f"t{i:02d}", "prompt": PROMPTS[i % len(PROMPTS)], "seed": i, "resolution": 64,
            "preview": False, **kw}


def write_jobs(path, jobs) -> str:
    with open(path, "w") as fh:
        for job in jobs:
            fh.write((job if isinstance(job, str) else json.dumps(job)) + "\n")
    return str(path)


def manifest(out) -> list[dict]:
    with open(os.path.join(out, "manifest.jsonl")) as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def worker():
    """One in-process worker (warm models, one thread, as the Ray workers) shared by the local tests."""
    import torch

    threads, env = torch.get_num_threads(), os.environ.get("KILN_THREADS")
    yield Worker("/nonexistent", threads=1, preload=("encode", "text"))
    torch.set_num_threads(threads)  # as it was for the other test files
    if env is None:
        os.environ.pop("KILN_THREADS", None)
    else:
        os.environ["KILN_THREADS"] = env


@pytest.fixture(scope="module")
def corrupt_mesh(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "corrupt.obj"
    path.write_bytes(os.urandom(300))
    return str(path)


# ------------------------------------------------------------------------------------ local


def test_local_batch_references_and_a_poisoned_job_fails_alone(tmp_path, worker, corrupt_mesh):
    jobs = [text_job(0), text_job(1), text_job(2),
            {"op": "encode", "id": "fit", "mesh": "@t00", "fit_steps": 0, "resolution": 64, "preview": False},
            {"op": "edit", "id": "blue", "asset": "@t00", "instruction": "make it blue", "resolution": 64,
             "preview": False},
            {"op": "encode", "id": "poison", "mesh": corrupt_mesh, "resolution": 64, "preview": False},
            {"op": "edit", "id": "after-poison", "asset": "@poison", "instruction": "make it red"},
            {"op": "generate", "id": "empty", "prompt": "  "},
            "this line is not JSON",
            {"op": "edit", "id": "forward", "asset": "@later", "instruction": "make it red"},
            {"op": "hello", "id": "not-a-job"}]
    out = str(tmp_path / "out")
    status, summary = run_batch(write_jobs(tmp_path / "jobs.jsonl", jobs), out, worker=worker)
    assert status == 1
    recs = {r["id"]: r for r in manifest(out)}
    assert len(recs) == len(manifest(out)) == 11  # one line per job
    for rid in ("t00", "t01", "t02", "fit"):
        rec = recs[rid]
        assert rec["status"] == "ok" and rec["attempts"] == 1 and rec["error"] is None, rec
        assert rec["dir"] == os.path.join(os.path.realpath(out), rid)
        assert set(os.listdir(rec["dir"])) >= {"asset.glb", "mesh.kmesh", "latent.safetensors", "job.json"}
        assert rec["timings"]["total"] > 0 and rec["worker"]["pid"] == os.getpid()
    # the encode used the text job's GLB; the edit (when its model is trained) that job's latent
    assert recs["fit"]["inputs"] == {"mesh": os.path.join(recs["t00"]["dir"], "asset.glb")}
    assert load_latent(recs["fit"]["result"]["latent"])[1]["source_mesh"] == recs["fit"]["inputs"]["mesh"]
    assert recs["blue"]["inputs"] == {"asset": recs["t00"]["result"]["latent"]}
    assert recs["blue"]["status"] == "ok", recs["blue"]
    assert load_latent(recs["blue"]["result"]["latent"])[1]["source_latent"] == recs["t00"]["result"]["latent"]
    assert recs["poison"]["status"] == "failed" and recs["poison"]["error"]["code"] == "bad_input"
    assert recs["poison"]["attempts"] == 1  # an input error is not retried
    assert recs["after-poison"]["error"]["code"] == "bad_input"
    assert "'poison'" in recs["after-poison"]["error"]["message"]
    assert recs["after-poison"]["attempts"] == 0
    assert recs["empty"]["error"]["code"] == "bad_request"
    assert recs["line-9"]["error"] == {"code": "bad_request", "message": "line 9: line is not valid JSON"}
    assert "not an earlier job" in recs["forward"]["error"]["message"]
    assert recs["not-a-job"]["error"]["code"] == "bad_request"
    assert summary["ok"] == 5 and summary["failed"] == 6


def test_local_rerun_does_no_work_and_redoes_only_what_is_missing(tmp_path, worker):
    jobs = [text_job(3), text_job(4), text_job(5, out="nested/five"),
            {"op": "encode", "id": "fit4", "mesh": "@t04", "fit_steps": 0, "resolution": 64, "preview": False}]
    path, out = write_jobs(tmp_path / "jobs.jsonl", jobs), str(tmp_path / "out")
    status, first = run_batch(path, out, worker=worker)
    assert status == 0 and first["ran"] == 4 and first["ok"] == 4
    assert os.path.isfile(os.path.join(out, "nested", "five", "asset.glb"))
    mtimes = {r["id"]: os.stat(r["result"]["latent"]).st_mtime_ns for r in manifest(out)}
    before = manifest(out)

    status, again = run_batch(path, out, worker=worker)
    assert status == 0 and again["ran"] == 0 and again["skipped"] == 4
    assert manifest(out) == before
    assert {r["id"]: os.stat(r["result"]["latent"]).st_mtime_ns for r in manifest(out)} == mtimes

    # a result that no longer validates is redone, and so is the job that used it; a changed
    # request is redone; the rest is not touched
    with open(os.path.join(out, "t04", "latent.safetensors"), "wb") as fh:
        fh.write(b"truncated")
    jobs[0]["seed"] = 30
    write_jobs(path, jobs)
    status, third = run_batch(path, out, worker=worker)
    assert status == 0 and third["ran"] == 3 and third["skipped"] == 1
    recs = {r["id"]: r for r in manifest(out)}
    assert recs["t05"]["run"] == before[2]["run"] and recs["t04"]["run"] != before[1]["run"]
    assert recs["t03"]["request"]["seed"] == 30 and recs["fit4"]["run"] == recs["t04"]["run"]


def test_transient_failures_are_retried_a_bounded_number_of_times(tmp_path, worker, monkeypatch):
    import backend.jobs

    real = backend.jobs.run_job
    calls = collections.Counter()

    def flaky(ctx, req):
        calls[ctx.id] += 1
        if ctx.id == "broken" or ctx.id == "flaky" and calls[ctx.id] == 1:
            raise RuntimeError(f"transient trouble in {ctx.id}")
        return real(ctx, req)

    monkeypatch.setattr(backend.jobs, "run_job", flaky)
    mesh = str(tmp_path / "box.obj")
    trimesh.creation.box().export(mesh)
    jobs = [{"op": "encode", "id": i, "mesh": mesh, "fit_steps": 0, "resolution": 64, "preview": False}
            for i in ("flaky", "broken", "fine")]
    out = str(tmp_path / "out")
    status, summary = run_batch(write_jobs(tmp_path / "jobs.jsonl", jobs), out, BatchOptions(retries=2), worker=worker)
    recs = {r["id"]: r for r in manifest(out)}
    assert status == 1 and summary["ok"] == 2 and summary["failed"] == 1
    assert recs["flaky"]["status"] == "ok" and recs["flaky"]["attempts"] == 2
    assert recs["flaky"]["errors"][0]["code"] == "internal" and "transient" in recs["flaky"]["errors"][0]["message"]
    assert recs["broken"]["status"] == "failed" and recs["broken"]["attempts"] == 3 == calls["broken"]
    assert recs["broken"]["error"] == {"code": "internal", "message": "RuntimeError: transient trouble in broken"}
    assert recs["fine"]["attempts"] == 1 == calls["fine"]


def test_interrupt_stops_cleanly_and_a_rerun_finishes(tmp_path, worker, monkeypatch):
    import backend.jobs

    real = backend.jobs.run_job
    started = []

    def interrupt_third(ctx, req):
        started.append(ctx.id)
        if len(started) == 3:
            raise KeyboardInterrupt()
        return real(ctx, req)

    monkeypatch.setattr(backend.jobs, "run_job", interrupt_third)
    mesh = str(tmp_path / "ball.obj")
    trimesh.creation.icosphere(subdivisions=2).export(mesh)
    jobs = [{"op": "encode", "id": f"e{i}", "mesh": mesh, "fit_steps": 0, "resolution": 64, "preview": False}
            for i in range(5)]
    path, out = write_jobs(tmp_path / "jobs.jsonl", jobs), str(tmp_path / "out")
    status, summary = run_batch(path, out, worker=worker)
    assert status == 130 and summary["interrupted"] and summary["ok"] == 2 and summary["pending"] == 3
    assert [r["status"] for r in manifest(out)] == ["ok", "ok", "pending", "pending", "pending"]
    assert not os.path.exists(os.path.join(out, "e2", "job.json"))
    monkeypatch.setattr(backend.jobs, "run_job", real)
    status, summary = run_batch(path, out, worker=worker)
    assert status == 0 and summary["ran"] == 3 and summary["skipped"] == 2
    assert [r["status"] for r in manifest(out)] == ["ok"] * 5


def test_jobs_file_errors(tmp_path):
    path = write_jobs(tmp_path / "dup.jsonl", [text_job(0), text_job(1), text_job(0)])
    with pytest.raises(BatchFileError, match="already used on line 1"):
        load_jobs(path)
    path = write_jobs(tmp_path / "folders.jsonl", [text_job(0, out="same"), text_job(1, out="same")])
    with pytest.raises(BatchFileError, match="would write to folder"):
        load_jobs(path)
    # over the command line: exit 2, one clear line, nothing run
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-m", "backend", "batch", path, "--out", str(tmp_path / "o")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "error [bad_request]" in proc.stderr and "would write to folder" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "backend", "batch", str(tmp_path / "missing.jsonl"), "--out",
                           str(tmp_path / "o")], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "cannot read" in proc.stderr


# ------------------------------------------------------------------------------------ Ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """`ray start --head --block` on 127.0.0.1 with 2 CPUs, stopped (SIGTERM) at the end."""
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("KILN_REQUIRE_RAY") == "1":
            pytest.fail("ray is not installed (KILN_EXTRAS=ray bash scripts/setup.sh)")
        pytest.skip("ray is not installed (KILN_EXTRAS=ray bash scripts/setup.sh)")
    temp = tempfile.mkdtemp(prefix="kray", dir="/tmp")  # short: Ray's socket paths are length-limited
    port = _free_port()
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    log = open(os.path.join(temp, "head.log"), "wb")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": REPO}
    head = subprocess.Popen([ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                             "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard=false",
                             "--disable-usage-stats", "--temp-dir", temp, "--block"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=temp)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while b"--block" not in open(os.path.join(temp, "head.log"), "rb").read():
        assert head.poll() is None and time.monotonic() < deadline, open(os.path.join(temp, "head.log")).read()
        time.sleep(0.2)
    yield address
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait()
    log.close()
    shutil.rmtree(temp, ignore_errors=True)


def _batch_cmd(jobs: str, out: str, address: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "backend", "batch", jobs, "--out", out, "--ray", address, "--workers", "2",
            "--threads", "1", "--json", *extra]


class ManifestTail:
    """Every line appended to DIR/manifest.jsonl during a run (read through one open handle, so
    the end-of-run rewrite does not hide them)."""

    def __init__(self, path: str):
        self.path, self.lines, self.stop = path, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not os.path.exists(self.path):
            if self.stop.wait(0.02):
                return
        with open(self.path) as fh:
            buf = ""
            while True:
                chunk = fh.read()
                buf += chunk
                while "\n" in buf:
                    line, buf = buf.split("\n", 1)
                    self.lines.append(json.loads(line))
                if not chunk and self.stop.wait(0.05):
                    buf += fh.read()
                    self.lines += [json.loads(x) for x in buf.splitlines() if x.strip()]
                    return


def test_ray_batch_with_a_killed_worker_completes_every_job_exactly_once(tmp_path, ray_cluster, corrupt_mesh, worker):
    jobs = [text_job(i) for i in range(24)]
    jobs.insert(9, {"op": "encode", "id": "poison", "mesh": corrupt_mesh, "resolution": 64, "preview": False})
    path, out = write_jobs(tmp_path / "jobs.jsonl", jobs), str(tmp_path / "out")
    env = {**os.environ, "PYTHONPATH": REPO}
    os.makedirs(out)
    tail = ManifestTail(os.path.join(out, "manifest.jsonl"))
    proc = subprocess.Popen(_batch_cmd(path, out, ray_cluster), cwd=str(tmp_path), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        ok = [r for r in list(tail.lines) if r["status"] == "ok"]
        if len(ok) >= 3:  # a worker that has done work dies (like the OOM killer would kill it)
            killed = ok[-1]["worker"]["pid"]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=300)
    tail.stop.set()
    tail.thread.join(10)
    assert killed is not None, stderr
    assert proc.returncode == 1, stderr  # the poisoned job failed
    summary = json.loads(stdout)
    assert summary["mode"] == "ray" and summary["ok"] == 24 and summary["failed"] == 1 and summary["pending"] == 0
    assert summary["workers_started"] == 3  # two, and one in place of the killed one
    assert "worker " in stderr and "died" in stderr

    # exactly once: one success per job in everything appended during the run, none for the poison
    ok_lines = collections.Counter(r["id"] for r in tail.lines if r["status"] == "ok")
    assert ok_lines == {j["id"]: 1 for j in jobs if j["id"] != "poison"}
    final = manifest(out)
    assert [r["id"] for r in final] == [j["id"] for j in jobs]
    poison = next(r for r in final if r["id"] == "poison")
    assert poison["status"] == "failed" and poison["error"]["code"] == "bad_input"
    # an input error is not retried; a second attempt only when the killed worker was running it
    assert [e["code"] for e in poison["errors"]] == ["internal"] * (poison["attempts"] - 1) and poison["attempts"] <= 2
    assert "triangles" in poison["error"]["message"]
    rescheduled = [r for r in final if r["attempts"] > 1]
    assert rescheduled, "the killed worker was running a job"
    for rec in rescheduled:
        # the poison may have been in the killed worker's chunk: rerun once, then failed on its input (checked above)
        assert rec["status"] == ("failed" if rec["id"] == "poison" else "ok") and rec["errors"][0]["code"] == "internal"
        assert "died" in rec["errors"][0]["message"]
        assert rec["worker"]["pid"] != killed
    assert {r["worker"]["pid"] for r in final if r["status"] == "ok"} - {os.getpid()}  # ran in Ray workers
    assert max(r["timings"]["chunk"] for r in final if r["status"] == "ok") <= 4
    assert sorted(os.listdir(out)) == sorted([j["id"] for j in jobs] + ["manifest.jsonl", ".kiln-batch.lock"])
    for job in jobs:
        if job["id"] != "poison":
            assert os.path.isfile(os.path.join(out, job["id"], "job.json"))

    # the same seed gives the same asset as the local path
    local_jobs = [text_job(i) for i in (0, 5, 17)]
    local_out = str(tmp_path / "local")
    assert run_batch(write_jobs(tmp_path / "local.jsonl", local_jobs), local_out, worker=worker)[0] == 0
    for job in local_jobs:
        (a, meta_a), (b, meta_b) = (load_latent(os.path.join(root, job["id"], "latent.safetensors"))
                                    for root in (out, local_out))
        a, b = a.numpy(), b.numpy()
        assert meta_a["sample_seed"] == meta_b["sample_seed"] and meta_a["rebuilt"] == meta_b["rebuilt"]
        if not meta_a["rebuilt"]:
            assert np.allclose(a, b, atol=1e-4), np.abs(a - b).max()
        else:
            # a rebuilt sample is moved into place by a delta encoded from surface samples of its
            # marching-cubes mesh; one thread (Ray's workers) against two rounds differently, which
            # can move a few of those samples to another triangle: the same asset to a few hundredths
            assert np.abs(a - b).max() < 0.1 and np.abs(a - b).mean() < 5e-3, np.abs(a - b).max()

    # a re-run does no work for the finished jobs: only the poisoned one is tried again
    latents = {j["id"]: os.stat(os.path.join(out, j["id"], "latent.safetensors")).st_mtime_ns
               for j in jobs if j["id"] != "poison"}
    proc = subprocess.run(_batch_cmd(path, out, ray_cluster), cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=300)
    again = json.loads(proc.stdout)
    assert proc.returncode == 1 and again["skipped"] == 24 and again["ran"] == 1 and again["failed"] == 1, proc.stderr
    assert {j: os.stat(os.path.join(out, j, "latent.safetensors")).st_mtime_ns for j in latents} == latents
    assert [r for r in manifest(out) if r["id"] != "poison"] == [r for r in final if r["id"] != "poison"]


def test_ray_rerun_of_a_finished_batch_starts_nothing(tmp_path, ray_cluster, worker):
    path, out = write_jobs(tmp_path / "jobs.jsonl", [text_job(i) for i in range(3)]), str(tmp_path / "out")
    assert run_batch(path, out, worker=worker)[0] == 0  # finished locally ...
    t = time.monotonic()
    proc = subprocess.run(_batch_cmd(path, out, ray_cluster), cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": REPO},
                          capture_output=True, text=True, timeout=120)
    summary = json.loads(proc.stdout)  # ... so the cluster run has nothing to do
    assert proc.returncode == 0 and summary["ran"] == 0 and summary["skipped"] == 3, proc.stderr
    assert "workers" not in summary and time.monotonic() - t < 60
