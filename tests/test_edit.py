"""The shipped instruction-editing model: colour and size edits, preservation, strength,
seeds, chained edits, unsupported and empty instructions, and external meshes."""
import json
import os

import numpy as np
import pytest
import torch
import trimesh

from backend.protocol import read_kmesh
from models.data import coloured_cloud
from models.edit.composite import CompositeField, composite_mesh, mesh_surface, recoloured_mesh
from models.edit.data import PairKey, source_points
from models.edit.pipeline import EmptyInstructionError, LatentEditor
from models.geometry import grid_points
from models.meshio import load_mesh, normalise, sdf_samples
from models.text.pipeline import nearest_colour_share
from models.triplane.inference import (
    LatentField,
    encode_cloud,
    encode_source_mesh,
    latent_to_mesh,
)
from models.world.asset import Asset, sample_asset_spec
from tests.backend_proc import BackendProcess

GRID = grid_points(48)


@pytest.fixture(scope="module")
def editor():
    return LatentEditor.load()


def procedural_latent(autoencoder, category: str, colour: str):
    """A held-out (test-stream) asset of a category, recoloured, encoded like training sources."""
    index = next(i for i in range(5000, 5200) if sample_asset_spec("test", i).category == category)
    spec = sample_asset_spec("test", index)
    spec.colours = {p: colour for p in spec.parts()}
    spec.patterns = {}
    pts = source_points(spec, PairKey("test", index, 0))
    return encode_cloud(autoencoder, coloured_cloud(Asset(spec), pts))


def occupancy(autoencoder, latent):
    return LatentField(autoencoder, latent).sdf(GRID) < 0


def iou(a, b):
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


def extent(occ):
    pts = GRID[occ]
    return pts.max(0) - pts.min(0)


def main_colour(autoencoder, latent):
    share = nearest_colour_share(latent_to_mesh(autoencoder, latent, 64).colors)
    return max(share, key=share.get), share


def test_make_it_blue_recolours_and_keeps_the_shape(editor, autoencoder):
    src = procedural_latent(autoencoder, "chair", "red")
    assert main_colour(autoencoder, src)[0] == "red"
    out, warnings = editor.edit_latent(src, "make it blue", seed=0)
    colour, share = main_colour(autoencoder, out)
    assert not warnings
    assert colour == "blue", share
    # calibrated floor: the shipped model keeps 0.76 of this chair's occupancy (thin legs
    # are where it loses shape; see models/cards/edit.md); an edit that ignores the source
    # or rebuilds the asset lands far below
    assert iou(occupancy(autoencoder, src), occupancy(autoencoder, out)) > 0.7


def test_composite_keeps_the_shape_a_recolour_did_not_change(editor, autoencoder):
    """The backend meshes an edit composited over its source (models/edit/composite.py): the
    recolour's shape drift is gone, the new colour and a resize's growth are kept."""
    src = procedural_latent(autoencoder, "chair", "red")
    out, _ = editor.edit_latent(src, "make it blue", seed=0)
    assert editor.path("make it blue") == "grounded_recolour"
    kept = iou(occupancy(autoencoder, src), CompositeField(autoencoder, src, out).sdf(GRID) < 0)
    latent_only = iou(occupancy(autoencoder, src), occupancy(autoencoder, out))
    # measured 0.88 for the edited latent's own decoding (its legs move) and 0.94 composited
    assert kept > 0.9 and kept > latent_only + 0.03, (kept, latent_only)
    # as the backend shows a recolour: the reference's shape, exactly, in the new colour
    shown = CompositeField(autoencoder, src, out, keep_shape=True)
    assert np.array_equal(shown.sdf(GRID), LatentField(autoencoder, src).sdf(GRID))
    mesh, _ = composite_mesh(autoencoder, src, out, 64, keep_shape=True)
    share = nearest_colour_share(mesh.colors)
    assert max(share, key=share.get) == "blue", share

    vase = procedural_latent(autoencoder, "vase", "green")
    taller, _ = editor.edit_latent(vase, "make it taller", seed=0)
    e_src = extent(occupancy(autoencoder, vase))
    e_out = extent(CompositeField(autoencoder, vase, taller).sdf(GRID) < 0)
    assert e_out[2] > 1.12 * e_src[2], (e_src, e_out)
    # no edit: the source, exactly
    same, _ = editor.edit_latent(vase, "make it taller", seed=0, strength=0.0)
    assert np.array_equal(CompositeField(autoencoder, vase, same).sdf(GRID), LatentField(autoencoder, vase).sdf(GRID))


def test_an_edit_of_a_user_mesh_keeps_the_mesh_where_it_did_not_act(editor, autoencoder):
    """Suzanne (open, separate eyes) recoloured: shown over the mesh itself it keeps the mesh's
    shape; the fitted latent alone loses some of it."""
    src = normalise(load_mesh(os.path.join(os.path.dirname(__file__), "data", "suzanne_blender.obj")), "z")
    pts, sdf, _ = sdf_samples(src, 0, 60_000, np.random.default_rng(1))
    z, _ = encode_source_mesh(autoencoder, src, fit_steps=60, seed=0)
    red, _ = editor.edit_latent(z, "make it red", seed=0)
    shown = CompositeField(autoencoder, z, red, surface=mesh_surface(src))
    kept = iou(shown.sdf(pts) < 0, sdf < 0)
    fitted_only = iou(LatentField(autoencoder, red).sdf(pts) < 0, sdf < 0)
    # measured 0.96 against 0.80
    assert kept > 0.92 and kept > fitted_only + 0.1, (kept, fitted_only)
    mesh, _ = composite_mesh(autoencoder, z, red, 64, surface=mesh_surface(src))
    share = nearest_colour_share(mesh.colors)
    assert max(share, key=share.get) == "red", share
    # as the backend returns a recolour of a user's mesh: Suzanne's own triangles, recoloured
    own = recoloured_mesh(CompositeField(autoencoder, z, red, surface=mesh_surface(src), keep_shape=True), src)
    assert np.array_equal(own.faces, src.faces) and np.array_equal(own.vertices, src.vertices.astype(np.float32))
    share = nearest_colour_share(own.colors)
    assert max(share, key=share.get) == "red" and share["red"] > 0.8, share


@pytest.mark.parametrize("grounded", [False, True])
def test_make_it_taller_grows_height_and_keeps_width(editor, autoencoder, grounded):
    """The flow model itself (grounded=False) and the default path (a grounded resize)."""
    src = procedural_latent(autoencoder, "vase", "green")
    edit = editor.edit(src, "make it taller", seed=0, grounded=grounded)
    assert edit.path == ("grounded_resize" if grounded else "flow")
    e_src, e_out = extent(occupancy(autoencoder, src)), extent(occupancy(autoencoder, edit.latent))
    assert e_out[2] > 1.12 * e_src[2], (e_src, e_out)
    assert abs(e_out[0] / e_src[0] - 1) < 0.08, (e_src, e_out)


@pytest.mark.parametrize("instruction, grows", [("it should be taller", True), ("can you make it shorter", False)])
def test_held_out_phrasings_of_a_resize_work(editor, autoencoder, instruction, grows):
    """Templates never seen in training (models/world/edits.py, 'heldout')."""
    src = procedural_latent(autoencoder, "vase", "green")
    out, warnings = editor.edit_latent(src, instruction, seed=0)
    e_src, e_out = extent(occupancy(autoencoder, src)), extent(occupancy(autoencoder, out))
    ratio = e_out[2] / e_src[2]
    assert not warnings
    assert (ratio > 1.12) if grows else (ratio < 0.9), (e_src, e_out)
    assert abs(e_out[0] / e_src[0] - 1) < 0.1, (e_src, e_out)


def test_strength_scales_the_edit_and_zero_returns_the_source(editor, autoencoder):
    """The flow model's delta scales linearly (grounded edits are encoded instead:
    tests/test_grounding.py, tests/test_resize.py)."""
    src = procedural_latent(autoencoder, "car", "yellow")
    same, _ = editor.edit_latent(src, "make it wider", seed=0, strength=0.0)
    assert torch.equal(same, src)
    half, _ = editor.edit_latent(src, "make it wider", seed=0, strength=0.5, grounded=False)
    full, _ = editor.edit_latent(src, "make it wider", seed=0, strength=1.0, grounded=False)
    assert not torch.equal(full, src)
    assert torch.allclose(half - src, 0.5 * (full - src), atol=1e-5)


def test_same_seed_same_edit(editor, autoencoder):
    src = procedural_latent(autoencoder, "table", "brown")
    a, _ = editor.edit_latent(src, "make the legs longer", seed=3)
    b, _ = editor.edit_latent(src, "make the legs longer", seed=3)
    assert torch.equal(a, b)


def test_chained_edits_come_back_to_the_source_shape(editor, autoencoder):
    src = procedural_latent(autoencoder, "bottle", "blue")
    z = src
    for i, instruction in enumerate(("make it red", "make it taller", "make it green", "make it shorter", "make it blue")):
        z, _ = editor.edit_latent(z, instruction, seed=i)
    assert main_colour(autoencoder, z)[0] == "blue"
    # measured 0.86 (0.85 with the change gate ignored; the 8-step model before it: 0.73); a chain
    # that rebuilt the asset each step lands far lower
    assert iou(occupancy(autoencoder, src), occupancy(autoencoder, z)) > 0.8


def test_empty_instruction_is_a_clear_error(editor, autoencoder):
    src = procedural_latent(autoencoder, "mug", "white")
    for text in ("", "  \n"):
        with pytest.raises(EmptyInstructionError, match="empty"):
            editor.edit_latent(src, text)


def test_unsupported_instruction_warns_and_does_no_damage(editor, autoencoder):
    src = procedural_latent(autoencoder, "lamp", "orange")
    out, warnings = editor.edit_latent(src, "asdfgh qwerty zxcv", seed=0)
    assert warnings and "supported edits look like" in warnings[0]
    assert iou(occupancy(autoencoder, src), occupancy(autoencoder, out)) > 0.9


def test_edit_any_mesh_over_the_protocol_in_its_own_frame(tmp_path):
    """A box far from the origin, 3 units wide: the edit comes back in that frame and scale."""
    box = trimesh.creation.box(extents=(3.0, 2.0, 1.0))
    box.apply_translation((10.0, -4.0, 2.5))
    path = tmp_path / "box.obj"
    box.export(path)
    proc = BackendProcess(str(tmp_path / "out"))
    try:
        proc.send("edit", "e1", mesh=str(path), instruction="make it taller", fit_steps=40, resolution=64, preview=False)
        ev = proc.wait_for("e1", timeout=180)
        assert ev["event"] == "result", ev
        lo, hi = np.array(ev["mesh"]["bounds"])
        assert np.allclose((lo + hi)[:2] / 2, (10.0, -4.0), atol=0.3)    # still centred where it was
        assert abs(lo[2] - 2.0) < 0.25                                     # still standing on its base
        assert hi[2] - lo[2] > 1.1 * 1.0 and 2.5 < hi[0] - lo[0] < 3.5     # taller, same width
        assert 0.5 < ev["fit_iou"] <= 1.0
        with open(ev["latent"], "rb"):
            pass
        # chain: the edit's latent is itself editable, and stays in the box's frame
        proc.send("edit", "e2", asset=ev["latent"], instruction="make it red", resolution=64, preview=False)
        ev2 = proc.wait_for("e2", timeout=120)
        assert ev2["event"] == "result", ev2
        lo2, hi2 = np.array(ev2["mesh"]["bounds"])
        assert np.allclose(lo2, lo, atol=0.3) and np.allclose(hi2, hi, atol=0.3)
        from backend.results import load_latent, load_latent_with_reference

        meta = load_latent(ev2["latent"])[1]
        # both results are shown over the box itself; the chain carries the fitted latent along
        # as the reference the edits are measured against
        edited1, ref1, _ = load_latent_with_reference(ev["latent"])
        _, ref2, _ = load_latent_with_reference(ev2["latent"])
        assert ref1 is not None and torch.equal(ref1, ref2) and not torch.equal(edited1, ref1)
        assert meta["shown_over"] == "source_mesh" and not ev2["warnings"]
        # the source mesh changed on disk: the chain goes on over the fitted latent, and says so
        box.apply_scale(0.5)
        box.export(path)
        proc.send("edit", "e5", asset=ev2["latent"], instruction="make it blue", resolution=64, preview=False)
        ev5 = proc.wait_for("e5", timeout=120)
        assert ev5["event"] == "result" and "missing or has changed" in ev5["warnings"][0], ev5
        assert load_latent(ev5["latent"])[1]["shown_over"] == "reference_latent"
        assert meta["edits"] == ["make it taller"] and meta["instruction"] == "make it red"
        # which path made each edit: the decoded surface scaled, the grounding network recoloured
        assert load_latent(ev["latent"])[1]["edit_path"] == "grounded_resize"
        assert meta["edit_path"] == "grounded_recolour"
        # a recolour after a resize shows the resized shape: only a chain of recolours keeps the
        # reference's shape outright
        assert load_latent(ev["latent"])[1]["shape_kept"] is False and meta["shape_kept"] is False
        proc.send("edit", "e6", mesh=str(path), instruction="paint it green", resolution=64, preview=False)
        ev6 = proc.wait_for("e6", timeout=120)
        assert ev6["event"] == "result" and load_latent(ev6["latent"])[1]["shape_kept"] is True, ev6
        # a recolour of a user's mesh returns the mesh itself: its 8 corners and 12 triangles, in place, green
        assert (ev6["mesh"]["vertices"], ev6["mesh"]["faces"]) == (8, 12), ev6["mesh"]
        assert np.allclose(ev6["mesh"]["bounds"], box.bounds, atol=1e-3), (ev6["mesh"]["bounds"], box.bounds)
        rgb = np.asarray(read_kmesh(ev6["mesh_file"])["colours"]).reshape(-1, 4)[:, :3]
        assert (rgb[:, 1] > rgb[:, [0, 2]].max(1) + 0.1).all(), rgb
        assert meta["source_mesh"] == str(path)
        # a fitted mesh's edits keep all its parts (no floater clean-up), both from the mesh and its latent
        assert meta["min_part"] == 0 and load_latent(ev["latent"])[1]["min_part"] == 0
        # errors: a missing latent, an empty instruction
        proc.send("edit", "e3", asset=str(tmp_path / "nope.safetensors"), instruction="make it blue")
        assert proc.wait_for("e3")["code"] == "not_found"
        proc.send("edit", "e4", asset=ev["latent"], instruction="   ")
        assert proc.wait_for("e4")["code"] == "bad_request"
    finally:
        proc.close()
    assert json.loads(json.dumps(ev))  # the event is plain JSON
    assert os.path.exists(ev2["glb"])
