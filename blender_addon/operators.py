"""Operators. In the UI, jobs are sent and the operator returns at once (the result lands
from a timer, as its own undo step); in background mode (`blender -b`) the same operators
wait for the result, so `bpy.ops.kiln.generate(prompt=...)` in a script just works and
leaves the new object active."""
from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, FloatVectorProperty, IntProperty, StringProperty

from . import api, preferences, setup_backend, tasks
from .client import KilnError, protocol
from .properties import (DEFAULT_REFINE_STEPS, DEFAULT_TRIES, FLOATERS_DESCRIPTION, MAX_REFINE_STEPS, MAX_SEED,
                         MAX_TRIES, MODE_ITEMS, REBUILD_DESCRIPTION, REFINE_DESCRIPTION, RESOLUTION_ITEMS,
                         TRIES_DESCRIPTION)


def _poll_fail(cls, message: str) -> bool:
    if hasattr(cls, "poll_message_set"):
        cls.poll_message_set(message)
    return False


def _ready(cls, context) -> bool:
    if protocol is None or tasks.manager is None:
        return _poll_fail(cls, "Kiln's backend files are missing from the add-on")
    return True


def _settings(context):
    return context.scene.kiln


def _resolution_value(op, settings) -> str:
    return op.resolution if op.properties.is_property_set("resolution") else settings.resolution


def _fail(op, exc: KilnError) -> set:
    op.report({"ERROR"}, f"Kiln: {exc.message}")
    return {"CANCELLED"}


class KILN_OT_generate(bpy.types.Operator):
    """Generate a 3D asset from the prompt (or images) at the 3D cursor"""

    bl_idname = "kiln.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER"}

    prompt: StringProperty(name="Prompt", description="Empty: the panel's prompt")
    mode: EnumProperty(name="Mode", items=MODE_ITEMS, default="text")
    front: StringProperty(name="Front Image", subtype="FILE_PATH")
    back: StringProperty(name="Back Image", subtype="FILE_PATH")
    refine: BoolProperty(name="Refine", default=False, description=REFINE_DESCRIPTION)
    refine_steps: IntProperty(name="Refine Steps", default=DEFAULT_REFINE_STEPS, min=1, max=MAX_REFINE_STEPS)
    seed: IntProperty(name="Seed", default=0, min=0, max=MAX_SEED)
    tries: IntProperty(name="Tries", default=DEFAULT_TRIES, min=1, max=MAX_TRIES, description=TRIES_DESCRIPTION)
    rebuild: BoolProperty(name="Rebuild Pieces", default=True, description=REBUILD_DESCRIPTION)
    resolution: EnumProperty(name="Resolution", items=RESOLUTION_ITEMS, default="DEFAULT")
    remove_floaters: BoolProperty(name="Remove Floaters", default=True, description=FLOATERS_DESCRIPTION)
    location: FloatVectorProperty(name="Location", subtype="TRANSLATION", size=3,
                                  description="Where the asset stands (default: the 3D cursor)")
    name: StringProperty(name="Name", description="Object name (default: from the prompt)")

    @classmethod
    def poll(cls, context):
        if not _ready(cls, context):
            return False
        if context.mode != "OBJECT":
            return _poll_fail(cls, "Switch to Object Mode to add an asset")
        return True

    def execute(self, context):
        s = _settings(context)
        is_set = self.properties.is_property_set
        mode = self.mode if is_set("mode") else s.mode
        kw = dict(mode=mode, seed=self.seed if is_set("seed") else s.seed,
                  resolution=_resolution_value(self, s), name=self.name,
                  remove_floaters=self.remove_floaters if is_set("remove_floaters") else s.remove_floaters,
                  location=tuple(self.location) if is_set("location") else None)
        if mode == "text":
            kw["prompt"] = self.prompt if is_set("prompt") else s.prompt
            kw["candidates"] = self.tries if is_set("tries") else s.tries
            kw["rebuild"] = self.rebuild if is_set("rebuild") else s.rebuild
        else:
            kw["front"] = self.front if is_set("front") else s.front_image
            kw["back"] = self.back if is_set("back") else s.back_image
            kw["refine"] = self.refine if is_set("refine") else s.refine
            kw["refine_steps"] = self.refine_steps if is_set("refine_steps") else s.refine_steps
        try:
            if tasks.manager.synchronous:
                obj = api.generate(**kw)
                self.report({"INFO"}, f"Kiln: generated {obj.name}")
            else:
                job = api.submit_generate(**kw)
                self.report({"INFO"}, f"Kiln: {job.label} queued")
        except KilnError as exc:
            return _fail(self, exc)
        return {"FINISHED"}


class KILN_OT_edit(bpy.types.Operator):
    """Change the active mesh in place with a text instruction (a non-Kiln mesh is fitted first)"""

    bl_idname = "kiln.edit"
    bl_label = "Apply Edit"
    bl_options = {"REGISTER"}

    instruction: StringProperty(name="Instruction", description="Empty: the panel's instruction")
    strength: FloatProperty(name="Strength", default=1.0, min=0.0, max=1.0, subtype="FACTOR")
    seed: IntProperty(name="Seed", default=0, min=0, max=MAX_SEED)
    resolution: EnumProperty(name="Resolution", items=RESOLUTION_ITEMS, default="DEFAULT")
    remove_floaters: BoolProperty(name="Remove Floaters", default=True, description=FLOATERS_DESCRIPTION)
    use_mesh: BoolProperty(name="Fit Current Mesh", default=False,
                           description="Send the current mesh even when the object has a Kiln latent "
                                       "(after sculpting or modelling on a generated asset)")

    @classmethod
    def poll(cls, context):
        if not _ready(cls, context):
            return False
        obj = context.active_object
        if obj is None or obj.type != "MESH":
            return _poll_fail(cls, "Select a mesh object to edit")
        if context.mode != "OBJECT":
            return _poll_fail(cls, "Switch to Object Mode to edit with Kiln")
        if obj.get("kiln_uid") and tasks.manager.jobs_for(obj["kiln_uid"]):
            return _poll_fail(cls, "This object already has a Kiln job in progress")
        return True

    def execute(self, context):
        s = _settings(context)
        is_set = self.properties.is_property_set
        obj = context.active_object
        kw = dict(strength=self.strength if is_set("strength") else s.strength,
                  seed=self.seed if is_set("seed") else s.edit_seed,
                  resolution=self.resolution if is_set("resolution") else "DEFAULT", use_mesh=self.use_mesh,
                  remove_floaters=self.remove_floaters if is_set("remove_floaters") else s.remove_floaters)
        instruction = self.instruction if is_set("instruction") else s.instruction
        try:
            if tasks.manager.synchronous:
                api.edit(obj, instruction, **kw)
                self.report({"INFO"}, f"Kiln: edited {obj.name}")
            else:
                job = api.submit_edit(obj, instruction, **kw)
                how = "its latent" if "asset" in job.request else "its mesh (a latent is fitted first)"
                self.report({"INFO"}, f"Kiln: editing {obj.name} from {how}")
        except KilnError as exc:
            return _fail(self, exc)
        return {"FINISHED"}


class KILN_OT_regenerate(bpy.types.Operator):
    """Generate the active Kiln asset's prompt again with another seed, replacing its mesh in place"""

    bl_idname = "kiln.regenerate"
    bl_label = "Regenerate"
    bl_options = {"REGISTER"}

    seed: IntProperty(name="Seed", default=0, min=0, max=MAX_SEED, description="Unset: a random seed")

    @classmethod
    def poll(cls, context):
        if not _ready(cls, context):
            return False
        obj = context.active_object
        if obj is None or not obj.get("kiln_prompt"):
            return _poll_fail(cls, "Select an object Kiln generated from a prompt")
        if context.mode != "OBJECT":
            return _poll_fail(cls, "Switch to Object Mode")
        if obj.get("kiln_uid") and tasks.manager.jobs_for(obj["kiln_uid"]):
            return _poll_fail(cls, "This object already has a Kiln job in progress")
        return True

    def execute(self, context):
        obj = context.active_object
        seed = self.seed if self.properties.is_property_set("seed") else None
        floaters = _settings(context).remove_floaters
        try:
            if tasks.manager.synchronous:
                api.regenerate(obj, seed=seed, remove_floaters=floaters)
                self.report({"INFO"}, f"Kiln: regenerated {obj.name} (seed {obj.get('kiln_seed')})")
            else:
                api.submit_regenerate(obj, seed=seed, remove_floaters=floaters)
        except KilnError as exc:
            return _fail(self, exc)
        return {"FINISHED"}


class KILN_OT_fit(bpy.types.Operator):
    """Fit a Kiln latent to the active mesh and replace the mesh by Kiln's reconstruction, in place"""

    bl_idname = "kiln.fit"
    bl_label = "Make Kiln Asset"
    bl_options = {"REGISTER"}

    fit_steps: IntProperty(name="Fit Steps", default=60, min=0, max=1000,
                           description="Optimisation steps after the encoder's first guess")
    resolution: EnumProperty(name="Resolution", items=RESOLUTION_ITEMS, default="DEFAULT")

    @classmethod
    def poll(cls, context):
        return KILN_OT_edit.poll.__func__(cls, context)

    def execute(self, context):
        obj = context.active_object
        try:
            if tasks.manager.synchronous:
                api.fit(obj, fit_steps=self.fit_steps, resolution=self.resolution)
                iou = obj.get("kiln_fit_iou", 0.0)
                self.report({"INFO"}, f"Kiln: {obj.name} is now a Kiln asset (fit IoU {iou:.2f})")
            else:
                api.submit_fit(obj, fit_steps=self.fit_steps, resolution=self.resolution)
        except KilnError as exc:
            return _fail(self, exc)
        return {"FINISHED"}


class KILN_OT_cancel(bpy.types.Operator):
    """Cancel a Kiln job (all queued and running jobs when no job is named)"""

    bl_idname = "kiln.cancel"
    bl_label = "Cancel"

    job_id: StringProperty(name="Job", default="")

    @classmethod
    def poll(cls, context):
        m = tasks.manager
        if m is None or not any(not j.final for j in m.jobs.values()):
            return _poll_fail(cls, "No Kiln job is queued or running")
        return True

    def execute(self, context):
        try:
            n = api.cancel(self.job_id or None)
        except KilnError as exc:
            return _fail(self, exc)
        self.report({"INFO"}, f"Kiln: cancelling {n} job(s)")
        return {"FINISHED"}


class KILN_OT_clear_queue(bpy.types.Operator):
    """Remove finished, failed and cancelled jobs from the list"""

    bl_idname = "kiln.clear_queue"
    bl_label = "Clear Finished"

    @classmethod
    def poll(cls, context):
        m = tasks.manager
        return m is not None and any(j.final and not j.pending_import for j in m.jobs.values())

    def execute(self, context):
        tasks.manager.clear_finished()
        return {"FINISHED"}


class KILN_OT_backend_start(bpy.types.Operator):
    """Start Kiln's backend process"""

    bl_idname = "kiln.backend_start"
    bl_label = "Start Backend"

    @classmethod
    def poll(cls, context):
        return _ready(cls, context) and not tasks.manager.backend.alive

    def execute(self, context):
        try:
            if tasks.manager.synchronous:
                api.start_backend()
            else:
                tasks.manager.start_backend()
        except KilnError as exc:
            return _fail(self, exc)
        return {"FINISHED"}


class KILN_OT_backend_restart(bpy.types.Operator):
    """Stop the backend (cancelling its jobs) and start a fresh one with the current preferences"""

    bl_idname = "kiln.backend_restart"
    bl_label = "Restart Backend"

    @classmethod
    def poll(cls, context):
        return _ready(cls, context)

    def execute(self, context):
        try:
            if tasks.manager.synchronous:
                api.restart_backend()
            else:
                tasks.manager.restart_backend()
        except KilnError as exc:
            return _fail(self, exc)
        self.report({"INFO"}, "Kiln: backend restarted")
        return {"FINISHED"}


class KILN_OT_backend_stop(bpy.types.Operator):
    """Stop the backend process (cancels its jobs)"""

    bl_idname = "kiln.backend_stop"
    bl_label = "Stop Backend"

    @classmethod
    def poll(cls, context):
        return tasks.manager is not None and tasks.manager.backend.alive

    def execute(self, context):
        tasks.manager.stop_backend()
        return {"FINISHED"}


class KILN_OT_randomize_seed(bpy.types.Operator):
    """Pick a random seed"""

    bl_idname = "kiln.randomize_seed"
    bl_label = "Randomize Seed"
    bl_options = {"REGISTER", "UNDO"}

    target: EnumProperty(items=(("GENERATE", "Generate", ""), ("EDIT", "Edit", "")), default="GENERATE")

    def execute(self, context):
        s = _settings(context)
        if self.target == "EDIT":
            s.edit_seed = api.random_seed()
        else:
            s.seed = api.random_seed()
        return {"FINISHED"}


class KILN_OT_insert_colour(bpy.types.Operator):
    """Write the picked colour into the instruction as a hex code (the edit paints it as it is)"""

    bl_idname = "kiln.insert_colour"
    bl_label = "Insert Colour"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        s = _settings(context)
        s.instruction = api.with_colour(s.instruction, s.edit_colour)
        return {"FINISHED"}


class KILN_OT_setup_backend(bpy.types.Operator):
    """Create a Python venv and install Kiln's pinned requirements (torch etc.) in the background"""

    bl_idname = "kiln.setup_backend"
    bl_label = "Set Up Backend"

    @classmethod
    def poll(cls, context):
        cur = setup_backend.current
        if cur is not None and cur.running:
            return _poll_fail(cls, "A set-up is already running")
        return True

    def execute(self, context):
        p = preferences.get()
        s = setup_backend.Setup(preferences.setup_venv_dir(p), bpy.path.abspath(p.setup_base_python),
                                pip_args=p.pip_args)
        setup_backend.current = s
        if bpy.app.background:
            s.run()
            level = "INFO" if s.ok else "ERROR"
            self.report({level}, "Kiln: " + s.summary())
            return {"FINISHED"} if s.ok else {"CANCELLED"}
        s.start()
        bpy.app.timers.register(_watch_setup, first_interval=0.5)
        self.report({"INFO"}, f"Kiln: setting up the backend in {s.venv_dir}")
        return {"FINISHED"}


def _watch_setup():
    s = setup_backend.current
    tasks._tag_redraw()
    if s is None or s.running:
        return 0.5
    tasks._notify("INFO" if s.ok else "ERROR", "Kiln: " + s.summary())
    return None


class KILN_OT_setup_cancel(bpy.types.Operator):
    """Stop the backend set-up"""

    bl_idname = "kiln.setup_cancel"
    bl_label = "Cancel Set-Up"

    @classmethod
    def poll(cls, context):
        return setup_backend.current is not None and setup_backend.current.running

    def execute(self, context):
        setup_backend.current.cancel()
        return {"FINISHED"}


class KILN_OT_open_log(bpy.types.Operator):
    """Open the backend's log file"""

    bl_idname = "kiln.open_log"
    bl_label = "Open Backend Log"

    @classmethod
    def poll(cls, context):
        m = tasks.manager
        return m is not None and bool(m.backend.log_path) and os.path.isfile(m.backend.log_path)

    def execute(self, context):
        bpy.ops.wm.path_open(filepath=tasks.manager.backend.log_path)
        return {"FINISHED"}


class KILN_OT_open_folder(bpy.types.Operator):
    """Open the active asset's result folder (or the output folder)"""

    bl_idname = "kiln.open_folder"
    bl_label = "Open Folder"

    def execute(self, context):
        obj = context.active_object
        folder = obj.get("kiln_dir") if obj is not None else None
        folder = folder if folder and os.path.isdir(folder) else preferences.output_root()
        os.makedirs(folder, exist_ok=True)
        bpy.ops.wm.path_open(filepath=folder)
        return {"FINISHED"}


class KILN_OT_import_result(bpy.types.Operator):
    """Import a Kiln result (mesh.kmesh in a job folder, e.g. from `python -m backend generate`)"""

    bl_idname = "kiln.import_result"
    bl_label = "Import Kiln Result"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(subtype="FILE_PATH")
    filter_glob: StringProperty(default="*.kmesh", options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        return _ready(cls, context) and context.mode == "OBJECT"

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        try:
            obj = api.import_result(self.filepath)
        except KilnError as exc:
            return _fail(self, exc)
        self.report({"INFO"}, f"Kiln: imported {obj.name}")
        return {"FINISHED"}


class KILN_OT_notify(bpy.types.Operator):
    """Show a Kiln message in the status bar (used by the background timer)"""

    bl_idname = "kiln.notify"
    bl_label = "Kiln Message"
    bl_options = {"INTERNAL"}

    level: EnumProperty(items=(("INFO", "Info", ""), ("WARNING", "Warning", ""), ("ERROR", "Error", "")))
    message: StringProperty()

    def execute(self, context):
        self.report({self.level}, self.message)
        return {"FINISHED"}


def menu_import(self, context):
    self.layout.operator(KILN_OT_import_result.bl_idname, text="Kiln Result (.kmesh)")


classes = (
    KILN_OT_generate,
    KILN_OT_edit,
    KILN_OT_regenerate,
    KILN_OT_fit,
    KILN_OT_cancel,
    KILN_OT_clear_queue,
    KILN_OT_backend_start,
    KILN_OT_backend_restart,
    KILN_OT_backend_stop,
    KILN_OT_randomize_seed,
    KILN_OT_insert_colour,
    KILN_OT_setup_backend,
    KILN_OT_setup_cancel,
    KILN_OT_open_log,
    KILN_OT_open_folder,
    KILN_OT_import_result,
    KILN_OT_notify,
)


def register() -> None:
    bpy.types.TOPBAR_MT_file_import.append(menu_import)


def unregister() -> None:
    bpy.types.TOPBAR_MT_file_import.remove(menu_import)
