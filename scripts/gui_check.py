"""Kiln in a real Blender window (run under Xvfb by scripts/screenshot.sh and by
tests/test_addon_gui.py): the sidebar's Kiln tab, Generate pressed as the UI does it (the
operator returns at once; Blender's own timer brings the result in), undo/redo of the
landed asset, the real timer callback durations, and a screenshot.

    xvfb-run -a -s "-screen 0 1600x1000x24" blender --factory-startup --enable-event-simulate \\
        -P scripts/gui_check.py -- --python .venv/bin/python --screenshot docs/screenshot.png --report r.json

Standard library + bpy; everything runs from bpy.app.timers once the window is up.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback

import bpy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "blender"))
import kiln_harness  # noqa: E402

argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
ap = argparse.ArgumentParser()
ap.add_argument("--python", required=True)
ap.add_argument("--screenshot", required=True)
ap.add_argument("--report", required=True)
ap.add_argument("--prefs-screenshot", default="", help="also show Kiln's add-on preferences and grab them")
ap.add_argument("--progress-screenshot", default="", help="also grab the window while the first job runs")
ap.add_argument("--out", default="", help="backend output folder (default: a temporary one)")
ap.add_argument("--prompt", default="a red chair with a tall back")
ap.add_argument("--seed", type=int, default=3)
ap.add_argument("--timeout", type=float, default=240.0)
args = ap.parse_args(argv)

bpy.context.preferences.view.show_splash = False  # (-P runs before the splash opens)
report: dict = {"blender": bpy.app.version_string, "steps": []}
kiln = kiln_harness.load_addon("kiln")
p = bpy.context.preferences.addons["kiln"].preferences
p.python_path, p.threads = args.python, 1
p.output_dir = args.out or tempfile.mkdtemp(prefix="kiln-gui-")


# Whether Kiln's panel is on screen: its draw() is wrapped (here, not in the add-on) to note the time.
DRAWN = {"main": 0.0}
_draw = kiln.panels.KILN_PT_main.draw


def _noting_draw(self, context):
    DRAWN["main"] = time.monotonic()
    return _draw(self, context)


kiln.panels.KILN_PT_main.draw = _noting_draw


def write_report():
    with open(args.report, "w") as fh:
        json.dump(report, fh, indent=1, default=str)


def win():
    return bpy.context.window_manager.windows[0]


def view3d():
    area = next(a for a in win().screen.areas if a.type == "VIEW_3D")
    return area, next(r for r in area.regions if r.type == "WINDOW"), next(r for r in area.regions if r.type == "UI")


def override():
    area, region, _ = view3d()
    return bpy.context.temp_override(window=win(), screen=win().screen, area=area, region=region)


def fail(msg: str):
    report["error"] = msg
    write_report()
    bpy.ops.wm.quit_blender()


class Flow:
    """Steps run one per timer call; a step returns seconds to wait, or None when done."""

    def __init__(self):
        self.steps = [self.setup_scene, self.open_kiln_tab, self.press_generate, self.wait_job, self.undo_redo,
                      self.second_asset, self.wait_job, self.press_edit, self.wait_edit, self.undo_redo_edit,
                      self.pose_view, self.screenshot, self.show_preferences,
                      self.preferences_screenshot]
        self.i = 0
        self.job = None
        self.t0 = time.monotonic()
        self.clicks = 0

    def __call__(self):
        try:
            while self.i < len(self.steps):
                step = self.steps[self.i]
                delay = step()
                if delay is not None and delay < 0:  # -1: call this step again
                    return 0.3
                report["steps"].append(step.__name__)
                self.i += 1
                if delay:
                    return delay
            report["ok"] = True
            write_report()
            bpy.ops.wm.quit_blender()
        except Exception:  # noqa: BLE001
            fail(traceback.format_exc())
        return None

    def setup_scene(self):
        cube = bpy.data.objects.get("Cube")
        if cube is not None:
            bpy.data.objects.remove(cube)
        area, _, _ = view3d()
        space = area.spaces[0]
        space.show_region_ui = True
        space.shading.type = "SOLID"
        space.shading.light = "STUDIO"
        space.shading.color_type = "VERTEX"  # Solid mode, Attribute colour
        space.shading.show_cavity = True
        space.overlay.show_floor = True
        s = bpy.context.scene.kiln
        s.prompt, s.seed, s.resolution = args.prompt, args.seed, "128"
        return 0.5

    def open_kiln_tab(self):
        """Make Kiln the sidebar's active tab as a person would: click along the sidebar's
        tab strip until Kiln's panel draws (4.x+ could set region.active_panel_category)."""
        if DRAWN["main"] > self.t0:
            report["kiln_tab_clicks"] = self.clicks
            return 0.1
        _, _, ui = view3d()
        if "active_panel_category" in bpy.types.Region.bl_rna.properties:
            ui.active_panel_category = "Kiln"
        else:
            y = ui.y + ui.height - 8 - 12 * self.clicks
            if y < ui.y:
                raise RuntimeError("the Kiln tab never became visible")
            w = win()
            x = ui.x + ui.width - 9
            w.event_simulate(type="MOUSEMOVE", value="NOTHING", x=x, y=y)
            w.event_simulate(type="LEFTMOUSE", value="PRESS", x=x, y=y)
            w.event_simulate(type="LEFTMOUSE", value="RELEASE", x=x, y=y)
        self.clicks += 1
        self.t0 = time.monotonic()
        view3d()[0].tag_redraw()
        return -1

    def press_generate(self):
        t = time.perf_counter()
        with override():
            res = bpy.ops.kiln.generate("INVOKE_DEFAULT")
        report["operator_return_s"] = round(time.perf_counter() - t, 4)
        assert res == {"FINISHED"}, res
        self.job = list(kiln.tasks.manager.jobs.values())[-1]
        report["objects_right_after_press"] = len([o for o in bpy.data.objects if o.get("kiln_latent")])
        self.t0 = time.monotonic()
        return 0.2

    def wait_edit(self):
        """Like wait_job, but a failed edit is recorded and the flow goes on."""
        if self.job is None:
            return 0.1
        if self.job.active:
            if time.monotonic() - self.t0 > args.timeout:
                raise TimeoutError(f"edit still {self.job.state} after {args.timeout} s")
            return -1
        if self.job.state != "done":
            report["edit"] = {"error": f"{self.job.state}: {self.job.message}"}
            self.job = None
            return 0.1
        report.setdefault("jobs", []).append({"label": self.job.label, "object": self.job.object_name,
                                              "seconds": round(time.monotonic() - self.t0, 2)})
        return 0.3

    def wait_job(self):
        if self.job.state == "running" and args.progress_screenshot and "progress_screenshot" not in report:
            report["progress_screenshot"] = args.progress_screenshot
            with bpy.context.temp_override(window=win(), screen=win().screen):
                bpy.ops.screen.screenshot(filepath=args.progress_screenshot)
        if self.job.active:
            if time.monotonic() - self.t0 > args.timeout:
                raise TimeoutError(f"job still {self.job.state} after {args.timeout} s")
            return -1
        assert self.job.state == "done", f"{self.job.state}: {self.job.message}"
        report.setdefault("jobs", []).append({"label": self.job.label, "object": self.job.object_name,
                                              "seconds": round(time.monotonic() - self.t0, 2)})
        return 0.3

    def undo_redo(self):
        name = self.job.object_name
        assert name in bpy.data.objects
        with override():
            bpy.ops.ed.undo()
        after_undo = name in bpy.data.objects
        with override():
            bpy.ops.ed.redo()
        after_redo = name in bpy.data.objects
        report["undo"] = {"object": name, "present_after_undo": after_undo, "present_after_redo": after_redo}
        return 0.3

    def second_asset(self):
        bpy.context.scene.cursor.location = (2.6, 0.8, 0.0)
        with override():
            bpy.ops.kiln.generate("INVOKE_DEFAULT", prompt="an orange mushroom", seed=5)
        self.job = list(kiln.tasks.manager.jobs.values())[-1]
        self.t0 = time.monotonic()
        return 0.2

    def press_edit(self):
        """Apply Edit on the chair from the panel's instruction (skipped without an edit model)."""
        if not kiln.tasks.manager.backend.model_available("edit"):
            report["edit"] = "skipped: no edit model"
            self.job = None
            return 0.1
        chair = bpy.data.objects[report["jobs"][0]["object"]]
        for o in bpy.context.view_layer.objects:
            o.select_set(False)
        chair.select_set(True)
        bpy.context.view_layer.objects.active = chair
        bpy.context.scene.kiln.instruction = "make it blue"
        self.edit_before = {"vertices": len(chair.data.vertices), "mesh": chair.data.name,
                            "latent": chair["kiln_latent"]}
        with override():
            assert bpy.ops.kiln.edit("INVOKE_DEFAULT") == {"FINISHED"}
        self.job = list(kiln.tasks.manager.jobs.values())[-1]
        self.t0 = time.monotonic()
        return 0.2

    def undo_redo_edit(self):
        if self.job is None:
            return 0.1
        name = report["jobs"][0]["object"]
        chair = bpy.data.objects[name]
        after = {"vertices": len(chair.data.vertices), "latent": chair["kiln_latent"]}
        assert chair.data.name == self.edit_before["mesh"] and after["latent"] != self.edit_before["latent"]
        with override():
            bpy.ops.ed.undo()
        undone = bpy.data.objects[name]
        undone_state = {"vertices": len(undone.data.vertices), "latent": undone["kiln_latent"]}
        with override():
            bpy.ops.ed.redo()
        redone = bpy.data.objects[name]
        report["edit"] = {"before": self.edit_before, "after": after, "after_undo": undone_state,
                          "after_redo": {"vertices": len(redone.data.vertices), "latent": redone["kiln_latent"]},
                          "instruction": redone.get("kiln_instruction")}
        return 0.3

    def pose_view(self):
        from mathutils import Euler, Vector

        area, _, _ = view3d()
        rv3d = area.spaces[0].region_3d
        rv3d.view_perspective = "PERSP"
        rv3d.view_rotation = Euler((math.radians(68), 0.0, math.radians(28)), "XYZ").to_quaternion()
        rv3d.view_location = Vector((1.3, 0.4, 0.75))
        rv3d.view_distance = 6.2
        chair = bpy.data.objects[report["jobs"][0]["object"]]
        for o in bpy.context.view_layer.objects:
            o.select_set(False)
        chair.select_set(True)
        bpy.context.view_layer.objects.active = chair
        bpy.context.scene.kiln.instruction = "make the back taller"
        stats = kiln.tasks.manager.tick_stats()
        report["timer"] = stats
        return 1.0  # let the window redraw

    def screenshot(self):
        os.makedirs(os.path.dirname(os.path.abspath(args.screenshot)), exist_ok=True)
        with bpy.context.temp_override(window=win(), screen=win().screen):
            bpy.ops.screen.screenshot(filepath=args.screenshot)
        report["screenshot"] = args.screenshot
        return 0.1

    def show_preferences(self):
        """Turn the 3D Viewport into Preferences > Add-ons > Kiln (expanded): its draw() runs
        for real (a Python error there would be printed)."""
        import addon_utils

        area, _, _ = view3d()
        area.type = "PREFERENCES"
        bpy.context.preferences.active_section = "ADDONS"
        bpy.context.window_manager.addon_search = "kiln"
        for mod in addon_utils.modules(refresh=False):  # the list the Add-ons page draws
            if mod.__name__ == "kiln":
                addon_utils.module_bl_info(mod)["show_expanded"] = True
        area.tag_redraw()
        return 1.0

    def preferences_screenshot(self):
        if args.prefs_screenshot:
            with bpy.context.temp_override(window=win(), screen=win().screen):
                bpy.ops.screen.screenshot(filepath=args.prefs_screenshot)
        report["preferences_shown"] = True
        return None


bpy.app.timers.register(Flow(), first_interval=1.0)
