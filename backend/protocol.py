"""Kiln's wire protocol: JSON lines between the Blender add-on (or any client) and the backend.

Standard library only: the backend and the Blender add-on both import this module.

Every request is one JSON object on one line with an `op` and a client-chosen `id`;
every event the backend writes repeats that `id`. See README "Wire protocol".
"""
from __future__ import annotations

import json
import math
import os
import struct
import sys
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 1 << 20  # longer lines are answered with bad_request and skipped

# The fixed list of error codes. Clients switch on `code`; `message` is for people.
ERROR_CODES: dict[str, str] = {
    "bad_request": "the line is not a valid request: not JSON, unknown op, missing or mistyped fields",
    "bad_input": "a file the request names cannot be used (corrupt, empty, wrong format, degenerate)",
    "not_found": "a file the request names does not exist",
    "path_outside_root": "an output path would escape the backend's output root",
    "model_unavailable": "the requested model is not installed or not trained yet",
    "empty_mesh": "the model produced no surface to mesh",
    "cancelled": "the job was cancelled",
    "out_of_memory": "the device ran out of memory",
    "shutting_down": "the backend is shutting down and takes no new jobs",
    "internal": "an unexpected failure inside the backend (see its log)",
}

REQUEST_OPS = ("hello", "generate", "edit", "encode", "cancel", "shutdown")
JOB_OPS = ("generate", "edit", "encode")  # queued, answered by progress ... result | error | cancelled
EVENT_TYPES = ("accepted", "progress", "result", "error", "cancelled")
RESOLUTIONS = (64, 128, 256)
GENERATE_MODES = ("text", "images")


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, request_id: str | None = None):
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Field:
    type: type | tuple
    required: bool = False
    default: Any = None
    choices: tuple = ()
    min: float | None = None
    max: float | None = None
    max_len: int = 4096


_ID = Field(str, required=True, max_len=128)
_SEED = Field(int, default=0, min=0, max=2**31 - 1)
_RES = Field(int, default=128, choices=RESOLUTIONS)
_OUT = Field(str, default=None, max_len=255)  # sub-folder name under the output root
_PREVIEW = Field(bool, default=True)
# drop disconnected parts smaller than this share of the largest (floaters); None: the op's default
_MIN_PART = Field((int, float), default=None, min=0.0, max=1.0)

SCHEMAS: dict[str, dict[str, Field]] = {
    "hello": {"id": _ID, "client": Field(str, default="", max_len=256)},
    "generate": {
        "id": _ID, "mode": Field(str, default="text", choices=GENERATE_MODES),
        "prompt": Field(str, default=None, max_len=2000), "front": Field(str, default=None),
        "back": Field(str, default=None), "seed": _SEED, "resolution": _RES,
        "model": Field(str, default=None, max_len=128), "steps": Field(int, default=None, min=1, max=64),
        "guidance": Field((int, float), default=None, min=0.0, max=20.0),
        # images: optimise the reconstruction against the image(s) (None: the pipeline's default steps)
        "refine": Field(bool, default=False), "refine_steps": Field(int, default=None, min=1, max=200),
        # text: samples tried, the first in one piece kept (None: the pipeline's default)
        "candidates": Field(int, default=None, min=1, max=16),
        # text: a sample still in pieces rebuilt whole by the image reconstructor (None: on)
        "rebuild": Field(bool, default=None),
        "out": _OUT, "preview": _PREVIEW, "min_part": _MIN_PART,
    },
    "edit": {
        "id": _ID, "asset": Field(str, default=None), "mesh": Field(str, default=None),
        "instruction": Field(str, required=True, max_len=2000),
        "strength": Field((int, float), default=1.0, min=0.0, max=1.0), "seed": _SEED, "resolution": _RES,
        "model": Field(str, default=None, max_len=128), "out": _OUT, "preview": _PREVIEW,
        # editing a mesh file fits a latent to it first (as `encode` does)
        "fit_steps": Field(int, default=60, min=0, max=1000), "up": Field(str, default=None, choices=("y", "z")),
        "steps": Field(int, default=None, min=1, max=64),
        "guidance": Field((int, float), default=None, min=0.0, max=20.0), "min_part": _MIN_PART,
    },
    "encode": {
        "id": _ID, "mesh": Field(str, required=True), "fit_steps": Field(int, default=60, min=0, max=1000),
        "up": Field(str, default=None, choices=("y", "z")), "seed": _SEED, "resolution": _RES, "out": _OUT,
        "preview": _PREVIEW,
    },
    "cancel": {"id": _ID, "target": Field(str, required=True, max_len=128)},
    "shutdown": {"id": _ID},
}


def _check(name: str, value: Any, spec: Field, rid: str | None) -> Any:
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    # bool is an int in Python; only accept it where bool is asked for
    if isinstance(value, bool) and bool not in types:
        raise ProtocolError("bad_request", f"field '{name}' must be {_type_name(types)}, got a boolean", rid)
    if not isinstance(value, types):
        raise ProtocolError("bad_request", f"field '{name}' must be {_type_name(types)}, got {type(value).__name__}", rid)
    if isinstance(value, float) and not math.isfinite(value):
        raise ProtocolError("bad_request", f"field '{name}' must be a finite number", rid)
    if isinstance(value, str):
        if len(value) > spec.max_len:
            raise ProtocolError("bad_request", f"field '{name}' is longer than {spec.max_len} characters", rid)
        if "\x00" in value:
            raise ProtocolError("bad_request", f"field '{name}' contains a NUL character", rid)
    if spec.choices and value not in spec.choices:
        raise ProtocolError("bad_request", f"field '{name}' must be one of {list(spec.choices)}, got {value!r}", rid)
    if spec.min is not None and value < spec.min or spec.max is not None and value > spec.max:
        raise ProtocolError("bad_request", f"field '{name}' must be in [{spec.min}, {spec.max}], got {value!r}", rid)
    return value


def _type_name(types: tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def parse_request(line: bytes | str) -> dict:
    """Decode and validate one request line; raises ProtocolError (with the id when one was readable)."""
    if isinstance(line, bytes):
        if len(line) > MAX_LINE_BYTES:
            raise ProtocolError("bad_request", f"line longer than {MAX_LINE_BYTES} bytes")
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("bad_request", "line is not valid UTF-8") from None
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_request", "line is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_request", "a request must be a JSON object")
    rid = obj.get("id") if isinstance(obj.get("id"), str) and len(obj["id"]) <= 128 else None
    op = obj.get("op")
    if op not in SCHEMAS:
        raise ProtocolError("bad_request", f"unknown op {op!r}; expected one of {list(REQUEST_OPS)}", rid)
    schema = SCHEMAS[op]
    unknown = set(obj) - set(schema) - {"op"}
    if unknown:
        raise ProtocolError("bad_request", f"unknown field(s) for '{op}': {sorted(unknown)}", rid)
    req = {"op": op}
    for name, spec in schema.items():
        if name not in obj or obj[name] is None:
            if spec.required:
                raise ProtocolError("bad_request", f"'{op}' needs field '{name}'", rid)
            req[name] = spec.default
        else:
            req[name] = _check(name, obj[name], spec, rid)
    _check_semantics(req, rid)
    return req


def _check_semantics(req: dict, rid: str | None) -> None:
    op = req["op"]
    if op == "generate":
        if req["mode"] == "text" and not (req["prompt"] or "").strip():
            raise ProtocolError("bad_request", "the prompt is empty: describe the asset, e.g. 'a red chair'", rid)
        if req["mode"] == "images" and not req["front"]:
            raise ProtocolError("bad_request", "image mode needs a 'front' image path", rid)
        if req["refine_steps"] is not None and not req["refine"]:
            raise ProtocolError("bad_request", "'refine_steps' needs 'refine': true", rid)
        if req["candidates"] is not None and req["mode"] != "text":
            raise ProtocolError("bad_request", "'candidates' is for text prompts: an image gives one reconstruction", rid)
        if req["rebuild"] is not None and req["mode"] != "text":
            raise ProtocolError("bad_request", "'rebuild' is for text prompts: an image is reconstructed already", rid)
    if op == "edit":
        if not req["instruction"].strip():
            raise ProtocolError("bad_request", "the instruction is empty: say what to change, e.g. 'make it blue'", rid)
        if bool(req["asset"]) == bool(req["mesh"]):
            raise ProtocolError("bad_request", "'edit' needs exactly one of 'asset' (a latent) or 'mesh' (a mesh file)", rid)


def request(op: str, id: str, **fields) -> str:
    """Client side: one request line (without the newline)."""
    return json.dumps({"op": op, "id": id, **{k: v for k, v in fields.items() if v is not None}})


def event(type_: str, id: str | None, **fields) -> str:
    assert type_ in EVENT_TYPES, type_
    return json.dumps({"event": type_, "id": id, **fields}, separators=(",", ":"), allow_nan=False)


def error_event(code: str, message: str, id: str | None = None, **extra) -> str:
    assert code in ERROR_CODES, code
    return event("error", id, code=code, message=message, **extra)


def parse_event(line: str) -> dict:
    """Client side: decode one event line (raises ValueError on anything else)."""
    obj = json.loads(line)
    if not isinstance(obj, dict) or obj.get("event") not in EVENT_TYPES:
        raise ValueError(f"not a Kiln event: {line[:200]!r}")
    return obj


# ---------------------------------------------------------------- mesh-array file
#
# Next to asset.glb every job writes `mesh.kmesh`: the mesh as flat arrays that a client
# without numpy (Blender's own Python) reads with the standard library and hands straight
# to `foreach_set`. Little-endian; a 32-byte header, then three arrays:
#
#   magic b"KMSH" | u32 version | u32 vertices V | u32 faces F | u32 flags | 12 reserved bytes
#   float32[V*3]  vertex positions in Kiln's frame (+Z up, front -Y; Blender's frame)
#   int32[F*3]    triangle vertex indices, counter-clockwise seen from outside
#   float32[V*4]  scene-linear RGBA vertex colours (only when flags & KMESH_HAS_COLOURS)

KMESH_MAGIC = b"KMSH"
KMESH_VERSION = 1
KMESH_HAS_COLOURS = 1
KMESH_HEADER = struct.Struct("<4sIIII12x")
MESH_FILE_NAME = "mesh.kmesh"


class MeshFileError(ValueError):
    code = "bad_input"


def kmesh_header(n_vertices: int, n_faces: int, has_colours: bool = True) -> bytes:
    return KMESH_HEADER.pack(KMESH_MAGIC, KMESH_VERSION, n_vertices, n_faces,
                             KMESH_HAS_COLOURS if has_colours else 0)


def write_kmesh(path: str, vertices: bytes, faces: bytes, colours: bytes | None = None) -> None:
    """Write raw little-endian buffers (float32 V*3, int32 F*3, float32 V*4) atomically."""
    nv, nf = len(vertices) // 12, len(faces) // 12
    if len(vertices) != nv * 12 or len(faces) != nf * 12 or (colours is not None and len(colours) != nv * 16):
        raise MeshFileError("kmesh buffers have inconsistent sizes")
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(kmesh_header(nv, nf, colours is not None))
        fh.write(vertices)
        fh.write(faces)
        if colours is not None:
            fh.write(colours)
    os.replace(tmp, path)


def read_kmesh(path: str) -> dict:
    """-> {"vertices": array('f') V*3, "faces": array('i') F*3, "colours": array('f') V*4 or None,
    "n_vertices", "n_faces"}. Checks sizes and index range; raises MeshFileError."""
    from array import array

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise MeshFileError(f"cannot read mesh file {path}: {exc}") from None
    if len(data) < KMESH_HEADER.size:
        raise MeshFileError(f"{path} is too short to be a Kiln mesh file")
    magic, version, nv, nf, flags = KMESH_HEADER.unpack_from(data, 0)
    if magic != KMESH_MAGIC or version != KMESH_VERSION:
        raise MeshFileError(f"{path} is not a Kiln mesh file (version {KMESH_VERSION})")
    has_col = bool(flags & KMESH_HAS_COLOURS)
    expected = KMESH_HEADER.size + nv * 12 + nf * 12 + (nv * 16 if has_col else 0)
    if len(data) != expected:
        raise MeshFileError(f"{path} holds {len(data)} bytes, its header promises {expected}")
    view, o = memoryview(data), KMESH_HEADER.size
    out = {"n_vertices": nv, "n_faces": nf, "colours": None}
    for key, code, count in (("vertices", "f", nv * 3), ("faces", "i", nf * 3), ("colours", "f", nv * 4)):
        if key == "colours" and not has_col:
            break
        arr = array(code)
        arr.frombytes(view[o:o + 4 * count])
        if sys.byteorder != "little":
            arr.byteswap()
        out[key] = arr
        o += 4 * count
    faces = out["faces"]
    if nf and (min(faces) < 0 or max(faces) >= nv):
        raise MeshFileError(f"{path} has face indices outside its {nv} vertices")
    if not math.isfinite(sum(out["vertices"])):  # a NaN or inf anywhere makes the sum non-finite
        raise MeshFileError(f"{path} has non-finite vertex positions")
    return out
