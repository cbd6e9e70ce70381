"""Whole-asset resizes: the kind reader's resize head, the scaling and its fit in the cube, a
held-out asset resized along the way asked for any category, strength, and a removed part's cut
moving with a later resize."""
import numpy as np
import pytest
import torch

from models.edit.composite import shown_field
from models.edit.kinds import load_kind_reader
from models.edit.pipeline import LatentEditor
from models.edit.removal import PartCut, apply_cuts, carried_cuts
from models.edit.resize import Rescale, fitted, footprint_anchor, resize_factors
from models.geometry import grid_points
from models.text.encoder import shared_encoder
from tests.test_edit import procedural_latent

GRID = grid_points(48)


@pytest.fixture(scope="module")
def editor(autoencoder):
    return LatentEditor.load(autoencoder=autoencoder)


def extent(field):
    pts = GRID[field.sdf(GRID) < 0]
    return pts.max(0) - pts.min(0)


def test_the_resize_head_reads_held_out_phrasings():
    reader = load_kind_reader()
    asked = {"can you make it wider": "x_up", "it should be narrower": "x_down", "it should be taller": "z_up",
             "can you make it shorter": "z_down", "i want it bigger overall": "whole_up",
             "resize it to be smaller": "whole_down"}
    read = reader.resize(shared_encoder().encode(list(asked)).pooled)
    assert read == list(asked.values())


def test_factors_and_the_anchor():
    assert np.allclose(resize_factors("z_up"), (1, 1, 1.3))
    assert np.allclose(resize_factors("x_down"), (1 / 1.3, 1, 1))
    assert np.allclose(resize_factors("whole_down"), [1 / 1.25] * 3)
    assert np.allclose(resize_factors("whole_up", 0.5), [1.25 ** 0.5] * 3)
    assert np.allclose(resize_factors("z_up", 0.0), 1)
    with pytest.raises(ValueError):
        resize_factors("sideways")
    pts = np.array([[-0.2, -0.1, -0.8], [0.4, 0.3, 0.5]], np.float32)
    anchor = footprint_anchor(pts)
    assert np.allclose(anchor, (0.1, 0.1, -0.8))
    moved = Rescale((1, 1, 1.3), tuple(anchor)).apply(pts)
    assert np.allclose(moved[0], pts[0]) and np.isclose(moved[1, 2], -0.8 + 1.3 * 1.3)


def test_a_resize_that_would_leave_the_cube_goes_only_as_far_as_fits():
    pts = np.array([[-0.3, -0.3, -0.85], [0.3, 0.3, 0.6]], np.float32)
    r, shrunk = fitted(pts, Rescale((1, 1, 1.3), tuple(footprint_anchor(pts))))
    assert shrunk and 1.0 < r.factors[2] < 1.3 and np.abs(r.apply(pts)).max() <= 0.97 + 1e-5
    # a surface already at the limit (a decoded one can be) may still shrink, and is not "shrunk"
    edge = np.array([[-0.5, -0.5, -0.85], [0.9701, 0.5, 0.3]], np.float32)
    r, shrunk = fitted(edge, Rescale((1, 1, 1 / 1.3), tuple(footprint_anchor(edge))))
    assert not shrunk and np.isclose(r.factors[2], 1 / 1.3)


@pytest.mark.parametrize("category, instruction, axis, grows", [
    ("bottle", "it should be narrower", 0, False),   # a held-out (edit, category) combination
    ("mug", "it should be shorter", 2, False),       # a mug that touches the cube's limit
    ("car", "can you make it taller", 2, True),
])
def test_a_held_out_asset_is_resized_the_way_asked(editor, autoencoder, category, instruction, axis, grows):
    src = procedural_latent(autoencoder, category, "green")
    edit = editor.edit(src, instruction, seed=0)
    assert edit.path == "grounded_resize" and edit.rescale is not None and not edit.warnings
    before = extent(shown_field(autoencoder, src, src))
    after = extent(shown_field(autoencoder, src, edit.latent))
    ratio = after / before
    want = 1.3 if grows else 1 / 1.3
    assert abs(np.log(ratio[axis]) / np.log(want) - 1) < 0.35, ratio     # most of the way asked
    others = [a for a in range(3) if a != axis]
    assert np.all(np.abs(ratio[others] - 1) < 0.08), ratio                # the rest kept


def test_a_tall_lamp_made_taller_stops_at_the_cube_and_says_so(editor, autoencoder):
    src = procedural_latent(autoencoder, "lamp", "green")
    edit = editor.edit(src, "can you make it taller", seed=0)
    assert edit.path == "grounded_resize" and 1.0 < edit.rescale.factors[2] < 1.3
    assert any("only as far as it fits" in w for w in edit.warnings), edit.warnings
    occupied = GRID[shown_field(autoencoder, src, edit.latent).sdf(GRID) < 0]
    assert occupied[:, 2].max() > GRID[shown_field(autoencoder, src, src).sdf(GRID) < 0][:, 2].max()
    assert np.abs(occupied).max() < 1.0


def test_strength_takes_part_of_the_way_and_zero_none(editor, autoencoder):
    src = procedural_latent(autoencoder, "car", "yellow")
    assert torch.equal(editor.edit(src, "make it wider", seed=0, strength=0.0).latent, src)
    half = editor.edit(src, "make it wider", seed=0, strength=0.5)
    assert half.path == "grounded_resize" and np.isclose(half.rescale.factors[0], 1.3 ** 0.5)
    w = [extent(shown_field(autoencoder, src, e))[0] for e in
         (src, half.latent, editor.edit(src, "make it wider", seed=0).latent)]
    assert w[0] < w[1] < w[2], w


def test_a_cut_moves_with_a_later_resize():
    part = np.array([[0.5, 0.0, 0.0]], np.float32)
    body = np.array([[0.0, 0.0, 0.0]], np.float32)
    cut = PartCut(part, body)

    class Removal:
        rescale, cut = None, PartCut(part, body)

    class Widen:
        rescale, cut = Rescale((2.0, 1.0, 1.0), (0.0, 0.0, 0.0)), None

    cuts = carried_cuts(carried_cuts([], Removal), Widen)
    # kept where it was (the chain's first latent still has the part there) and moved with the asset
    assert len(cuts) == 2 and np.allclose(cuts[0].removed, part) and np.allclose(cuts[1].removed, [[1.0, 0, 0]])
    assert np.allclose(cuts[1].kept, body)
    # where the part now is, the moved cut empties; the cut in place empties the old place
    inside = np.array([[1.0, 0, 0], [0.5, 0, 0]], np.float32)
    s = np.full(2, -0.05, np.float32)
    moved = cuts[1].apply(inside, s)
    assert moved[0] > 0 and cut.apply(inside, s)[1] > 0 and moved[1] <= 0
    assert np.all(apply_cuts(inside, s, cuts) > 0)
    # an edit that does not move the asset carries the cuts as they are
    assert carried_cuts(cuts, Removal)[:2] == cuts
