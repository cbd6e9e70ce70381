"""mesh.kmesh: the mesh-array file the Blender add-on reads with the standard library."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import trimesh

from backend.protocol import KMESH_HEADER, MeshFileError, read_kmesh, write_kmesh
from backend.results import save_mesh_arrays, srgb_to_linear
from models.mesh import Mesh

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mesh(n=40):
    box = trimesh.creation.icosphere(subdivisions=2)
    rng = np.random.default_rng(0)
    return Mesh(box.vertices.astype(np.float32), box.faces.astype(np.int32),
                rng.random((len(box.vertices), 3)).astype(np.float32))


def test_roundtrip_exact(tmp_path):
    mesh = _mesh()
    path = str(tmp_path / "m.kmesh")
    save_mesh_arrays(path, mesh)
    out = read_kmesh(path)
    assert out["n_vertices"] == len(mesh.vertices) and out["n_faces"] == len(mesh.faces)
    assert out["vertices"].typecode == "f" and out["faces"].typecode == "i"
    assert np.array_equal(np.frombuffer(out["vertices"], np.float32).reshape(-1, 3), mesh.vertices)
    assert np.array_equal(np.frombuffer(out["faces"], np.int32).reshape(-1, 3), mesh.faces)
    rgba = np.frombuffer(out["colours"], np.float32).reshape(-1, 4)
    assert np.allclose(rgba[:, 3], 1.0)
    # colours are scene-linear: sRGB 0.5 -> 0.214, 1 -> 1, 0 -> 0
    assert np.allclose(rgba[:, :3], srgb_to_linear(mesh.colors), atol=1e-6)
    assert np.allclose(srgb_to_linear(np.array([0.0, 0.5, 1.0])), [0.0, 0.21404, 1.0], atol=1e-4)
    assert os.path.getsize(path) == KMESH_HEADER.size + len(mesh.vertices) * 28 + len(mesh.faces) * 12


def test_without_colours(tmp_path):
    path = str(tmp_path / "m.kmesh")
    v = np.zeros((3, 3), "<f4")
    v[1, 0] = v[2, 1] = 1
    write_kmesh(path, v.tobytes(), np.array([[0, 1, 2]], "<i4").tobytes())
    out = read_kmesh(path)
    assert out["colours"] is None and list(out["faces"]) == [0, 1, 2]


@pytest.mark.parametrize("damage", ["truncated", "magic", "index", "nan", "missing", "empty"])
def test_bad_files_raise(tmp_path, damage):
    good = str(tmp_path / "good.kmesh")
    save_mesh_arrays(good, _mesh())
    data = bytearray(open(good, "rb").read())
    path = str(tmp_path / "bad.kmesh")
    if damage == "truncated":
        data = data[:-5]
    elif damage == "magic":
        data[:4] = b"XXXX"
    elif damage == "index":
        o = KMESH_HEADER.size + read_kmesh(good)["n_vertices"] * 12
        data[o:o + 4] = np.int32(10**6).tobytes()
    elif damage == "nan":
        data[KMESH_HEADER.size:KMESH_HEADER.size + 4] = np.float32("nan").tobytes()
    elif damage == "empty":
        data = b""
    if damage != "missing":
        open(path, "wb").write(bytes(data))
    with pytest.raises(MeshFileError):
        read_kmesh(path)


def test_inconsistent_buffers_refused(tmp_path):
    with pytest.raises(MeshFileError):
        write_kmesh(str(tmp_path / "x.kmesh"), b"\0" * 12, b"\0" * 11)


def test_backend_result_carries_mesh_file(tmp_path):
    """A real generate job writes mesh.kmesh next to asset.glb with the same mesh."""
    env = {**os.environ, "PYTHONPATH": REPO, "KILN_THREADS": "1", "KILN_OUTPUT_ROOT": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "backend", "generate", "--prompt", "a red mug", "--seed", "1",
                           "--resolution", "64", "--no-preview", "--json", "--out", str(tmp_path / "mug")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert os.path.basename(result["mesh_file"]) == "mesh.kmesh"
    arrays = read_kmesh(result["mesh_file"])
    assert arrays["n_vertices"] == result["mesh"]["vertices"] and arrays["n_faces"] == result["mesh"]["faces"] > 100
    v = np.frombuffer(arrays["vertices"], np.float32).reshape(-1, 3)
    assert np.allclose([v.min(0), v.max(0)], result["mesh"]["bounds"], atol=1e-3)
    glb = trimesh.load(result["glb"], force="mesh", process=False)
    # the GLB is +Y up (x, z, -y); the arrays are Blender's +Z up
    assert np.allclose(np.asarray(glb.vertices), np.stack([v[:, 0], v[:, 2], -v[:, 1]], 1), atol=1e-5)
