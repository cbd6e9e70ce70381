"""Shared by the scripts that run inside Blender (the bpy module or `blender -b -P`):
load the add-on the way Blender does, and collect named checks into one JSON report.

Standard library + bpy only (Debian's Blender has no numpy)."""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADDON_SRC = os.path.join(REPO, "blender_addon")

# Keep Blender's user folders (installed add-ons, preferences) out of $HOME. Must happen
# before `import bpy` when running on the bpy module; `blender` reads them at start-up.
if "bpy" not in sys.modules and not os.environ.get("BLENDER_USER_RESOURCES"):
    os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp(prefix="kiln-blender-user-")


def _raise(exc):
    raise exc


def load_addon(name: str = "kiln"):
    """Enable the checkout's add-on as a legacy add-on called `name` (a symlink in the user
    add-ons folder), through addon_utils like Preferences > Add-ons does."""
    import addon_utils
    import bpy

    folder = bpy.utils.user_resource("SCRIPTS", path="addons", create=True)
    link = os.path.join(folder, name)
    if not os.path.exists(link):
        os.symlink(ADDON_SRC, link)
    bpy.utils.refresh_script_paths()  # the folder may be new since start-up
    if folder not in sys.path:
        sys.path.append(folder)
    mod = addon_utils.enable(name, default_set=True, handle_error=_raise)
    assert mod is not None, f"could not enable {name}"
    return sys.modules[name]


def unload_addon(mod) -> None:
    import addon_utils

    addon_utils.disable(mod.__name__, default_set=True, handle_error=_raise)


class Checks:
    """Named checks: each records ok / detail / seconds; a failure never stops the script
    (so one run reports everything); `skip` marks a check that could not run here."""

    def __init__(self, path: str):
        self.path = path
        self.results: dict[str, dict] = {}
        self.info: dict = {}

    def run(self, name: str, fn, *args, **kw):
        t = time.perf_counter()
        try:
            detail = fn(*args, **kw)
            res = {"ok": True, "detail": detail}
        except SkipCheck as exc:
            res = {"ok": None, "skip": str(exc)}
        except BaseException as exc:  # noqa: BLE001
            res = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-4000:]}
        res["seconds"] = round(time.perf_counter() - t, 3)
        self.results[name] = res
        print(f"[check] {name}: {'ok' if res['ok'] else ('skip' if res['ok'] is None else 'FAIL')} "
              f"({res['seconds']} s) {res.get('error') or res.get('skip') or ''}", flush=True)
        self.write()
        return res.get("detail")

    def write(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"checks": self.results, "info": self.info}, fh, indent=1, default=str)
        os.replace(tmp, self.path)


class SkipCheck(Exception):
    pass


def script_args() -> list[str]:
    return sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
