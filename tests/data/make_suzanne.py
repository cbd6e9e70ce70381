# Regenerates suzanne_blender.obj: blender -b --factory-startup -P tests/data/make_suzanne.py -- tests/data/suzanne_blender.obj
import bpy, sys
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.mesh.primitive_monkey_add(size=1.0)
obj = bpy.context.active_object
mod = obj.modifiers.new("sub", "SUBSURF"); mod.levels = 1
bpy.ops.object.modifier_apply(modifier="sub")
out = sys.argv[sys.argv.index("--") + 1]
bpy.ops.wm.obj_export(filepath=out, export_triangulated_mesh=True, forward_axis="Y", up_axis="Z",
                      export_materials=False, export_uv=False, export_normals=False)
