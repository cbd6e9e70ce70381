"""Build the installable add-on: dist/kiln-<version>.zip

    python build.py [--out dist] [--no-weights]

The zip holds one folder, `kiln/`: the add-on (`blender_addon/`), its manifest, the
backend and models packages and the shipped weights (so the add-on starts
`python -m backend serve` with PYTHONPATH at its own folder), and requirements.txt (for
"Set up backend"). It installs through Preferences > Add-ons > Install (legacy add-on,
`bl_info`, Blender 3.4+) and is a valid Blender 4.2+ extension (`blender_manifest.toml`).
Standard library only; the file order and timestamps are fixed, so equal inputs give a
byte-identical zip.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import zipfile

REPO = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "kiln"
FIXED_TIME = (2024, 1, 1, 0, 0, 0)

# what goes in, per source folder: (source, destination inside kiln/, file suffixes)
CODE = (".py",)
SOURCES = (
    ("blender_addon", "", CODE + (".toml",)),
    ("backend", "backend", CODE),
    ("models", "models", CODE + (".md", ".json")),
)
WEIGHTS_DIR = os.path.join("models", "weights")
SKIP_DIRS = {"__pycache__", ".pytest_cache", "runs", "cache", "caches", "data_cache"}


def read_versions() -> dict:
    """The version as bl_info, the manifest and the backend state it; they must agree."""
    init = open(os.path.join(REPO, "blender_addon", "__init__.py"), encoding="utf-8").read()
    bl_info = ast.literal_eval(re.search(r"bl_info\s*=\s*(\{.*?\n\})", init, re.S).group(1))
    manifest = open(os.path.join(REPO, "blender_addon", "blender_manifest.toml"), encoding="utf-8").read()
    backend = open(os.path.join(REPO, "backend", "__init__.py"), encoding="utf-8").read()
    return {
        "bl_info": ".".join(map(str, bl_info["version"])),
        "manifest": re.search(r'^version\s*=\s*"([^"]+)"', manifest, re.M).group(1),
        "backend": re.search(r'__version__\s*=\s*"([^"]+)"', backend).group(1),
    }


def collect(with_weights: bool = True) -> list[tuple[str, str]]:
    """(source path, path in the zip) pairs, sorted."""
    files = []
    for src, dst, suffixes in SOURCES:
        base = os.path.join(REPO, src)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
            rel_dir = os.path.relpath(dirpath, base)
            for name in sorted(filenames):
                rel = os.path.normpath(os.path.join(rel_dir, name))
                full = os.path.join(dirpath, name)
                is_weight = os.path.normpath(os.path.join(src, rel)).startswith(WEIGHTS_DIR + os.sep)
                if is_weight:
                    if with_weights and name.endswith(".safetensors"):
                        files.append((full, f"{PACKAGE}/{dst}/{rel}".replace(os.sep, "/")))
                    continue
                if name.endswith(suffixes) and not name.startswith("."):
                    files.append((full, "/".join(p for p in (PACKAGE, dst, rel.replace(os.sep, "/")) if p)))
    files.append((os.path.join(REPO, "requirements.txt"), f"{PACKAGE}/requirements.txt"))
    return sorted(files, key=lambda f: f[1])


def build(out_dir: str, with_weights: bool = True) -> str:
    versions = read_versions()
    if len(set(versions.values())) != 1:
        raise SystemExit(f"version mismatch: {versions} (bl_info, blender_manifest.toml, backend/__init__.py)")
    version = versions["manifest"]
    files = collect(with_weights)
    for need in ("__init__.py", "blender_manifest.toml", "backend/protocol.py", "backend/server.py",
                 "models/__init__.py"):
        if f"{PACKAGE}/{need}" not in {z for _, z in files}:
            raise SystemExit(f"missing from the zip: {need}")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{PACKAGE}-{version}.zip")
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w") as zf:
        for full, arc in files:
            info = zipfile.ZipInfo(arc, FIXED_TIME)
            info.external_attr = 0o644 << 16
            stored = arc.endswith(".safetensors")  # weights barely compress; store them
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            with open(full, "rb") as fh:
                zf.writestr(info, fh.read())
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(REPO, "dist"))
    ap.add_argument("--no-weights", action="store_true", help="leave the weights out (for quick tests)")
    args = ap.parse_args(argv)
    path = build(args.out, with_weights=not args.no_weights)
    with zipfile.ZipFile(path) as zf:
        n = len(zf.namelist())
    print(f"wrote {path} ({n} files, {os.path.getsize(path) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
