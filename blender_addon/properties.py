"""The panel's settings, per scene (so a .blend remembers its prompt, seed and edit text)."""
from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, EnumProperty, FloatProperty, FloatVectorProperty, IntProperty, PointerProperty,
                       StringProperty)

MODE_ITEMS = (
    ("text", "Text", "Generate from a text prompt"),
    ("images", "Images", "Generate from a front image and an optional back image"),
)
RESOLUTION_ITEMS = (
    ("DEFAULT", "Default Resolution", "The default resolution from the add-on preferences"),
    ("64", "64³ Draft", "Fast, coarse mesh"),
    ("128", "128³ Standard", "Standard detail"),
    ("256", "256³ Fine", "Finest mesh: slower and heavier"),
)
MAX_SEED = 2**31 - 1
REFINE_DESCRIPTION = "Optimise the result against the image(s) for a few seconds (GTR-style)"
FLOATERS_DESCRIPTION = ("Drop small parts that float apart from the generated asset (sampling artefacts); "
                        "edits of your own meshes always keep every part")
TRIES_DESCRIPTION = ("Samples tried for the prompt: the first in one piece is kept (a sample whose legs or "
                     "back came apart is replaced). 1: exactly the seed's own sample")
REBUILD_DESCRIPTION = ("When every try is in pieces, rebuild the sample whole with the image model from its "
                       "front and back views (off: keep the pieces)")
DEFAULT_TRIES = 4  # models/text/candidates.py CandidateConfig.candidates (no torch in Blender)
MAX_TRIES = 16     # the protocol's limit (backend/protocol.py)
DEFAULT_REFINE_STEPS = 10  # models/images/pipeline.py DEFAULT_REFINE_STEPS (no torch in Blender)
MAX_REFINE_STEPS = 200  # the protocol's limit (backend/protocol.py)


class KILN_PG_settings(bpy.types.PropertyGroup):
    mode: EnumProperty(name="Mode", items=MODE_ITEMS, default="text")
    prompt: StringProperty(name="Prompt", default="",
                           description="What to make, e.g. 'a red chair with a tall back'")
    front_image: StringProperty(name="Front", subtype="FILE_PATH", default="",
                                description="Image of the object seen from the front (-Y)")
    back_image: StringProperty(name="Back", subtype="FILE_PATH", default="",
                               description="Optional image of the object seen from the back")
    refine: BoolProperty(name="Refine", default=False, description=REFINE_DESCRIPTION)
    refine_steps: IntProperty(name="Refine Steps", default=DEFAULT_REFINE_STEPS, min=1, max=MAX_REFINE_STEPS,
                              description="Optimisation steps: more fit the image(s) closer and take longer")
    seed: IntProperty(name="Seed", default=0, min=0, max=MAX_SEED,
                      description="Picks one of the many assets that fit the prompt")
    tries: IntProperty(name="Tries", default=DEFAULT_TRIES, min=1, max=MAX_TRIES, description=TRIES_DESCRIPTION)
    rebuild: BoolProperty(name="Rebuild Pieces", default=True, description=REBUILD_DESCRIPTION)
    resolution: EnumProperty(name="Resolution", items=RESOLUTION_ITEMS, default="DEFAULT",
                             description="Marching-cubes grid of the mesh")
    instruction: StringProperty(name="Instruction", default="",
                                description="What to change, e.g. 'make it blue', 'make the legs longer' "
                                            "or 'give it six legs'")
    strength: FloatProperty(name="Strength", default=1.0, min=0.0, max=1.0, subtype="FACTOR",
                            description="How far the edit moves the asset (0: unchanged, 1: full edit)")
    edit_seed: IntProperty(name="Edit Seed", default=0, min=0, max=MAX_SEED)
    edit_colour: FloatVectorProperty(name="Colour", subtype="COLOR_GAMMA", size=3, min=0.0, max=1.0,
                                     default=(0.85, 0.23, 0.12),
                                     description="An exact colour for the instruction: Insert Colour writes it "
                                                 "as a hex code, which the edit paints as it is")
    remove_floaters: BoolProperty(name="Remove Floaters", default=True, description=FLOATERS_DESCRIPTION)


classes = (KILN_PG_settings,)


def register() -> None:
    bpy.types.Scene.kiln = PointerProperty(type=KILN_PG_settings)
    # the running job's progress, for Blender < 4.0 (no layout.progress); not saved in files
    bpy.types.WindowManager.kiln_progress = FloatProperty(name="Progress", min=0.0, max=100.0, default=0.0,
                                                          subtype="PERCENTAGE", precision=0, options={"SKIP_SAVE"})


def unregister() -> None:
    del bpy.types.WindowManager.kiln_progress
    del bpy.types.Scene.kiln
