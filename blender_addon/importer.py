"""Results into the scene, and scene meshes out to the backend.

A result's `mesh.kmesh` (flat float32/int32 arrays, read by the client with the standard
library) becomes a Blender mesh through `foreach_set`: no glTF importer, no numpy. Colours
go to a FLOAT_COLOR point attribute shown by a shared material (Color Attribute node ->
Principled BSDF base colour) in Material Preview and renders, and by Solid mode's
Attribute colour. Works from Blender 3.4 to 5.0.
"""
from __future__ import annotations

import json
import math
import os
import uuid
from array import array

import bpy
from mathutils import Matrix

GROUND = -0.85               # Kiln assets stand on z = -0.85 in their [-1, 1]^3 cube
COLOUR_ATTR = "Col"
MATERIAL_NAME = "Kiln Vertex Colour"
SHARP_ANGLE = math.radians(60.0)
PROP_PREFIX = "kiln_"
DEFAULT_FRAME = {"centre": [0.0, 0.0, 0.0], "scale": 1.0}  # generated assets: base at the object origin


class ImportProblem(Exception):
    pass


class DeferImport(Exception):
    """The target cannot take new geometry right now (it is in Edit Mode)."""


# ---------------------------------------------------------------- arrays -> mesh


def _loop_total_writable() -> bool:
    prop = bpy.types.MeshPolygon.bl_rna.properties.get("loop_total")
    return prop is not None and not prop.is_readonly  # read-only (derived from loop_start) since 4.0


def frame_matrix(frame: dict | None) -> Matrix:
    """Kiln's cube -> the object's local frame: v -> (v - (0, 0, GROUND)) / scale + centre."""
    frame = frame or DEFAULT_FRAME
    return (Matrix.Translation(frame["centre"]) @ Matrix.Scale(1.0 / float(frame["scale"]), 4)
            @ Matrix.Translation((0.0, 0.0, -GROUND)))


class MeshBuild:
    """A result's mesh, built in stages so that the UI's timer can spread the work over a
    few ticks (each a fraction of the whole; the interface redraws in between).

    The mesh under construction is an orphan datablock found by name and checked by a token
    on every step: if an undo in between took it away or brought back an older copy, the
    build starts again instead of touching stale data."""

    STAGES = 4

    def __init__(self, name: str, arrays: dict, transform: Matrix | None = None):
        self.name, self.arrays, self.transform = name, arrays, transform
        self.stage = 0
        self.mesh_name = ""
        self.token = uuid.uuid4().hex

    @property
    def done(self) -> bool:
        return self.stage >= self.STAGES

    def _current(self):
        mesh = bpy.data.meshes.get(self.mesh_name) if self.mesh_name else None
        if mesh is not None and mesh.get("kiln_build") == self.token:
            if mesh.get("kiln_build_stage") == self.stage:
                return mesh
            if mesh.users == 0:  # an older copy an undo brought back
                bpy.data.meshes.remove(mesh)
        self.stage = 0  # lost or rolled back by an undo: start over
        return None

    def step(self) -> bool:
        """Do the next stage; True when the mesh is complete (then `mesh` is it)."""
        a = self.arrays
        nv, nf = a["n_vertices"], a["n_faces"]
        mesh = self._current()
        if self.stage == 0:
            mesh = bpy.data.meshes.new(self.name)
            self.mesh_name = mesh.name
            mesh["kiln_build"] = self.token
            mesh.vertices.add(nv)
            mesh.vertices.foreach_set("co", a["vertices"])
            mesh.loops.add(3 * nf)
            mesh.loops.foreach_set("vertex_index", a["faces"])
        elif self.stage == 1:
            mesh.polygons.add(nf)
            mesh.polygons.foreach_set("loop_start", array("i", range(0, 3 * nf, 3)))
            if _loop_total_writable():
                mesh.polygons.foreach_set("loop_total", array("i", [3]) * nf)
            if self.transform is not None:
                mesh.transform(self.transform)
        elif self.stage == 2:
            mesh.update(calc_edges=True)
        else:
            if a.get("colours") is not None:
                set_point_colours(mesh, a["colours"])
            _shade_smooth(mesh, nf)
            # Indices are range-checked when the file is read; validate() (as slow as all the
            # rest) only runs when a triangle repeats a vertex, or when nobody counted those.
            if a.get("degenerate", 1) and mesh.validate(verbose=False):
                print(f"Kiln: mesh {mesh.name!r} needed cleaning after import")
        self.stage += 1
        mesh["kiln_build_stage"] = self.stage
        if self.done:
            del mesh["kiln_build"], mesh["kiln_build_stage"]
            self.mesh = mesh
        return self.done

    def run(self):
        while not self.step():
            pass
        return self.mesh


def build_mesh(name: str, arrays: dict, transform: Matrix | None = None):
    """A complete mesh from the arrays (triangles, point colours, smooth shading) in one go."""
    return MeshBuild(name, arrays, transform).run()


def set_point_colours(mesh, rgba) -> None:
    attrs = mesh.color_attributes
    old = attrs.get(COLOUR_ATTR)
    if old is not None:
        attrs.remove(old)
    attr = attrs.new(COLOUR_ATTR, "FLOAT_COLOR", "POINT")
    attr.data.foreach_set("color", rgba)
    for name in ("active_color", "render_color"):  # which of these exist depends on the version
        try:
            setattr(attrs, name, attr)
        except (AttributeError, TypeError):
            pass
    for name in ("active_color_name", "default_color_name"):
        if hasattr(attrs, name):
            try:
                setattr(attrs, name, attr.name)
            except (AttributeError, TypeError):
                pass


def _shade_smooth(mesh, nf: int) -> None:
    if hasattr(mesh, "shade_smooth"):                      # 4.1+
        mesh.shade_smooth()
        if hasattr(mesh, "set_sharp_from_angle"):
            mesh.set_sharp_from_angle(angle=SHARP_ANGLE)   # keep real creases crisp
    else:                                                  # 3.4 - 4.0
        mesh.polygons.foreach_set("use_smooth", [True] * nf)
        if hasattr(mesh, "use_auto_smooth"):
            mesh.use_auto_smooth = True
            mesh.auto_smooth_angle = SHARP_ANGLE


def kiln_material():
    """The shared vertex-colour material (created once per .blend)."""
    for mat in bpy.data.materials:
        if mat.get("kiln_material") and mat.node_tree is not None:
            return mat
    mat = bpy.data.materials.new(MATERIAL_NAME)
    mat["kiln_material"] = 1
    if mat.node_tree is None:
        mat.use_nodes = True
    nt = mat.node_tree
    bsdf = next((n for n in nt.nodes if n.type == "BSDF_PRINCIPLED"), None)
    if bsdf is None:
        bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
        out = next((n for n in nt.nodes if n.type == "OUTPUT_MATERIAL"), None)
        out = out or nt.nodes.new("ShaderNodeOutputMaterial")
        nt.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    col = nt.nodes.new("ShaderNodeVertexColor")
    col.layer_name = COLOUR_ATTR
    col.location = (bsdf.location.x - 300, bsdf.location.y)
    nt.links.new(col.outputs["Color"], bsdf.inputs["Base Color"])
    if "Roughness" in bsdf.inputs:
        bsdf.inputs["Roughness"].default_value = 0.8
    mat.diffuse_color = (0.8, 0.8, 0.8, 1.0)
    mat.roughness = 0.8
    return mat


# ---------------------------------------------------------------- objects


def name_from_prompt(prompt: str, fallback: str = "Kiln Asset") -> str:
    words = [w for w in prompt.replace("\n", " ").split() if w.lower() not in ("a", "an", "the")]
    name = " ".join(words)[:48].strip(" ,.;:")
    return (name[:1].upper() + name[1:]) if name else fallback


def find_object(uid: str):
    if not uid:
        return None
    for obj in bpy.data.objects:
        if obj.get("kiln_uid") == uid:
            return obj
    return None


def ensure_uid(obj) -> str:
    uid = obj.get("kiln_uid")
    if not uid:
        uid = obj["kiln_uid"] = uuid.uuid4().hex
    return uid


def is_kiln_object(obj) -> bool:
    return obj is not None and bool(obj.get("kiln_latent") or obj.get("kiln_prompt"))


def create_object(name: str, arrays: dict | None, transform: Matrix | None, collection, location, view_layer=None,
                  mesh=None):
    """A new object with the result's mesh (`mesh` when already built, else from `arrays`)."""
    mesh = mesh if mesh is not None else build_mesh(name, arrays, transform)
    mesh.materials.append(kiln_material())
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    obj.location = location
    ensure_uid(obj)
    if view_layer is not None:
        try:  # (view_layer.objects may not list the new object yet; selecting it works)
            for other in view_layer.objects:
                if other.select_get(view_layer=view_layer):
                    other.select_set(False, view_layer=view_layer)
            obj.select_set(True, view_layer=view_layer)
            view_layer.objects.active = obj
        except (RuntimeError, ValueError):
            pass  # the collection is excluded from this view layer
    return obj


def check_replaceable(obj) -> None:
    if obj.type != "MESH":
        raise ImportProblem(f"{obj.name} is not a mesh object")
    if obj.mode == "EDIT":
        raise DeferImport(f"{obj.name} is in Edit Mode; the result is applied when you leave it")


def replace_mesh(obj, arrays: dict | None, transform: Matrix | None, mesh=None) -> None:
    """New geometry for `obj`, in place: the same object with its name, transform, parent,
    modifiers, materials and mesh name; the new mesh data take the old one's place (other
    objects that shared the old mesh keep it)."""
    check_replaceable(obj)
    old = obj.data
    new = mesh if mesh is not None else build_mesh(old.name, arrays, transform)
    name = old.name
    for k in old.keys():  # the mesh's own custom properties travel along
        if k not in new.keys():
            new[k] = old[k]
    if any(m is not None and m.get("kiln_material") for m in old.materials):
        for m in old.materials:
            new.materials.append(m)
    else:
        new.materials.append(kiln_material())
    obj.data = new
    if old.users == 0:
        bpy.data.meshes.remove(old)
        new.name = name
    # else the old mesh lives on in other objects and keeps its name; the new one is "name.001"
    # (not renamed: Blender 3.4 would hand the old mesh the suffix instead)


def has_same_mesh(mesh, arrays: dict) -> bool:
    """Whether a result is this mesh's own geometry: the same vertices in the same order (to float
    precision of the backend's normalisation round trip) and the same triangles. A recolour of a
    user's mesh comes back so: only its colours are new."""
    nv, nf = len(mesh.vertices), arrays["n_faces"]
    if arrays["n_vertices"] != nv or arrays.get("colours") is None:
        return False
    mesh.calc_loop_triangles()
    if len(mesh.loop_triangles) != nf:
        return False
    tri = array("i", [0]) * (3 * nf)
    mesh.loop_triangles.foreach_get("vertices", tri)
    if tri != array("i", arrays["faces"]):
        return False
    co = array("f", [0.0]) * (3 * nv)
    mesh.vertices.foreach_get("co", co)
    tol = 1e-4 * max(1.0, max(co) - min(co))
    return all(abs(a - b) <= tol for a, b in zip(co, arrays["vertices"]))


def paint_in_place(obj, arrays: dict) -> None:
    """A result that is the object's own mesh recoloured: its colours are written onto the mesh,
    which keeps everything else it carries (UVs, vertex groups, shape keys, seams, creases,
    custom normals). Shown by the Kiln material, as a replaced mesh is; a mesh other objects
    share is copied first, so they keep their colours."""
    check_replaceable(obj)
    if obj.data.users > 1:
        obj.data = obj.data.copy()
    mesh = obj.data
    set_point_colours(mesh, arrays["colours"])
    if not any(m is not None and m.get("kiln_material") for m in mesh.materials):
        mesh.materials.clear()
        mesh.materials.append(kiln_material())


def store_metadata(obj, job, result: dict, meta: dict, frame: dict) -> None:
    """Job metadata as custom properties (kept in the .blend): what Edit and Regenerate need."""
    req = job.request
    p = {
        "op": job.op, "job": job.id, "latent": result.get("latent") or "", "glb": result.get("glb") or "",
        "mesh_file": result.get("mesh_file") or "", "dir": result.get("dir") or "",
        "preview": result.get("preview") or "", "model": meta.get("model") or "",
        "backend": meta.get("backend") or "", "resolution": int(req.get("resolution") or 128),
        "frame": json.dumps(frame),
    }
    if job.op == "generate":
        p.update(prompt=req.get("prompt") or "", seed=int(req.get("seed") or 0), mode=req.get("mode") or "text",
                 front=req.get("front") or "", back=req.get("back") or "",
                 refine_steps=int(meta.get("refine_steps") or 0))
        if result.get("sample_seed") is not None:  # text: the seed of the sample kept (models/text/candidates.py)
            p.update(sample_seed=int(result["sample_seed"]), sample_kept=int(result.get("sample_kept") or 1),
                     samples_tried=int(result.get("samples_tried") or 1), rebuilt=int(bool(result.get("rebuilt"))))
        if result.get("outline_iou"):  # images: how well the result fits the worst-matched view's outline
            p["outline_iou"] = float(min(result["outline_iou"].values()))
    elif job.op == "edit":
        p.update(instruction=req.get("instruction") or "", strength=float(req.get("strength", 1.0)),
                 edit_seed=int(req.get("seed") or 0), edit_count=int(obj.get("kiln_edit_count", 0)) + 1)
        if req.get("mesh"):
            p["source_mesh"] = meta.get("source_mesh") or req["mesh"]
    elif job.op == "encode":
        p.update(source_mesh=meta.get("source_mesh") or req.get("mesh") or "",
                 fit_iou=float(result.get("fit_iou") or 0.0))
    for k, v in p.items():
        obj[PROP_PREFIX + k] = v
    history = _history(obj)
    entry = {"op": job.op, "job": job.id}
    entry.update({k: req[k] for k in ("prompt", "instruction", "seed", "strength", "resolution")
                  if req.get(k) is not None})
    obj["kiln_history"] = json.dumps((history + [entry])[-50:])


def _history(obj) -> list:
    try:
        return list(json.loads(obj.get("kiln_history", "[]")))
    except ValueError:
        return []


def object_frame(obj) -> dict:
    try:
        frame = json.loads(obj.get("kiln_frame", ""))
        if isinstance(frame, dict) and float(frame["scale"]) > 0 and len(frame["centre"]) == 3:
            return {"centre": [float(c) for c in frame["centre"]], "scale": float(frame["scale"])}
    except (ValueError, KeyError, TypeError):
        pass
    return dict(DEFAULT_FRAME)


def result_frame(job, meta: dict, obj=None) -> tuple[Matrix | None, dict]:
    """-> (transform for the result's vertices, the frame to store on the object).

    A latent that descends from a mesh file carries that mesh's normalisation, and the
    backend writes its meshes back in the mesh's own frame and scale (encode, and edits of
    a mesh or of such a latent): no transform, the normalisation is remembered. Other
    results (generated assets and their edits) are in Kiln's cube and are moved into the
    object's frame: by default lifted so the asset stands on the object's origin."""
    norm = meta.get("normalisation") or {}
    if norm.get("scale") and len(norm.get("centre", ())) == 3:
        return None, {"centre": [float(c) for c in norm["centre"]], "scale": float(norm["scale"])}
    if job.request.get("mesh"):
        return None, dict(DEFAULT_FRAME)
    frame = object_frame(obj) if obj is not None else dict(DEFAULT_FRAME)
    return frame_matrix(frame), frame


# ---------------------------------------------------------------- scene mesh -> file


def _linear_to_srgb(c: float) -> float:
    c = 0.0 if c < 0.0 else (1.0 if c > 1.0 else c)
    return c * 12.92 if c <= 0.0031308 else 1.055 * c ** (1.0 / 2.4) - 0.055


def _material_colour(mat) -> tuple:
    if mat is None:
        return (0.8, 0.8, 0.8)
    nt = mat.node_tree if getattr(mat, "use_nodes", True) else None
    if nt is not None:
        for n in nt.nodes:
            if n.type == "BSDF_PRINCIPLED" and not n.inputs["Base Color"].is_linked:
                return tuple(n.inputs["Base Color"].default_value[:3])
    return tuple(mat.diffuse_color[:3])


def vertex_colours_srgb(mesh, tri) -> list | None:
    """Per-vertex sRGB colours of a mesh: its active colour attribute, else its materials'
    base colours; None when it has neither."""
    nv = len(mesh.vertices)
    attrs = getattr(mesh, "color_attributes", None)
    attr = None
    if attrs is not None and len(attrs):
        attr = getattr(attrs, "active_color", None) or attrs[0]
    lin = None
    if attr is not None and attr.domain in ("POINT", "CORNER"):
        buf = array("f", [0.0]) * (4 * len(attr.data))
        attr.data.foreach_get("color", buf)
        if attr.domain == "POINT":
            lin = [buf[4 * i:4 * i + 3] for i in range(nv)]
        else:
            vidx = array("i", [0]) * len(mesh.loops)
            mesh.loops.foreach_get("vertex_index", vidx)
            lin = [None] * nv
            for li, vi in enumerate(vidx):
                lin[vi] = buf[4 * li:4 * li + 3]
            lin = [c if c is not None else (0.5, 0.5, 0.5) for c in lin]
    if lin is not None:
        return [tuple(_linear_to_srgb(x) for x in c) for c in lin]
    mats = [_material_colour(m) for m in mesh.materials]
    if not mats:
        return None
    srgb_mats = [tuple(_linear_to_srgb(x) for x in c) for c in mats]
    mat_idx = array("i", [0]) * len(mesh.loop_triangles)
    mesh.loop_triangles.foreach_get("material_index", mat_idx)
    out = [(0.8, 0.8, 0.8)] * nv
    for t, m in enumerate(mat_idx):
        c = srgb_mats[m] if 0 <= m < len(srgb_mats) else (0.8, 0.8, 0.8)
        out[tri[3 * t]] = out[tri[3 * t + 1]] = out[tri[3 * t + 2]] = c
    return out


def export_obj(obj, path: str) -> dict:
    """The object's mesh (its own data, local frame, without modifiers: the result replaces
    that data and the modifiers stay on top) as a triangulated OBJ with vertex colours."""
    mesh = obj.data
    if obj.mode == "EDIT":
        obj.update_from_editmode()
    mesh.calc_loop_triangles()
    nv, nt = len(mesh.vertices), len(mesh.loop_triangles)
    if nv < 4 or nt < 4:
        raise ImportProblem(f"{obj.name} has too little geometry to edit ({nv} vertices, {nt} triangles)")
    co = array("f", [0.0]) * (3 * nv)
    mesh.vertices.foreach_get("co", co)
    tri = array("i", [0]) * (3 * nt)
    mesh.loop_triangles.foreach_get("vertices", tri)
    colours = vertex_colours_srgb(mesh, tri)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lines = [f"# Kiln: {obj.name} ({nv} vertices, {nt} triangles), local frame, +Z up"]
    if colours is None:
        lines += ["v %.6f %.6f %.6f" % (co[3 * i], co[3 * i + 1], co[3 * i + 2]) for i in range(nv)]
    else:
        lines += ["v %.6f %.6f %.6f %.4f %.4f %.4f" % (co[3 * i], co[3 * i + 1], co[3 * i + 2], *colours[i])
                  for i in range(nv)]
    lines += ["f %d %d %d" % (tri[3 * t] + 1, tri[3 * t + 1] + 1, tri[3 * t + 2] + 1) for t in range(nt)]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return {"vertices": nv, "triangles": nt, "colours": colours is not None}
