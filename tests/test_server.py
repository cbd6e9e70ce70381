"""The backend over a real subprocess: request/response cycles, queue, cancel, fuzz, EOF, paths."""
import json
import os
import random
import time

import numpy as np
import pytest
import trimesh

from backend.protocol import ERROR_CODES
from backend.results import load_latent
from tests.backend_proc import BackendProcess



@pytest.fixture(scope="module")
def mesh_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("meshes") / "torus.obj"
    trimesh.creation.torus(major_radius=1.0, minor_radius=0.35).export(path)
    return str(path)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    root = tmp_path_factory.mktemp("out")
    proc = BackendProcess(str(root))
    yield proc, str(root)
    proc.close()


def test_hello(backend):
    proc, root = backend
    proc.send("hello", "h1")
    ev = proc.wait_for("h1", timeout=60)
    assert ev["event"] == "result" and ev["protocol"] == 1
    ids = {m["id"]: m for m in ev["models"]}
    assert ids["kiln-triplane-ae"]["available"]
    assert ev["device"] in ("cpu", "cuda")
    assert os.path.realpath(ev["output_root"]) == os.path.realpath(root)


def test_encode_full_cycle(backend, mesh_file):
    proc, root = backend
    seen = []
    proc.send("encode", "enc1", mesh=mesh_file, fit_steps=20, resolution=64)
    ev = proc.wait_for("enc1", seen=seen)
    assert ev["event"] == "result", ev
    kinds = [e["event"] for e in seen if e.get("id") == "enc1"]
    assert kinds[0] == "accepted" and "progress" in kinds
    fractions = [e["fraction"] for e in seen if e["event"] == "progress" and e["id"] == "enc1"]
    assert all(0 <= f <= 1 for f in fractions)
    assert os.path.commonpath([ev["dir"], os.path.realpath(root)]) == os.path.realpath(root)
    scene = trimesh.load(ev["glb"])
    assert sum(len(g.faces) for g in scene.geometry.values()) == ev["mesh"]["faces"] > 100
    latent, meta = load_latent(ev["latent"])
    assert latent.shape[1] == 3 and meta["op"] == "encode" and meta["model"] == "kiln-triplane-ae"
    assert meta["normalisation"]["scale"] > 0 and ev["fit_iou"] > 0.5
    assert os.path.exists(ev["preview"])
    # the reconstruction is back in the mesh's own frame and scale
    src = trimesh.load(mesh_file)
    bounds = np.array(ev["mesh"]["bounds"])
    assert np.allclose(bounds, src.bounds, atol=0.15 * np.ptp(src.bounds, axis=0).max())
    assert set(ev["timings"]) >= {"encode", "mesh", "write", "total"}


def test_queue_order_and_cancel_queued(backend, mesh_file):
    proc, _ = backend
    proc.send("encode", "q1", mesh=mesh_file, fit_steps=200, resolution=128)
    proc.send("encode", "q2", mesh=mesh_file, fit_steps=0, resolution=64)
    proc.send("encode", "q3", mesh=mesh_file, fit_steps=0, resolution=64)
    proc.send("cancel", "c2", target="q2")
    seen = []
    assert proc.wait_for("q2", seen=seen)["event"] == "cancelled"
    proc.wait_for("q3", types=("result",), seen=seen)
    order = [e["id"] for e in seen if e["event"] == "result" and e["id"] in ("q1", "q2", "q3")]
    assert order == ["q1", "q3"]
    # a cancelled job's id is free again
    proc.send("encode", "q2", mesh=mesh_file, fit_steps=0, resolution=64, preview=False)
    assert proc.wait_for("q2")["event"] == "result"


def test_cancel_running_job_is_prompt(backend, mesh_file):
    proc, _ = backend
    proc.send("encode", "long", mesh=mesh_file, fit_steps=1000, resolution=256)
    proc.wait_for("long", types=("progress",))
    t = time.monotonic()
    proc.send("cancel", "c-long", target="long")
    ev = proc.wait_for("long")
    assert ev["event"] == "cancelled"
    assert time.monotonic() - t < 2.0
    proc.send("cancel", "c-none", target="long")
    assert proc.wait_for("c-none")["code"] == "not_found"


@pytest.mark.parametrize("out", ["../escape", "/tmp/abs", "a/../../b", "~/x"])
def test_output_paths_cannot_escape_the_root(backend, mesh_file, out):
    proc, root = backend
    proc.send("encode", f"esc{out}", mesh=mesh_file, fit_steps=0, resolution=64, out=out)
    ev = proc.wait_for(f"esc{out}")
    assert ev["event"] == "error" and ev["code"] == "path_outside_root"
    assert not os.path.exists(os.path.join(os.path.dirname(root), "escape"))


def test_bad_inputs_and_missing_models(backend, tmp_path):
    proc, _ = backend
    corrupt = tmp_path / "bad.glb"
    corrupt.write_bytes(os.urandom(512))
    cases = {
        "m1": ("encode", {"mesh": str(tmp_path / "missing.obj")}, "not_found"),
        "m2": ("encode", {"mesh": str(corrupt)}, "bad_input"),
        "m3": ("generate", {"mode": "images", "front": str(corrupt)}, "bad_input"),
        "m4": ("edit", {"asset": str(corrupt), "instruction": "make it blue"}, "bad_input"),
        "m5": ("edit", {"mesh": str(tmp_path / "missing.obj"), "instruction": "make it blue"}, "not_found"),
    }
    for rid, (op, fields, _) in cases.items():
        proc.send(op, rid, **fields)
    for rid, (_, _, code) in cases.items():
        ev = proc.wait_for(rid)
        assert ev["event"] == "error" and ev["code"] == code, ev
        assert "Traceback" not in ev["message"]


def _fuzz_lines(n: int, rng: random.Random) -> list[bytes]:
    valid = {"op": "generate", "id": "f", "prompt": "a chair", "seed": 1}
    lines = []
    for i in range(n):
        kind = i % 10
        if kind == 0:
            lines.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))).replace(b"\n", b"x"))
        elif kind == 1:
            lines.append(json.dumps(valid)[: rng.randint(1, 40)].encode())
        elif kind == 2:
            lines.append(json.dumps({**valid, "id": f"f{i}", "seed": rng.choice(["x", -5, 1.5, [1], 2**40])}).encode()
                         if i % 20 else b"{}")
        elif kind == 3:
            lines.append(json.dumps({"op": rng.choice(["", "GENERATE", "rm -rf", 3, None]), "id": f"f{i}"}).encode())
        elif kind == 4:
            lines.append(json.dumps([valid]).encode())
        elif kind == 5:
            lines.append(json.dumps({"op": "edit", "id": f"f{i}", "instruction": rng.choice([3, "", None])}).encode())
        elif kind == 6:
            lines.append(b'{"op": "generate", "id": "' + b"\xc3\x28" * 5 + b'"}')
        elif kind == 7:
            lines.append(json.dumps({"op": "generate", "id": f"f{i}", "prompt": "x", "resolution": rng.choice([0, 1e308, "128", 127])}).encode())
        elif kind == 8:
            lines.append(b"[" * 5000 + b"]" * 5000)
        else:
            lines.append(json.dumps({"op": "cancel", "id": f"f{i}"}).encode())
    return lines


def test_fuzz_every_bad_line_gets_an_error_and_the_backend_lives(tmp_path):
    proc = BackendProcess(str(tmp_path))
    try:
        rng = random.Random(0)
        lines = _fuzz_lines(1200, rng)
        proc.send_raw(b"".join(line + b"\n" for line in lines))
        huge = b'{"op": "hello", "id": "' + b"y" * (2 << 20) + b'"}\n'
        proc.send_raw(huge)
        errors = 0
        for _ in range(len(lines) + 1):
            ev = proc.next_event(timeout=60)
            assert ev["event"] == "error" and ev["code"] in ERROR_CODES, ev
            errors += 1
        assert errors == len(lines) + 1
        proc.send("hello", "alive")
        assert proc.wait_for("alive", timeout=60)["event"] == "result"
        assert proc.proc.poll() is None
    finally:
        proc.close()


def test_stdin_eof_exits_promptly(tmp_path, mesh_file):
    proc = BackendProcess(str(tmp_path))
    proc.send("hello", "h")
    proc.wait_for("h", timeout=60)
    proc.send("encode", "busy", mesh=mesh_file, fit_steps=1000, resolution=256)
    proc.wait_for("busy", types=("progress",))
    t = time.monotonic()
    proc.proc.stdin.close()
    proc.proc.wait(timeout=15)
    assert time.monotonic() - t < 10 and proc.proc.returncode == 0


def test_shutdown_answers_and_exits(tmp_path):
    proc = BackendProcess(str(tmp_path))
    proc.send("shutdown", "bye")
    assert proc.wait_for("bye", timeout=60)["event"] == "result"
    assert proc.proc.wait(timeout=15) == 0


def test_stdout_carries_only_protocol_lines(backend):
    proc, _ = backend
    proc.send("hello", "h-last")
    proc.wait_for("h-last")
    for raw in proc.raw_lines:
        assert json.loads(raw)["event"] in ("accepted", "progress", "result", "error", "cancelled")


def test_queued_text_jobs_share_a_batch_and_match_single_runs(backend):
    proc, _ = backend
    jobs = {"t0": ("a red chair", 1), "t1": ("a blue car", 2), "t2": ("a green tree", 3)}
    for rid, (prompt, seed) in jobs.items():
        proc.send("generate", rid, prompt=prompt, seed=seed, resolution=64, preview=False)
    results = {rid: proc.wait_for(rid, timeout=300) for rid in jobs}
    assert all(r["event"] == "result" for r in results.values()), results
    # t1 and t2 wait behind t0, so at least two jobs are sampled together
    assert max(r["batch_size"] for r in results.values()) >= 2
    proc.send("generate", "t2-alone", prompt="a green tree", seed=3, resolution=64, preview=False)
    alone = proc.wait_for("t2-alone", timeout=300)
    assert alone["batch_size"] == 1
    batched_latent, meta = load_latent(results["t2"]["latent"])
    single_latent, _ = load_latent(alone["latent"])
    assert meta["prompt"] == "a green tree" and meta["seed"] == 3
    assert np.allclose(batched_latent.numpy(), single_latent.numpy(), atol=1e-4)


def test_a_bad_job_in_a_text_batch_fails_alone(backend):
    proc, _ = backend
    proc.send("generate", "lead", prompt="a red chair", seed=5, resolution=64, preview=False)
    proc.send("generate", "bad-out", prompt="a blue car", seed=6, resolution=64, preview=False, out="../x")
    proc.send("generate", "good", prompt="a green tree", seed=7, resolution=64, preview=False)
    final = {}
    while len(final) < 3:  # final events arrive in any order (the bad job fails before sampling)
        ev = proc.next_event(timeout=300)
        if ev["event"] in ("result", "error", "cancelled") and ev["id"] in ("lead", "bad-out", "good"):
            final[ev["id"]] = ev
    assert final["lead"]["event"] == "result" and final["good"]["event"] == "result"
    assert final["bad-out"]["event"] == "error" and final["bad-out"]["code"] == "path_outside_root"


def test_floaters_are_dropped_from_generated_assets_unless_asked_not_to(backend):
    from models.mesh import FLOATER_MIN_PART

    proc, _ = backend
    prompt = "a red chair with a tall back"
    for seed in range(4):  # each seed's own sample (candidates 1, not rebuilt): the clean-up is what is measured
        for rid, extra in ((f"fl-default-{seed}", {}), (f"fl-keep-{seed}", {"min_part": 0}),
                           (f"fl-one-{seed}", {"min_part": 1.0})):
            proc.send("generate", rid, prompt=prompt, seed=seed, resolution=64, preview=False, candidates=1,
                      rebuild=False, **extra)
    results = {}
    for seed in range(4):
        for kind in ("default", "keep", "one"):
            ev = proc.wait_for(f"fl-{kind}-{seed}", timeout=300)
            assert ev["event"] == "result", ev
            results[kind, seed] = ev
    assert all(r["samples_tried"] == 1 and r["sample_seed"] == seed and not r["rebuilt"]
               for (_, seed), r in results.items())
    assert load_latent(results["default", 0]["latent"])[1]["min_part"] == FLOATER_MIN_PART
    assert load_latent(results["keep", 0]["latent"])[1]["min_part"] == 0
    for seed in range(4):
        keep, one = results["keep", seed]["mesh"], results["one", seed]["mesh"]
        assert keep["removed_parts"] == 0
        assert (one["faces"] < keep["faces"]) == (one["removed_parts"] > 0)
    # this prompt's samples are not all in one piece, and only the largest part is kept with 1.0
    assert sum(results["one", s]["mesh"]["removed_parts"] for s in range(4)) > 0
    for seed in range(4):  # what is still in pieces after the default clean-up is said, and only that
        default = results["default", seed]
        pieces = [w for w in default["warnings"] if "separate pieces" in w]
        assert default["mesh"]["parts"] >= 1 and len(pieces) == (default["mesh"]["parts"] > 1)
        assert results["one", seed]["mesh"]["parts"] == 1 and results["keep", seed]["mesh"]["parts"] == 0


def test_text_results_name_the_sample_kept_of_the_candidates(backend):
    """A table's samples come apart at every seed: all four candidates are drawn, the one closest
    to one piece is kept and rebuilt whole, and the result and the latent's metadata say which
    (seed, guidance) and that it was rebuilt."""
    proc, _ = backend
    proc.send("generate", "cand-table", prompt="a wooden table", seed=0, resolution=64, preview=False)
    proc.send("generate", "cand-tree", prompt="a green tree", seed=0, resolution=64, preview=False)
    table, tree = proc.wait_for("cand-table", timeout=300), proc.wait_for("cand-tree", timeout=300)
    assert table["event"] == "result" and tree["event"] == "result", (table, tree)
    assert table["samples_tried"] == 4 and 1 <= table["sample_kept"] <= 4
    assert table["sample_guidance"] == (3.0 if table["sample_kept"] <= 2 else 1.5)
    assert (table["sample_seed"] == 0) == (table["sample_kept"] == 1)
    meta = load_latent(table["latent"])[1]
    assert meta["sample_seed"] == table["sample_seed"] and meta["candidates"] == 4
    assert table["rebuilt"] and meta["rebuilt"] and table["mesh"]["parts"] == 1
    assert not [w for w in table["warnings"] if "pieces" in w], table["warnings"]
    assert not tree["rebuilt"]
    # a sample already in one piece is the seed's own, and no other is drawn
    assert tree["samples_tried"] == 1 and tree["sample_kept"] == 1 and tree["sample_seed"] == 0
