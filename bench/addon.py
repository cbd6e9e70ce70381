"""Blender add-on figures, in real Blender (the `bpy` 5.0.1 module in `.venv-bpy/`):

1. import time of a 50k-face result: mesh.kmesh read (done on the client's reader thread)
   and the mesh + material + object build (the main-thread part) with `foreach_set`;
2. the durations of the `bpy.app.timers` callback while jobs run: the add-on runs in its
   UI (non-blocking) mode and the callback is called every 10 ms, as Blender's timer
   would; each tick drains events, and builds one stage of a finished result's mesh
   (MeshBuild.STAGES per result) when there is one.

    .venv-bpy/bin/python bench/addon.py [--jobs 4] [--resolution 128]

Needs the backend venv (`.venv/`, made by scripts/setup.sh). Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from array import array

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests", "blender"))

from bench.common import report  # noqa: E402


def torus_kmesh(path: str, rings: int = 125, segments: int = 200) -> tuple[int, int]:
    """A closed, coloured torus with exactly 2 * rings * segments triangles."""
    from backend.protocol import write_kmesh

    v, c, f = array("f"), array("f"), array("i")
    for i in range(rings):
        a = 2 * math.pi * i / rings
        for j in range(segments):
            b = 2 * math.pi * j / segments
            r = 0.7 + 0.25 * math.cos(b)
            v.extend((r * math.cos(a), r * math.sin(a), 0.25 * math.sin(b)))
            c.extend((0.5 + 0.5 * math.cos(a), 0.3, 0.5 + 0.5 * math.sin(b), 1.0))
    for i in range(rings):
        for j in range(segments):
            p, q = i * segments + j, ((i + 1) % rings) * segments + j
            p1, q1 = i * segments + (j + 1) % segments, ((i + 1) % rings) * segments + (j + 1) % segments
            f.extend((p, q, q1, p, q1, p1))
    write_kmesh(path, v.tobytes(), f.tobytes(), c.tobytes())
    return len(v) // 3, len(f) // 3


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    import bpy

    import kiln_harness

    kiln = kiln_harness.load_addon()
    out = {"blender": bpy.app.version_string}
    tmp = tempfile.mkdtemp(prefix="kiln-bench-")

    # 1. import of a 50k-face result
    path = os.path.join(tmp, "mesh.kmesh")
    nv, nf = torus_kmesh(path)
    read, build = [], []
    for _ in range(args.repeat + 1):
        t = time.perf_counter()
        arrays = kiln.client.read_mesh_file(path)
        t1 = time.perf_counter()
        obj = kiln.importer.create_object("bench", arrays, kiln.importer.frame_matrix(None),
                                          bpy.context.scene.collection, (0, 0, 0), bpy.context.view_layer)
        t2 = time.perf_counter()
        read.append(t1 - t)
        build.append(t2 - t1)
        assert len(obj.data.polygons) == nf and len(obj.data.color_attributes) == 1
        mesh = obj.data
        bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(mesh)
    read, build = read[1:], build[1:]  # first run warms caches
    stages = []  # the UI spreads a build over timer ticks, one stage each
    for _ in range(args.repeat):
        b = kiln.importer.MeshBuild("bench", arrays, kiln.importer.frame_matrix(None))
        while not b.done:
            t = time.perf_counter()
            b.step()
            stages.append(time.perf_counter() - t)
        bpy.data.meshes.remove(b.mesh)
    out.update({"import_faces": nf, "import_vertices": nv,
                "import_read_kmesh_s (reader thread)": round(statistics.median(read), 4),
                "import_build_s median (main thread)": round(statistics.median(build), 4),
                "import_build_s max": round(max(build), 4),
                "import_total_s median": round(statistics.median([a + b for a, b in zip(read, build)]), 4),
                "import_longest_stage_s (one UI tick)": round(max(stages), 4)})

    # 2. timer callbacks while jobs run (UI mode, driven every 10 ms)
    m = kiln.tasks.manager
    m.synchronous = False
    kiln.preferences._FALLBACK.output_dir = os.path.join(tmp, "out")
    kiln.api.start_backend()
    m.ticks.clear()
    prompts = ["a red chair", "a blue car with four wheels", "a green tree", "a yellow mug",
               "a tall white lamp", "a wooden table", "a purple rocket", "an orange mushroom"]
    t0 = time.perf_counter()
    jobs = [kiln.api.submit_generate(prompts[i % len(prompts)], seed=i, resolution=args.resolution)
            for i in range(args.jobs)]
    while any(j.active for j in jobs):
        m.tick()
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    stats = m.tick_stats()
    failed = [j.message for j in jobs if j.state != "done"]
    faces = [len(bpy.data.objects[j.object_name].data.polygons) for j in jobs if j.object_name]
    out.update({"jobs": args.jobs, "jobs_failed": len(failed), "jobs_wall_s": round(wall, 2),
                "result_faces_mean": round(sum(faces) / max(1, len(faces))),
                "timer_drain_ticks": stats["drain"]["count"], "timer_drain_max_ms": stats["drain"]["max_ms"],
                "timer_drain_mean_ms": stats["drain"]["mean_ms"],
                "timer_import_ticks": stats["import"]["count"], "timer_import_max_ms": stats["import"]["max_ms"],
                "timer_import_mean_ms": stats["import"]["mean_ms"],
                "timer_tick_max_ms (drain + import)": stats["tick"]["max_ms"]})
    kiln.api.stop_backend()
    kiln_harness.unload_addon(kiln)
    report(out)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
