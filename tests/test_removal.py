"""Part removal: the part presence network, the field-space cut, a
held-out mug's handle removed with its body kept (and nothing removed for a part it lacks), and
the cut travelling with the latent file through a chain of edits."""
import numpy as np
import pytest
import torch

from backend.errors import JobError
from backend.results import load_cuts, load_latent, save_latent
from models.edit.composite import shown_field
from models.edit.pipeline import LatentEditor
from models.edit.presence import load_part_presence
from models.edit.removal import PartCut
from models.geometry import grid_points
from models.text.encoder import shared_encoder
from models.world.asset import Asset
from tests.backend_proc import BackendProcess
from tests.test_grounding import held_out_mug


def sphere_samples(centre, radius, n, seed):
    d = np.random.default_rng(seed).normal(size=(n, 3))
    return (np.asarray(centre) + radius * d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)


def two_spheres():
    """A body sphere at the origin with a small part sphere stuck to its side at x = 0.55."""
    body = sphere_samples((0, 0, 0), 0.5, 4000, 0)
    part = sphere_samples((0.55, 0, 0), 0.15, 800, 1)
    body = body[np.linalg.norm(body - (0.55, 0, 0), axis=1) > 0.15]
    part = part[np.linalg.norm(part, axis=1) > 0.5]

    def sdf(p):
        return np.minimum(np.linalg.norm(p, axis=1) - 0.5, np.linalg.norm(p - (0.55, 0, 0), axis=1) - 0.15)

    return body, part, sdf


def test_a_cut_empties_the_part_and_keeps_the_body():
    body, part, sdf = two_spheres()
    cut = PartCut(part, body)
    inside_part = np.array([[0.62, 0, 0], [0.6, 0.05, 0], [0.65, 0, 0.05]], np.float32)
    inside_body = np.array([[0, 0, 0], [0.3, 0.1, 0], [-0.45, 0, 0], [0.4, 0, 0.1]], np.float32)
    assert (sdf(inside_part) < 0).all() and (sdf(inside_body) < 0).all()
    assert (cut.apply(inside_part, sdf(inside_part)) > 0).all()           # the part is gone
    kept = cut.apply(inside_body, sdf(inside_body))
    assert (kept < 0).all()                                               # the body stays solid,
    assert kept[0] < -0.05                                                # its centre too (equidistant)
    assert np.allclose(kept[2], sdf(inside_body)[2])                      # its far side untouched
    far = np.array([[2.0, 2.0, 2.0], [-0.8, 0, 0]], np.float32)          # outside: only ever raised
    assert np.array_equal(cut.apply(far, sdf(far)), sdf(far))


def test_a_cut_scales_with_its_weight():
    body, part, sdf = two_spheres()
    p = np.array([[0.62, 0, 0]], np.float32)
    s = sdf(p).astype(np.float32)
    none, half, full = (PartCut(part, body, w).apply(p, s) for w in (0.0, 0.5, 1.0))
    assert np.array_equal(none, s) and s < half < full and full > 0


@pytest.fixture(scope="module")
def editor(autoencoder):
    return LatentEditor.load(autoencoder=autoencoder)


def handle_and_body_points(spec, field=None):
    """Grid points inside the mug, split into the handle's and the body's by the exact asset's part
    labels: inside the exact mug (a margin off its surface), or inside `field` (a decoded one)."""
    asset = Asset(spec)
    grid = grid_points(48)
    sdf = asset.query(grid, with_colour=False)[0] + 0.01 if field is None else field.sdf(grid)
    inside = grid[sdf < 0]
    label = asset.part_labels(inside)
    handle = label == list(asset.part_names).index("handle")
    return inside[handle], inside[~handle]


def test_removing_a_handle_empties_it_and_keeps_the_body(editor, autoencoder):
    spec, _, latent = held_out_mug(autoencoder)
    before = shown_field(autoencoder, latent, latent)
    handle, body = handle_and_body_points(spec, before)   # of the decoded mug
    assert len(handle) > 20
    edit = editor.edit(latent, "get rid of the handle", seed=0)   # a held-out phrasing
    assert edit.path == "grounded_removal" and edit.cut is not None and not edit.warnings
    after = shown_field(autoencoder, latent, edit.latent, cuts=[edit.cut])
    assert (after.sdf(handle) < 0).mean() < 0.1
    assert (after.sdf(body) < 0).mean() > 0.95
    # the result's edited share counts what the cut emptied, even where the latent did not move
    assert shown_field(autoencoder, latent, latent).share_edited()[0] == 0.0
    assert shown_field(autoencoder, latent, latent, cuts=[edit.cut]).share_edited()[0] > 0.0
    # strength 0 changes nothing and cuts nothing
    same = editor.edit(latent, "get rid of the handle", seed=0, strength=0.0)
    assert torch.equal(same.latent, latent) and same.cut is None
    # not a removal: the flow model's edit, no cut
    assert editor.edit(latent, "make it taller", seed=0).cut is None
    # a part the mug does not have: left exactly as it was, and said so (the grounding network
    # alone would mark something to cut)
    absent = editor.edit(latent, "remove the spoiler", seed=0)
    assert torch.equal(absent.latent, latent) and absent.cut is None
    assert any("does not seem to have the part" in w for w in absent.warnings), absent.warnings


def test_marks_the_network_doubts_are_not_cut(editor, autoencoder):
    """A part marked with a mean probability under `min_sure` is left to the flow model (a
    cut through doubted marks stops where the unmarked rest of the part begins); a mug's
    handle is marked surely enough to be cut."""
    from models.edit.removal import RemovalConfig, marked_part

    _, _, latent = held_out_mug(autoencoder)
    enc = shared_encoder().encode(["get rid of the handle"])
    g, cfg = editor.grounded, RemovalConfig()
    _, _, part = marked_part(g.ae, g.grounding, latent, enc.tokens, enc.mask, cfg, 0, cfg.min_sure)
    assert 0.002 < part.mean() < 0.2
    assert marked_part(g.ae, g.grounding, latent, enc.tokens, enc.mask, cfg, 0, min_sure=1.0) is None


def test_part_presence_knows_a_mug_has_a_handle_and_no_legs(autoencoder):
    _, _, latent = held_out_mug(autoencoder)
    texts = ["remove the handle", "get rid of the handle", "remove the legs", "remove the spoiler", "without the wheels"]
    p = load_part_presence().probability(latent.expand(len(texts), -1, -1, -1, -1),
                                         shared_encoder().encode(texts).pooled).numpy()
    assert (p[:2] > 0.5).all() and (p[2:] < 0.5).all(), dict(zip(texts, p.round(2)))


def test_cuts_round_trip_through_the_latent_file_and_damage_is_bad_input(tmp_path):
    body, part, _ = two_spheres()
    path = str(tmp_path / "latent.safetensors")
    z = torch.zeros(1, 3, 8, 16, 16)
    save_latent(path, z, {"op": "edit"}, reference=z, cuts=[PartCut(part, body, 0.75)])
    meta = load_latent(path)[1]
    (cut,) = load_cuts(path, meta)
    assert np.array_equal(cut.removed, part) and np.array_equal(cut.kept, body) and cut.weight == 0.75
    assert load_cuts(path, {"op": "edit"}) == []   # a file without cuts
    with pytest.raises(JobError, match="lacks the points of removed part 1") as err:
        load_cuts(path, {**meta, "cuts": meta["cuts"] * 2})
    assert err.value.code == "bad_input"


def test_a_removed_handle_stays_removed_through_a_chain_of_edits(tmp_path, autoencoder):
    """Over the protocol: remove a held-out mug's handle, then recolour it; both results lack the
    handle (the mug's extent along the handle's side shrinks and stays shrunk)."""
    spec, _, latent = held_out_mug(autoencoder)
    handle, body = handle_and_body_points(spec)
    start = str(tmp_path / "mug.safetensors")
    save_latent(start, latent, {"op": "generate"})
    proc = BackendProcess(str(tmp_path / "out"))
    try:
        extents = []
        asset = start
        for i, instruction in enumerate(("make it red", "remove the handle", "make it blue")):
            proc.send("edit", f"c{i}", asset=asset, instruction=instruction, resolution=64, preview=False)
            ev = proc.wait_for(f"c{i}", timeout=180)
            assert ev["event"] == "result", ev
            lo, hi = np.array(ev["mesh"]["bounds"])
            extents.append(hi - lo)
            asset = ev["latent"]
        meta = load_latent(asset)[1]
        assert meta["edits"] == ["make it red", "remove the handle"] and len(meta["cuts"]) == 1
        assert load_latent(ev["latent"])[1]["edit_path"] == "grounded_recolour"
    finally:
        proc.close()
    # the handle sticks out along the axis its points spread furthest from the mug's centre
    axis = int(np.argmax(np.abs(handle.mean(0) - body.mean(0))[:2]))
    assert extents[1][axis] < extents[0][axis] - 0.1, extents
    assert abs(extents[2][axis] - extents[1][axis]) < 0.05, extents
