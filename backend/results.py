"""Where job results go: one folder per job under an output root, never outside it."""
from __future__ import annotations

import json
import os
import re
import time

import numpy as np

from .errors import JobError
from .protocol import write_kmesh

LATENT_KEY = "latent"
REFERENCE_KEY = "reference"
CUT_KEYS = ("cut{}.removed", "cut{}.kept")  # a removed part's surface samples and the rest's
LATENT_FORMAT = "kiln-latent/1"


class OutputRoot:
    def __init__(self, root: str):
        self.root = os.path.realpath(os.path.abspath(os.path.expanduser(root)))

    def job_dir(self, job_id: str, out: str | None = None) -> str:
        """The folder for a job: `out` (a relative sub-folder) or one named after the job id."""
        if out is not None:
            if os.path.isabs(out) or out.startswith("~") or any(p == ".." for p in re.split(r"[\\/]", out)):
                raise JobError("path_outside_root", f"output folder {out!r} must be a relative path inside the output root")
            name = out
        else:
            name = re.sub(r"[^A-Za-z0-9._-]", "_", job_id).strip("._") or "job"
        path = os.path.realpath(os.path.join(self.root, name))
        if os.path.commonpath([path, self.root]) != self.root or path == self.root:
            raise JobError("path_outside_root", f"output folder {out or name!r} resolves outside the output root")
        os.makedirs(path, exist_ok=True)
        return path


def save_latent(path: str, latent, meta: dict, reference=None, cuts=()) -> None:
    """latent (3, C, R, R) tensor + JSON metadata (model, version, prompt/mesh, seed, parameters).
    An edit also stores its `reference`: the latent its chain of edits started from, which the
    next edit is composited over (models.edit.composite), and the parts its chain removed
    (models.edit.removal.PartCut), which every later edit is shown without."""
    import torch
    from safetensors.torch import save_file

    tensors = {LATENT_KEY: _stored(latent)}
    if reference is not None:
        tensors[REFERENCE_KEY] = _stored(reference)
    for i, cut in enumerate(cuts):
        for key, points in zip(CUT_KEYS, (cut.removed, cut.kept)):
            tensors[key.format(i)] = torch.as_tensor(np.asarray(points, np.float32)).contiguous()
    if cuts:
        meta = {**meta, "cuts": [{"weight": float(c.weight)} for c in cuts]}
    info = {"format": LATENT_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta}
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata={"kiln": json.dumps(info)})
    os.replace(tmp, path)


def _stored(latent):
    # a copy: safetensors refuses tensors that share memory (an edit's latent may be its reference)
    tensor = latent.detach().to("cpu").float().clone().contiguous()
    return tensor[0] if tensor.ndim == 5 else tensor


def load_latent(path: str, expected_shape: tuple | None = None):
    """-> (latent (1, 3, C, R, R) tensor, metadata dict); clear errors for anything else."""
    latent, _, meta = load_latent_with_reference(path, expected_shape)
    return latent, meta


def load_latent_with_reference(path: str, expected_shape: tuple | None = None):
    """-> (latent, reference latent or None when the file has none, metadata dict)."""
    from safetensors import SafetensorError, safe_open

    if not os.path.isfile(path):
        raise JobError("not_found", f"latent file not found: {path}")
    try:
        with safe_open(path, framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("kiln", "{}"))
            stored = set(f.keys())
            if LATENT_KEY not in stored:
                raise JobError("bad_input", f"{os.path.basename(path)} holds no Kiln latent")
            latent = f.get_tensor(LATENT_KEY)
            reference = f.get_tensor(REFERENCE_KEY) if REFERENCE_KEY in stored else None
    except (SafetensorError, ValueError, OSError) as exc:
        raise JobError("bad_input", f"{os.path.basename(path)} is not a Kiln latent file: {exc}") from None
    for name, tensor in ((LATENT_KEY, latent), (REFERENCE_KEY, reference)):
        if tensor is None:
            continue
        if expected_shape is not None and tuple(tensor.shape) != tuple(expected_shape):
            raise JobError("bad_input", f"{name} has shape {tuple(tensor.shape)}, this model expects {tuple(expected_shape)}")
        if not bool(np.isfinite(tensor.numpy()).all()):
            raise JobError("bad_input", f"{name} contains non-finite values")
    return latent[None], None if reference is None else reference[None], meta


def load_cuts(path: str, meta: dict) -> list:
    """The removed parts a latent file's chain of edits shows cut out (none for files without)."""
    from safetensors import SafetensorError, safe_open

    from models.edit.removal import PartCut

    records = meta.get("cuts") or []
    if not isinstance(records, list):
        raise JobError("bad_input", f"{os.path.basename(path)}: its record of removed parts is not a list")
    cuts = []
    try:
        with safe_open(path, framework="np") as f:
            stored = set(f.keys())
            for i, record in enumerate(records):
                keys = [k.format(i) for k in CUT_KEYS]
                if not set(keys) <= stored:
                    raise JobError("bad_input", f"{os.path.basename(path)} lacks the points of removed part {i}")
                removed, kept = (f.get_tensor(k) for k in keys)
                if removed.ndim != 2 or removed.shape[1:] != (3,) or kept.ndim != 2 or kept.shape[1:] != (3,) \
                        or not len(removed) or not len(kept) \
                        or not (np.isfinite(removed).all() and np.isfinite(kept).all()):
                    raise JobError("bad_input", f"{os.path.basename(path)}: removed part {i} is not a set of 3-D points")
                cuts.append(PartCut(removed, kept, float(record.get("weight", 1.0))))
    except (SafetensorError, OSError, ValueError, TypeError, AttributeError) as exc:
        raise JobError("bad_input", f"{os.path.basename(path)}: cannot read its removed parts: {exc}") from None
    return cuts


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0).astype(np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def save_mesh_arrays(path: str, mesh) -> None:
    """The mesh as `mesh.kmesh` (see protocol.read_kmesh): float32 positions, int32 triangles
    and scene-linear float32 RGBA colours, ready for Blender's foreach_set without numpy."""
    v = np.ascontiguousarray(mesh.vertices, dtype="<f4").reshape(-1, 3)
    f = np.ascontiguousarray(mesh.faces, dtype="<i4").reshape(-1, 3)
    rgba = None
    if mesh.colors is not None:
        rgba = np.ones((len(v), 4), dtype="<f4")
        rgba[:, :3] = srgb_to_linear(np.asarray(mesh.colors).reshape(-1, 3))
        rgba = rgba.tobytes()
    write_kmesh(path, v.tobytes(), f.tobytes(), rgba)
