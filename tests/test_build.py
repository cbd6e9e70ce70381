"""build.py's zip: layout for Preferences > Add-ons > Install and for a 4.2+ extension,
weights inside, nothing that does not belong, byte-identical rebuilds; and the add-on's
import discipline (Blender's Python has no torch or numpy)."""
import ast
import glob
import hashlib
import os
import subprocess
import zipfile

import pytest

from tests.addon_env import BPY_PYTHON, REPO, build_zip, need

ADDON = os.path.join(REPO, "blender_addon")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = build_zip(str(tmp_path_factory.mktemp("dist")))
    with zipfile.ZipFile(path) as zf:
        return path, zf.namelist()


def test_layout(built):
    path, names = built
    assert os.path.basename(path) == "kiln-0.1.0.zip"
    assert all(n.startswith("kiln/") for n in names)
    for need_ in ("kiln/__init__.py", "kiln/blender_manifest.toml", "kiln/requirements.txt", "kiln/client.py",
                  "kiln/backend/__main__.py", "kiln/backend/protocol.py", "kiln/models/__init__.py",
                  "kiln/models/triplane/inference.py", "kiln/models/weights/autoencoder.safetensors",
                  "kiln/models/weights/text.safetensors"):
        assert need_ in names, need_
    shipped = {os.path.basename(p) for p in glob.glob(os.path.join(REPO, "models", "weights", "*.safetensors"))}
    assert {n.rsplit("/", 1)[1] for n in names if n.startswith("kiln/models/weights/")} == shipped
    bad = [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/." in n or ".venv" in n
           or n.startswith("kiln/blender_addon") or "/tests/" in n]
    assert not bad, bad


def test_rebuild_is_identical(tmp_path):
    paths = [build_zip(str(tmp_path / name)) for name in ("a", "b")]  # back to back: same sources
    digest = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths]
    assert digest[0] == digest[1]


def test_valid_extension(built):
    """Blender's own extension validator (from the bpy 5.0.1 wheel) accepts the zip."""
    need(BPY_PYTHON, "the bpy 5.0.1 venv")
    path, _ = built
    tool = glob.glob(os.path.join(os.path.dirname(os.path.dirname(BPY_PYTHON)), "lib", "python3*", "site-packages",
                                  "bpy", "*", "scripts", "addons_core", "bl_pkg", "cli", "blender_ext.py"))
    assert tool, "blender_ext.py not found in the bpy wheel"
    proc = subprocess.run([BPY_PYTHON, tool[0], "validate", path], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Success" in proc.stdout, proc.stdout + proc.stderr


def test_versions_agree():
    import build

    versions = build.read_versions()
    assert len(set(versions.values())) == 1, versions


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield 0, a.name
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or ""


def test_addon_imports_only_stdlib_bpy_and_itself():
    """The add-on never imports torch, numpy or the backend/models packages (only
    backend/protocol.py, loaded by path): Blender's Python has none of them."""
    import sys

    allowed = set(sys.stdlib_module_names) | {"bpy", "mathutils", "addon_utils", "bpy_extras"}
    for path in glob.glob(os.path.join(ADDON, "*.py")):
        for level, name in _imports(path):
            if level == 0:
                assert name.split(".")[0] in allowed, f"{os.path.basename(path)} imports {name}"
    client = open(os.path.join(ADDON, "client.py"), encoding="utf-8").read()
    assert '"backend", "protocol.py"' in client
    # protocol.py itself is standard library only
    for level, name in _imports(os.path.join(REPO, "backend", "protocol.py")):
        assert level == 0 and name.split(".")[0] in sys.stdlib_module_names | {"__future__"}, name
