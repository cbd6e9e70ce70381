"""Kiln: generate and edit 3D assets with a local model, from a sidebar tab in the 3D Viewport.

Works as a legacy add-on (Blender 3.4+) and as an extension (`bl_ext.<repo>.kiln`, Blender
4.2+): nothing here assumes the package name. Features live in their own modules; this
file only lists and registers the classes.
"""
bl_info = {
    "name": "Kiln",
    "author": "Kiln contributors",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "3D Viewport > Sidebar > Kiln",
    "description": "Generate and edit 3D assets from text with a local PyTorch backend",
    "category": "3D View",
}

if "bpy" in locals():  # F3 "Reload Scripts"
    import importlib

    for _m in (client, setup_backend, preferences, properties, importer, tasks, api, operators, panels):  # noqa: F821
        importlib.reload(_m)
else:
    from . import client, setup_backend, preferences, properties, importer, tasks, api, operators, panels  # noqa: F401

import bpy  # noqa: E402

classes = (
    *preferences.classes,
    *properties.classes,
    *operators.classes,
    *panels.classes,
)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    properties.register()
    tasks.register()
    operators.register()


def unregister():
    operators.unregister()
    tasks.unregister()
    properties.unregister()
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
