"""The sidebar tab "Kiln" in the 3D Viewport (N panel)."""
from __future__ import annotations

import os

import bpy

from . import importer, preferences, tasks
from .client import protocol

STATE_ICONS = {"queued": "SORTTIME", "running": "PLAY", "done": "CHECKMARK", "failed": "ERROR",
               "cancelled": "X"}


class _KilnPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Kiln"


STAGES = {"text": "Reading prompt", "sample": "Sampling", "mesh": "Meshing", "read": "Reading mesh",
          "images": "Reading images", "reconstruct": "Reconstructing", "refine": "Refining",
          "fit": "Fitting latent", "edit": "Editing", "done": "Importing"}


def _progress(layout, context, fraction: float, text: str) -> None:
    if hasattr(layout, "progress"):  # 4.0+
        layout.progress(factor=fraction, type="BAR", text=text)
    else:  # 3.4 - 3.6: a read-only percentage slider kept up to date by the timer
        row = layout.row()
        row.enabled = False
        row.prop(context.window_manager, "kiln_progress", text=text, slider=True)


class KILN_PT_main(_KilnPanel, bpy.types.Panel):
    bl_label = "Kiln"
    bl_idname = "KILN_PT_main"

    def draw(self, context):
        layout = self.layout
        if protocol is None or tasks.manager is None:
            layout.alert = True
            layout.label(text="Kiln's backend files are missing", icon="ERROR")
            return
        s = context.scene.kiln
        m = tasks.manager
        backend = m.backend

        state = m.status()
        row = layout.row(align=True)
        device = f" · {backend.info['device']}" if backend.alive and backend.info.get("device") else ""
        row.label(text=f"Backend {state}{device}", icon=preferences.STATUS_ICONS.get(state, "QUESTION"))
        if backend.alive:
            row.operator("kiln.backend_restart", text="", icon="FILE_REFRESH")
        else:
            row.operator("kiln.backend_start", text="Start" if state != "crashed" else "Restart", icon="PLAY")
        if state == "crashed" or (state == "stopped" and backend.error):
            box = layout.box()
            col = box.column(align=True)
            col.alert = True
            for line in _wrap(backend.error, 42)[:6]:
                col.label(text=line)
            if backend.log_path:
                box.operator("kiln.open_log", icon="TEXT")

        layout.row().prop(s, "mode", expand=True)
        col = layout.column(align=True)
        if s.mode == "text":
            col.label(text="Prompt")
            col.prop(s, "prompt", text="")
        else:
            col.prop(s, "front_image")
            col.prop(s, "back_image")
            row = layout.row(align=True)
            row.prop(s, "refine")
            if s.refine:
                row.prop(s, "refine_steps", text="Steps")
            # the panel's Generate runs Kiln's own image model (published ones are for scripts and the CLI)
            if backend.model_available("images", "kiln-images") is False:
                warn = layout.row()
                warn.alert = True
                warn.label(text="No image model in this build", icon="INFO")
        row = layout.row(align=True)
        row.prop(s, "seed")
        row.operator("kiln.randomize_seed", text="", icon="FILE_REFRESH").target = "GENERATE"
        if s.mode == "text":
            row.prop(s, "tries")
        row = layout.row(align=True)
        row.prop(s, "resolution", text="")
        row.prop(s, "remove_floaters", text="", icon="BRUSH_DATA")
        if s.mode == "text":
            row.prop(s, "rebuild", text="", icon="MOD_BUILD")
        row = layout.row()
        row.scale_y = 1.5
        row.enabled = bool(s.prompt.strip()) if s.mode == "text" else bool(s.front_image)
        row.operator("kiln.generate", icon="SHADERFX")


class KILN_PT_jobs(_KilnPanel, bpy.types.Panel):
    bl_label = "Jobs"
    bl_idname = "KILN_PT_jobs"
    bl_parent_id = "KILN_PT_main"

    def draw(self, context):
        layout = self.layout
        m = tasks.manager
        if m is None:
            return
        job = m.running_job()
        if job is not None:
            box = layout.box()
            box.label(text=_job_name(job), icon="SORTTIME")
            row = box.row(align=True)
            stage = STAGES.get(job.stage, job.stage) if job.state == "running" else "Queued"
            _progress(row, context, job.fraction, stage)
            row.operator("kiln.cancel", text="", icon="CANCEL").job_id = job.id
        if not m.jobs:
            layout.label(text="No jobs yet")
            return
        col = layout.column(align=True)
        for j in reversed(list(m.jobs.values())[-12:]):
            row = col.row(align=True)
            row.alert = j.state == "failed"
            icon = "IMPORT" if j.pending_import else STATE_ICONS.get(j.state, "DOT")
            row.label(text=_job_line(j), icon=icon)
            if not j.final:
                row.operator("kiln.cancel", text="", icon="X").job_id = j.id
        last = [j for j in m.jobs.values() if j.state == "failed"]
        if last:
            box = layout.box()
            col = box.column(align=True)
            col.alert = True
            for line in _wrap(last[-1].message, 42)[:5]:
                col.label(text=line)
        row = layout.row(align=True)
        row.operator("kiln.clear_queue", text="Clear", icon="TRASH")
        row.operator("kiln.cancel", text="Cancel All", icon="CANCEL").job_id = ""


class KILN_PT_edit(_KilnPanel, bpy.types.Panel):
    bl_label = "Edit Selected"
    bl_idname = "KILN_PT_edit"
    bl_parent_id = "KILN_PT_main"

    def draw(self, context):
        layout = self.layout
        s = context.scene.kiln
        obj = context.active_object
        if obj is None or obj.type != "MESH":
            layout.label(text="Select a mesh object", icon="INFO")
            return
        box = layout.box()
        if importer.is_kiln_object(obj):
            box.label(text=obj.name, icon="OBJECT_DATA")
            col = box.column(align=True)
            if obj.get("kiln_prompt"):
                col.label(text=f"“{obj['kiln_prompt'][:60]}”")
                col.label(text=f"Seed {obj.get('kiln_seed', 0)} · {obj.get('kiln_resolution', '')}³ · "
                               f"{obj.get('kiln_model', '')}")
                if obj.get("kiln_sample_kept", 1) > 1:
                    # the seed's own sample was in pieces and a later try was kept (models/text/candidates.py)
                    col.label(text=f"Try {obj['kiln_sample_kept']}/{obj.get('kiln_samples_tried', '')} kept "
                                   "(fewest pieces)")
                if obj.get("kiln_rebuilt"):
                    # every try was in pieces: rebuilt whole by the image model (models/text/rebuild.py)
                    col.label(text="Rebuilt whole from its views")
            elif obj.get("kiln_front"):
                col.label(text=f"From {os.path.basename(obj['kiln_front'])}"
                               + (f" + {os.path.basename(obj['kiln_back'])}" if obj.get("kiln_back") else ""))
                outline = f" · outline fit {obj['kiln_outline_iou']:.2f}" if "kiln_outline_iou" in obj else ""
                col.label(text=f"{obj.get('kiln_resolution', '')}³ · {obj.get('kiln_model', '')}{outline}")
            if obj.get("kiln_edit_count"):
                col.label(text=f"{obj['kiln_edit_count']} edit(s), last: {obj.get('kiln_instruction', '')[:40]}")
            row = box.row(align=True)
            row.operator("kiln.regenerate", icon="FILE_REFRESH")
            row.operator("kiln.open_folder", text="", icon="FILE_FOLDER")
        else:
            box.label(text=f"{obj.name}: not a Kiln asset", icon="MESH_DATA")
            box.label(text="Edit fits a Kiln latent to it first")
            box.operator("kiln.fit", icon="MESH_ICOSPHERE")
        col = layout.column(align=True)
        col.label(text="Instruction")
        col.prop(s, "instruction", text="")
        row = col.row(align=True)
        row.prop(s, "edit_colour", text="")
        row.operator("kiln.insert_colour", icon="COLOR")
        row = layout.row(align=True)
        row.prop(s, "strength")
        row = layout.row(align=True)
        row.prop(s, "edit_seed", text="Seed")
        row.operator("kiln.randomize_seed", text="", icon="FILE_REFRESH").target = "EDIT"
        pending = tasks.manager.jobs_for(obj.get("kiln_uid", "")) if tasks.manager and obj.get("kiln_uid") else []
        if pending:
            layout.label(text=pending[0].summary(), icon="SORTTIME")
        if tasks.manager is not None and tasks.manager.backend.model_available("edit") is False:
            warn = layout.row()
            warn.alert = True
            warn.label(text="No edit model in this build", icon="INFO")
        row = layout.row()
        row.scale_y = 1.3
        row.enabled = bool(s.instruction.strip())
        row.operator("kiln.edit", icon="MODIFIER")


def _job_name(j) -> str:
    if j.op == "edit":
        return j.label[len("Edit "):]
    return j.label.split(" ", 1)[1] if j.label.startswith(("Generate ", "Regenerate ", "Fit ")) else j.label


def _job_line(j) -> str:
    """One short line per job for a narrow sidebar: what, then how it stands."""
    name = _job_name(j)
    if j.state == "done" and not j.pending_import:
        obj = j.object_name or name
        if j.op == "edit":
            return f"{j.request.get('instruction', '')} → {obj}"
        if j.op == "encode":
            return f"{obj} (fitted)"
        if j.target.get("kind") == "replace":
            return f"{obj} · seed {j.request.get('seed', '')}"
        return obj
    if j.state == "running":
        return f"{j.fraction * 100:3.0f}% {name}"
    if j.state == "failed":
        return f"{name}: {j.error_code or 'failed'}"
    if j.pending_import:
        return f"{name}: {j.message or 'importing'}"
    return f"{name} ({j.state})"


def _wrap(text: str, width: int) -> list[str]:
    return preferences._wrap(text, width)


classes = (KILN_PT_main, KILN_PT_jobs, KILN_PT_edit)
