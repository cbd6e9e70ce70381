"""Headless batch: one Kiln asset per prompt line, a .blend with all of them, a preview
render of each and a manifest.

    blender -b -P examples/batch_generate.py -- --prompts prompts.txt --out out/batch
    blender -b -P examples/batch_generate.py -- --prompts prompts.txt --out out/batch \\
        --seed 0 --resolution 128 --engine CYCLES --size 256 --python .venv/bin/python

Writes out/batch/batch.blend (assets in a grid, one collection), out/batch/previews/NN_name.png
and out/batch/manifest.json (prompt, seed, object, result files, faces, seconds, error per line),
and the backend's results under out/batch/results/. A failed line is recorded and the batch
goes on; the exit code is 1 when any line failed.

The add-on is the one installed and enabled in Blender (legacy `kiln` or the extension
`bl_ext.<repo>.kiln`), else the checkout this script lives in. The backend interpreter is
--python, else $KILN_PYTHON, else the add-on's preference / the checkout's .venv.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import sys
import tempfile
import time

import bpy

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args() -> argparse.Namespace:
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    ap = argparse.ArgumentParser(prog="blender -b -P examples/batch_generate.py --",
                                 description="one Kiln asset per prompt line")
    ap.add_argument("--prompts", required=True, help="text file, one prompt per line ('#' comments)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first line; line i uses seed + i")
    ap.add_argument("--resolution", type=int, default=128, choices=(64, 128, 256))
    ap.add_argument("--engine", default="CYCLES", help="CYCLES (works headless), BLENDER_WORKBENCH or "
                    "BLENDER_EEVEE (these need a display or EGL), or NONE to skip rendering")
    ap.add_argument("--size", type=int, default=256, help="preview size in pixels")
    ap.add_argument("--samples", type=int, default=16, help="Cycles samples")
    ap.add_argument("--python", default="", help="backend interpreter (default: the add-on's)")
    ap.add_argument("--device", default="", choices=("", "auto", "cpu", "cuda"))
    return ap.parse_args(argv)


def load_kiln():
    """The Kiln add-on module: an installed one (enabled here if needed), else the checkout's."""
    import addon_utils

    for mod in addon_utils.modules():
        if mod.__name__ == "kiln" or mod.__name__.endswith(".kiln"):
            if mod.__name__ not in bpy.context.preferences.addons:
                addon_utils.enable(mod.__name__, default_set=False)
            return sys.modules[mod.__name__]
    src = os.path.join(os.path.dirname(HERE), "blender_addon")
    if not os.path.isfile(os.path.join(src, "__init__.py")):
        raise SystemExit("Kiln is not installed in this Blender and no checkout was found next to this script")
    tmp = tempfile.mkdtemp(prefix="kiln-addon-")
    os.symlink(src, os.path.join(tmp, "kiln"))
    sys.path.insert(0, tmp)
    kiln = importlib.import_module("kiln")
    kiln.register()
    return kiln


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "asset"


def setup_render(scene, engine: str, size: int, samples: int):
    scene.render.engine = engine
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = False
    scene.render.image_settings.file_format = "PNG"
    if engine == "CYCLES":
        scene.cycles.samples = samples
        scene.cycles.device = "CPU"
        if hasattr(scene.cycles, "use_denoising"):
            scene.cycles.use_denoising = False
        if hasattr(scene.cycles, "use_adaptive_sampling"):
            scene.cycles.use_adaptive_sampling = False
    elif engine == "BLENDER_WORKBENCH":
        scene.display.shading.light = "STUDIO"
        scene.display.shading.color_type = "VERTEX"
    world = scene.world or bpy.data.worlds.new("Kiln World")
    scene.world = world
    if world.node_tree is None:
        world.use_nodes = True
    bg = next((n for n in world.node_tree.nodes if n.type == "BACKGROUND"), None)
    if bg is not None:
        bg.inputs["Color"].default_value = (0.32, 0.34, 0.38, 1.0)
        bg.inputs["Strength"].default_value = 0.6
    cam = bpy.data.objects.new("Kiln Preview Camera", bpy.data.cameras.new("Kiln Preview Camera"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    sun = bpy.data.objects.new("Kiln Preview Sun", bpy.data.lights.new("Kiln Preview Sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(50), 0.0, math.radians(30))
    scene.collection.objects.link(sun)
    return cam


def frame_camera(cam, obj) -> None:
    """Three-quarter front view (the asset's front faces -Y) that fits the object."""
    from array import array

    from mathutils import Vector

    co = array("f", [0.0]) * (3 * len(obj.data.vertices))  # (bound_box is stale until the depsgraph runs)
    obj.data.vertices.foreach_get("co", co)
    lo_l = Vector((min(co[0::3]), min(co[1::3]), min(co[2::3])))
    hi_l = Vector((max(co[0::3]), max(co[1::3]), max(co[2::3])))
    corners = [Vector((x, y, z)) for x in (lo_l.x, hi_l.x) for y in (lo_l.y, hi_l.y) for z in (lo_l.z, hi_l.z)]
    pts = [obj.matrix_world @ c for c in corners]
    lo = Vector([min(p[i] for p in pts) for i in range(3)])
    hi = Vector([max(p[i] for p in pts) for i in range(3)])
    centre, radius = (lo + hi) / 2, max((hi - lo).length / 2, 0.1)
    direction = Vector((0.55, -1.0, 0.45)).normalized()
    cam.data.lens = 50
    distance = radius / math.sin(math.atan(18.0 / cam.data.lens)) * 1.1
    cam.location = centre + direction * distance
    cam.rotation_euler = (centre - cam.location).to_track_quat("-Z", "Y").to_euler()


def main() -> int:
    args = parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, "previews"), exist_ok=True)
    with open(args.prompts, encoding="utf-8") as fh:
        prompts = [ln.strip() for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise SystemExit(f"no prompts in {args.prompts}")

    kiln = load_kiln()
    kiln.api.configure(python=args.python or os.environ.get("KILN_PYTHON") or None,
                       output_dir=os.path.join(out, "results"), device=args.device or None)
    t0 = time.perf_counter()
    info = kiln.api.start_backend()
    print(f"kiln: backend ready on {info['device']} in {time.perf_counter() - t0:.1f} s", flush=True)

    scene = bpy.context.scene
    coll = bpy.data.collections.new("Kiln Batch")
    scene.collection.children.link(coll)
    engine = args.engine.upper()
    cam = setup_render(scene, engine, args.size, args.samples) if engine != "NONE" else None
    cols = max(1, math.ceil(math.sqrt(len(prompts))))
    rows = []
    hidden_before = {o: o.hide_render for o in scene.objects}
    for i, prompt in enumerate(prompts):
        row = {"line": i + 1, "prompt": prompt, "seed": args.seed + i}
        t = time.perf_counter()
        try:
            obj = kiln.api.generate(prompt, seed=args.seed + i, resolution=args.resolution,
                                    location=((i % cols) * 2.5, (i // cols) * 2.5, 0.0), collection=coll)
            row.update(object=obj.name, faces=len(obj.data.polygons), vertices=len(obj.data.vertices),
                       latent=obj["kiln_latent"], glb=obj["kiln_glb"], mesh_file=obj["kiln_mesh_file"],
                       generate_s=round(time.perf_counter() - t, 3))
            if cam is not None:
                for other in scene.objects:  # render this asset alone (not the start-up cube either)
                    if other.type not in ("CAMERA", "LIGHT"):
                        other.hide_render = other != obj
                bpy.context.view_layer.update()  # matrix_world of the new object
                frame_camera(cam, obj)
                scene.render.filepath = os.path.join(out, "previews", f"{i + 1:02d}_{slug(prompt)}.png")
                t = time.perf_counter()
                bpy.ops.render.render(write_still=True)
                row.update(preview=scene.render.filepath, render_s=round(time.perf_counter() - t, 3))
            print(f"kiln: [{i + 1}/{len(prompts)}] {prompt!r} -> {obj.name} ({row['faces']} faces)", flush=True)
        except Exception as exc:  # noqa: BLE001 - one bad line must not end the batch
            row["error"] = str(exc)
            print(f"kiln: [{i + 1}/{len(prompts)}] {prompt!r} FAILED: {row['error']}", flush=True)
        rows.append(row)
    for obj, hidden in hidden_before.items():
        obj.hide_render = hidden
    blend = os.path.join(out, "batch.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    kiln.api.stop_backend()
    failed = sum(1 for r in rows if "error" in r)
    manifest = {"blender": bpy.app.version_string, "blend": blend, "engine": engine, "resolution": args.resolution,
                "total_s": round(time.perf_counter() - t0, 2), "failed": failed, "assets": rows}
    with open(os.path.join(out, "manifest.json"), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1)
    print(f"kiln: {len(rows) - failed}/{len(rows)} assets in {manifest['total_s']} s -> {blend}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    code = main()
    if bpy.app.background:
        sys.exit(code)
