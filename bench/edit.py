"""Instruction editing latency: a warm edit of a latent -> coloured mesh at 128^3, split into
instruction encoding, the flow step (or, for a recolour, the grounded recolour: surface samples,
grounding, two encoder passes; for a part removal, surface samples, grounding, two encoder
passes, and the cut read where the mesh is searched; for a whole-asset resize, surface samples
and two encoder passes; for a part resize or a count change, surface samples, grounding and two
encoder passes),
and the mesh: composited over the source as the backend
does it (change masks on a grid, the edited field read where it is shown), against the edited
latent's own mesh (`mesh_128_latent_only`); and the edit of a
~50k-face external mesh including reading, normalising, fitting a latent (60 steps) and
showing the edit over the mesh itself, as the backend does.
Reference in the same process: the warm text -> mesh job, so the ratio says what an edit
costs relative to a generation. Peak memory.

    .venv/bin/python bench/edit.py [--device auto]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch
import trimesh

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import report, timeit  # noqa: E402
from models.device import pick_device  # noqa: E402
from models.edit.composite import (  # noqa: E402
    CompositeConfig,
    CompositeField,
    composite_mesh,
    mesh_surface,
)
from models.edit.pipeline import DEFAULT_STEPS, LatentEditor  # noqa: E402
from models.meshio import load_mesh, normalise  # noqa: E402
from models.text.pipeline import TextToAsset  # noqa: E402
from models.triplane.inference import encode_source_mesh, latent_to_mesh  # noqa: E402
from models.triplane.loading import load_autoencoder  # noqa: E402

INSTRUCTION = "add armrests"          # the flow model (adding parts)
PART_RESIZE = "make the legs longer"  # the grounded part resize path (models/edit/part_resize.py)
RECOLOUR = "make the seat blue"  # the grounded recolour path (models/edit/recolour.py)
REMOVAL = "remove the back"      # the grounded removal path (models/edit/removal.py)
RESIZE = "make it wider"         # the grounded resize path (models/edit/resize.py)
RECOUNT = "give it six legs"     # the grounded count change (models/edit/recount.py)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = pick_device(args.device)
    t = time.perf_counter()
    ae = load_autoencoder(device=device)
    editor = LatentEditor.load(device=device, autoencoder=ae)
    out = {"device": str(device), "threads": torch.get_num_threads(), "cold_load_s": round(time.perf_counter() - t, 3)}
    gen = TextToAsset.load(device=device)
    latent, _ = gen.generate_latent("a red chair with four legs", seed=0)
    out["instruction_encode"] = timeit(lambda: editor.encoder.encode([INSTRUCTION]))
    out[f"edit_latent_{DEFAULT_STEPS}_steps"] = timeit(lambda: editor.edit_latent(latent, INSTRUCTION, seed=0))
    first = editor.edit(latent, INSTRUCTION, seed=0)
    assert first.path == "flow", first.path
    edited = first.latent
    out["mesh_128_latent_only"] = timeit(lambda: latent_to_mesh(ae, edited, 128))
    out[f"change_masks_{CompositeConfig().resolution}"] = timeit(lambda: CompositeField(ae, latent, edited))
    out["mesh_128_composited"] = timeit(lambda: composite_mesh(ae, latent, edited, 128))
    edit_job = timeit(lambda: composite_mesh(ae, latent, editor.edit_latent(latent, INSTRUCTION, seed=1)[0], 128))
    text_job = timeit(lambda: latent_to_mesh(ae, gen.generate_latent("a red chair", seed=1)[0], 128))
    out["warm_edit_to_mesh_128"] = edit_job
    out["grounded_recolour_latent"] = timeit(lambda: editor.edit_latent(latent, RECOLOUR, seed=0))
    out["warm_recolour_to_mesh_128"] = timeit(   # as the backend shows a recolour: the source's shape
        lambda: composite_mesh(ae, latent, editor.edit_latent(latent, RECOLOUR, seed=1)[0], 128, keep_shape=True))

    def grounded_to_mesh(instruction: str, path: str):
        """The edit by its grounded path, meshed over the source with its cut, as the backend does."""
        e = editor.edit(latent, instruction, seed=1)
        assert e.path == path, e.path
        return composite_mesh(ae, latent, e.latent, 128, cuts=[e.cut] if e.cut is not None else ())

    for name, instruction in (("removal", REMOVAL), ("resize", RESIZE), ("part_resize", PART_RESIZE),
                              ("recount", RECOUNT)):
        out[f"grounded_{name}_latent"] = timeit(lambda i=instruction: editor.edit(latent, i, seed=0))
        out[f"warm_{name}_to_mesh_128"] = timeit(lambda i=instruction, p=f"grounded_{name}": grounded_to_mesh(i, p))
    out["reference_warm_text_to_mesh_128"] = text_job
    out["edit_vs_text_ratio"] = round(edit_job["median_s"] / text_job["median_s"], 2)

    # an external mesh of ~50k faces, in its own frame and scale
    mesh = trimesh.creation.capsule(height=3.0, radius=1.0, count=[160, 160])
    mesh.apply_translation([4.0, -2.0, 1.5])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "capsule.obj")
        mesh.export(path)
        out["external_mesh_faces"] = int(len(mesh.faces))

        def external_edit():
            src = normalise(load_mesh(path), "z")
            z, _ = encode_source_mesh(ae, src, fit_steps=60)
            e, _ = editor.edit_latent(z, "make it taller", seed=0)
            m, _ = composite_mesh(ae, z, e, 128, surface=mesh_surface(src))
            m.vertices = src.normalisation.to_original_z_up(m.vertices)
            return m

        out["external_50k_edit_incl_fit_60_steps"] = timeit(external_edit, repeat=3)
    report(out, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
