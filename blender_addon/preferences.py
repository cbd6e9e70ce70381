"""Add-on preferences: the backend interpreter, device, output folder, defaults, and the
backend's status with Start / Restart / Stop and the "Set up backend" installer."""
from __future__ import annotations

import os
from types import SimpleNamespace

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from . import client, setup_backend

PACKAGE = __package__

DEVICE_ITEMS = (
    ("auto", "Auto", "CUDA when an NVIDIA GPU is usable, else the CPU"),
    ("cpu", "CPU", "Always run on the CPU"),
    ("cuda", "CUDA", "NVIDIA GPU (fails when none is usable)"),
)
RESOLUTION_ITEMS = (
    ("64", "64³ (draft)", "Fast, coarse mesh"),
    ("128", "128³", "Default detail"),
    ("256", "256³ (fine)", "Finest mesh, slower and heavier"),
)
DEFAULT_OUTPUT = os.path.join(os.path.expanduser("~"), "kiln_output")

STATUS_ICONS = {"stopped": "RADIOBUT_OFF", "starting": "SORTTIME", "ready": "CHECKMARK",
                "busy": "SORTTIME", "crashed": "ERROR"}


class KILN_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = PACKAGE

    python_path: StringProperty(
        name="Backend Python", subtype="FILE_PATH", default="",
        description="Python interpreter with Kiln's requirements (torch, trimesh, ...). Empty: automatic "
                    "($KILN_PYTHON, the checkout's .venv, or the venv made by 'Set up backend')")
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="auto",
                         description="Where the backend runs the models (applies on the next start)")
    output_dir: StringProperty(
        name="Output Folder", subtype="DIR_PATH", default="",
        description=f"Where results (mesh, GLB, latent, preview) are written. Empty: {DEFAULT_OUTPUT}")
    default_resolution: EnumProperty(name="Default Resolution", items=RESOLUTION_ITEMS, default="128",
                                     description="Mesh resolution used when the panel says 'Default'")
    threads: IntProperty(name="CPU Threads", default=0, min=0, max=256,
                         description="CPU threads the backend may use (0: automatic)")
    auto_start: BoolProperty(name="Start Automatically", default=True,
                             description="Start the backend when a job is sent and it is not running")
    # set-up
    setup_base_python: StringProperty(
        name="Base Python", subtype="FILE_PATH", default="",
        description="Python 3.10+ used to create the backend venv. Empty: Blender's own Python")
    setup_venv_dir: StringProperty(
        name="Venv Folder", subtype="DIR_PATH", default="",
        description="Where 'Set up backend' creates the venv. Empty: Kiln's folder in Blender's user data")
    pip_args: StringProperty(
        name="Extra pip Arguments", default="",
        description="Added to every pip call, e.g. '--index-url https://download.pytorch.org/whl/cpu'")

    def draw(self, context):
        layout = self.layout
        from . import tasks

        backend = tasks.manager.backend
        box = layout.box()
        row = box.row()
        state = tasks.manager.status()
        row.label(text=f"Backend: {state.capitalize()}", icon=STATUS_ICONS.get(state, "QUESTION"))
        if backend.info.get("device"):
            gpu = f" ({backend.info['cuda']})" if backend.info.get("cuda") else ""
            row.label(text=f"Device: {backend.info['device']}{gpu}")
        row = box.row(align=True)
        if backend.alive:
            row.operator("kiln.backend_restart", icon="FILE_REFRESH")
            row.operator("kiln.backend_stop", icon="CANCEL")
        else:
            row.operator("kiln.backend_start", icon="PLAY")
        for m in backend.info.get("models", []):
            row = box.row()
            row.label(text=f"{m['id']} ({', '.join(m['modes'])})", icon="CHECKMARK" if m["available"] else "X")
            row.label(text="available" if m["available"] else m.get("reason", "")[:80])
        if backend.error:
            col = box.column(align=True)
            col.alert = True
            for line in _wrap(backend.error, 110):
                col.label(text=line)
        python, where = interpreter(self)
        col = box.column(align=True)
        col.prop(self, "python_path")
        sub = col.row()
        sub.enabled = False
        sub.label(text=f"Using: {python} ({where})" if python else where, icon="NONE" if python else "ERROR")
        col = box.column()
        col.prop(self, "device")
        col.prop(self, "threads")
        col.prop(self, "output_dir")
        col.prop(self, "default_resolution")
        col.prop(self, "auto_start")
        if backend.log_path:
            box.operator("kiln.open_log", icon="TEXT")

        box = layout.box()
        box.label(text="Set up backend: a venv with Kiln's pinned requirements (downloads about 1 GB)", icon="PACKAGE")
        setup = setup_backend.current
        col = box.column()
        col.prop(self, "setup_base_python")
        col.prop(self, "setup_venv_dir")
        col.prop(self, "pip_args")
        row = box.row(align=True)
        if setup is not None and setup.running:
            row.label(text=f"{setup.stage}: {setup.fraction * 100:.0f}%", icon="SORTTIME")
            row.operator("kiln.setup_cancel", icon="CANCEL")
            if setup.message:
                box.label(text=setup.message[-120:])
        else:
            row.operator("kiln.setup_backend", icon="IMPORT")
            if setup is not None and setup.finished:
                sub = box.column(align=True)
                sub.alert = not setup.ok
                for line in _wrap(setup.summary(), 110):
                    sub.label(text=line)


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    return lines + ([line] if line else [])


_FALLBACK = SimpleNamespace(python_path="", device="auto", output_dir="", default_resolution="128", threads=0,
                            auto_start=True, setup_base_python="", setup_venv_dir="", pip_args="")


def get():
    """The add-on's preferences; the defaults when the package was registered by hand
    (e.g. `import kiln; kiln.register()` in a script) rather than as an add-on."""
    addon = bpy.context.preferences.addons.get(PACKAGE)
    return addon.preferences if addon is not None and addon.preferences is not None else _FALLBACK


def output_root(p=None) -> str:
    p = p or get()
    path = bpy.path.abspath(p.output_dir) if p.output_dir else DEFAULT_OUTPUT
    return os.path.abspath(os.path.expanduser(path))


def setup_venv_dir(p=None) -> str:
    p = p or get()
    if p.setup_venv_dir:
        return os.path.abspath(bpy.path.abspath(p.setup_venv_dir))
    if PACKAGE.startswith("bl_ext.") and hasattr(bpy.utils, "extension_path_user"):
        return bpy.utils.extension_path_user(PACKAGE, path="backend-venv", create=False)
    return bpy.utils.user_resource("DATAFILES", path=os.path.join("kiln", "backend-venv"))


def interpreter(p=None) -> tuple[str, str]:
    p = p or get()
    configured = bpy.path.abspath(p.python_path) if p.python_path else ""
    return client.find_interpreter(configured, setup_venv_dir(p))


def default_resolution(p=None) -> int:
    return int((p or get()).default_resolution)


classes = (KILN_AddonPreferences,)
