"""Count changes: the ring and rows layouts of a repeated part's pieces laid out again for another
count, the count head on held-out phrasings, and held-out assets recounted through the editor."""
import numpy as np
import pytest

from models.edit.composite import shown_field
from models.edit.kinds import load_kind_reader
from models.edit.pipeline import LatentEditor
from models.edit.recount import (
    PieceMove,
    RecountConfig,
    piece_labels,
    recount_layout,
    recounted_clouds,
)
from models.geometry import grid_points
from models.world.asset import Asset, sample_asset_spec
from models.text.encoder import shared_encoder
from tests.test_edit import procedural_latent

CFG = RecountConfig()


def blob(centre, n=80, size=0.03, seed=0):
    rng = np.random.default_rng(seed)
    return (np.asarray(centre, np.float32) + rng.uniform(-size, size, (n, 3))).astype(np.float32)


def body(n=400):
    """Samples of a vertical cylinder of radius 0.2 about the Z axis: what the pieces hang on."""
    t, z = np.linspace(0, 2 * np.pi, n), np.linspace(-0.8, 0.2, n)
    return np.stack([0.2 * np.cos(t), 0.2 * np.sin(t), z], 1).astype(np.float32)


def with_pieces(centres):
    rest = body()
    parts = [blob(c, seed=i) for i, c in enumerate(centres)]
    pts = np.concatenate([rest, *parts])
    part = np.zeros(len(pts), bool)
    part[len(rest):] = True
    return pts, part


def ring(n, phase_deg=90, radius=0.35, z=-0.7):
    a = np.deg2rad(phase_deg) + 2 * np.pi * np.arange(n) / n
    return [(radius * np.cos(t), radius * np.sin(t), z) for t in a]


def new_centres(pts, piece, layout):
    centre = {i: pts[piece == i].mean(0) for i in range(piece.max() + 1)}
    out = [centre[i] for i in layout.kept]
    out += [move.apply(pts[piece == i]).mean(0) for i, move in layout.copies]
    return np.array(out)


def angles_deg(centres):
    return np.sort(np.round(np.rad2deg(np.arctan2(centres[:, 1], centres[:, 0])) % 360).astype(int) % 360)


@pytest.mark.parametrize("before, after, angles", [
    (3, 4, [0, 90, 180, 270]),     # the fin at the back (+Y) stays, three turned copies of it
    (4, 3, [90, 210, 330]),        # the ring kept mirror-symmetric left to right, the back fin kept
    (3, 6, [30, 90, 150, 210, 270, 330]),
])
def test_a_ring_is_laid_out_again_about_the_axis(before, after, angles):
    pts, part = with_pieces(ring(before))
    piece = piece_labels(pts, part, CFG)
    assert piece.max() + 1 == before
    layout = recount_layout(pts, piece, after, CFG)
    assert layout is not None and layout.kind == "ring"
    got = new_centres(pts, piece, layout)
    assert len(got) == after
    assert np.abs(angles_deg(got) - angles).max() <= 2, angles_deg(got)
    assert np.allclose(np.linalg.norm(got[:, :2], axis=1), 0.35, atol=0.01)   # on the same circle
    assert np.allclose(got[:, 2], -0.7, atol=0.01)


def test_a_stool_ring_keeps_its_symmetric_layout():
    pts, part = with_pieces(ring(4, phase_deg=45))
    piece = piece_labels(pts, part, CFG)
    got = new_centres(pts, piece, recount_layout(pts, piece, 3, CFG))
    assert len(got) == 3 and sorted(angles_deg(got).tolist()) == [45, 165, 285]


@pytest.mark.parametrize("off_deg", [-1.5, -0.5, 0.5, 1.5])
def test_the_back_piece_is_kept_when_read_a_degree_off(off_deg):
    """Pieces' centres are read from decoded samples a degree or two off; the back fin is still
    the one kept (a rocket's 4 -> 3 fins read 90.4 degrees at the back and -90.3 at the front
    once picked the front fin)."""
    centres = ring(4)
    turn = np.deg2rad(off_deg)
    x, y, z = centres[0]
    centres[0] = (x * np.cos(turn) - y * np.sin(turn), x * np.sin(turn) + y * np.cos(turn), z)
    pts, part = with_pieces(centres)
    piece = piece_labels(pts, part, CFG)
    got = new_centres(pts, piece, recount_layout(pts, piece, 3, CFG))
    assert np.abs(angles_deg(got) - np.array([90, 210, 330]) - round(off_deg)).max() <= 2, angles_deg(got)


def test_a_stray_mark_beside_the_pieces_is_not_one_of_them():
    """A repeated part's pieces are copies; a small group the grounding network also marks (a
    rocket's body beside its back fin) is not counted, and three fins still make a ring of four."""
    pts, part = with_pieces(ring(3))
    stray = blob((0.0, 0.22, -0.5), n=20, size=0.02, seed=9)
    pts, part = np.concatenate([pts, stray]), np.concatenate([part, np.ones(len(stray), bool)])
    piece = piece_labels(pts, part, CFG)
    assert piece.max() + 1 == 3 and (piece[-len(stray):] == -1).all()
    layout = recount_layout(pts, piece, 4, CFG)
    assert layout is not None and layout.kind == "ring" and len(layout.copies) == 3


def grid(columns, rows=(-0.25, 0.25), span=(-0.5, 0.5), z=-0.6):
    return [(x, y, z) for x in np.linspace(*span, columns) for y in rows]


@pytest.mark.parametrize("before, after", [(2, 3), (3, 2), (2, 4)])
def test_rows_keep_their_ends_and_spread_evenly(before, after):
    pts, part = with_pieces(grid(before))
    piece = piece_labels(pts, part, CFG)
    layout = recount_layout(pts, piece, 2 * after, CFG)
    assert layout is not None and layout.kind == "rows"
    got = new_centres(pts, piece, layout)
    want = np.array(grid(after))
    assert len(got) == len(want)
    dist = np.linalg.norm(got[:, None] - want[None], axis=-1)
    assert dist.min(1).max() < 0.02 and dist.min(0).max() < 0.02
    # the end pieces are the source's own, not copies
    assert len(layout.kept) >= 4


def test_touching_copies_are_split_and_rows_cut_to_their_ends():
    """A six-wheeled car: each side's middle wheel sits 0.06 behind its back wheel, so the two read
    as one piece twice as long and twice as many samples. Split, the car has six wheels in two
    uneven rows, and four keeps each row's end wheels (no copies, the middle ones dropped)."""
    wheels = [(x, y, -0.7) for x in (-0.3, 0.3) for y in (-0.5, 0.25, 0.31)]
    pts, part = with_pieces(wheels)
    assert part_pieces_joined(pts, part) == 4          # joined before splitting
    piece = piece_labels(pts, part, CFG)
    assert piece.max() + 1 == 6
    layout = recount_layout(pts, piece, 4, CFG)
    assert layout is not None and layout.kind == "rows" and not layout.copies
    kept_y = sorted(round(float(pts[piece == i, 1].mean()), 1) for i in layout.kept)
    assert kept_y == [-0.5, -0.5, 0.3, 0.3], kept_y


def part_pieces_joined(pts, part):
    from models.edit.part_resize import part_pieces
    return int(part_pieces(pts, part, CFG.link, CFG.min_piece, CFG.min_copy).max()) + 1


def test_turned_copies_are_not_split():
    """A ring's fins point different ways; one marked with twice the samples is still one fin:
    lengths are compared in each piece's own frame."""
    rng = np.random.default_rng(3)
    rest = body()
    fins = []
    for k, t in enumerate(np.deg2rad([90, 210, 330])):
        n = 240 if k == 1 else 120
        radial, tangential = rng.uniform(0.22, 0.42, n), rng.uniform(-0.01, 0.01, n)
        fins.append(np.stack([radial * np.cos(t) - tangential * np.sin(t), radial * np.sin(t) + tangential * np.cos(t),
                              rng.uniform(-0.75, -0.65, n)], 1).astype(np.float32))
    pts = np.concatenate([rest, *fins])
    part = np.r_[np.zeros(len(rest), bool), np.ones(len(pts) - len(rest), bool)]
    assert piece_labels(pts, part, CFG).max() + 1 == 3


def test_the_dropped_pieces_and_the_new_cloud():
    pts, part = with_pieces(ring(4))
    rgb = np.tile(np.float32([[0.2, 0.4, 0.6]]), (len(pts), 1))
    piece = piece_labels(pts, part, CFG)
    layout = recount_layout(pts, piece, 3, CFG)
    cloud, dropped = recounted_clouds(pts, rgb, piece, layout)
    per_piece = np.bincount(piece[piece >= 0])
    assert len(dropped) == per_piece.sum() - per_piece[layout.kept].sum()        # three of the four pieces
    assert len(cloud) == len(pts) - len(dropped) + sum(per_piece[i] for i, _ in layout.copies)
    assert np.allclose(cloud[:, 3:], rgb[0])                                     # copies keep their colours


@pytest.mark.parametrize("centres", [ring(4), grid(2)])
def test_the_count_a_layout_already_has_keeps_every_piece(centres):
    pts, part = with_pieces(centres)
    layout = recount_layout(pts, piece_labels(pts, part, CFG), 4, CFG)
    assert not layout.copies and sorted(layout.kept) == [0, 1, 2, 3]


@pytest.mark.parametrize("centres, count", [
    ([(0.3, 0, -0.7)], 3),                            # one piece: nothing repeated to lay out
    ([(0.3, 0, -0.7), (-0.1, 0.3, -0.7), (0.0, -0.35, -0.2)], 4),   # neither a ring nor rows
    (grid(2), 5),                                     # five does not share out over two rows
])
def test_layouts_it_cannot_make_are_left_to_the_flow_model(centres, count):
    pts, part = with_pieces(centres)
    assert recount_layout(pts, piece_labels(pts, part, CFG), count, CFG) is None


def test_piece_moves_turn_about_the_axis():
    move = PieceMove((0.1, 0.0), np.pi / 2, (0.0, 0.0, 0.05))
    assert np.allclose(move.apply(np.float32([[0.3, 0.0, 0.0]])), [[0.1, 0.2, 0.05]], atol=1e-6)


def test_the_count_head_reads_held_out_phrasings():
    asked = {"it should have three fins": 3, "change it to six legs": 6, "it should have 4 wheels": 4,
             "change it to two tiers": 2, "it should have eight legs": 8}
    reader = load_kind_reader()
    pooled = shared_encoder().encode(list(asked)).pooled
    assert reader.count(pooled) == list(asked.values())
    assert reader(pooled).argmax(-1).tolist() == [reader.cfg.kinds.index("change_count")] * len(asked)


@pytest.fixture(scope="module")
def editor(autoencoder):
    return LatentEditor.load(autoencoder=autoencoder)


GRID = grid_points(48)


def shown_sdf(autoencoder, src, edit, points):
    return shown_field(autoencoder, src, edit.latent, cuts=[edit.cut] if edit.cut else []).sdf(points)


def first_test_spec(category):
    """The held-out asset `procedural_latent` encodes for this category."""
    index = next(i for i in range(5000, 5200) if sample_asset_spec("test", i).category == category)
    return sample_asset_spec("test", index)


def test_a_rocket_gets_three_fins_where_a_ring_of_three_has_them(editor, autoencoder):
    """A rocket's fin count is a held-out (edit, category) combination. Its four fins (at 0, 90,
    180 and 270 degrees) become three, at 90, 210 and 330: probed on a circle through the fins."""
    spec = first_test_spec("rocket")
    assert spec.params["fins"] == 4
    src = procedural_latent(autoencoder, "rocket", "green")
    edit = editor.edit(src, "give it three fins", seed=0)
    assert edit.path == "grounded_recount", edit.path
    angle = np.deg2rad(np.arange(0, 360, 30))
    radius = spec.params["body_radius"] + spec.params["fin_size"] / 2
    probes = np.stack([radius * np.cos(angle), radius * np.sin(angle), np.full(len(angle), -0.75)], 1)
    probes = probes.astype(np.float32)
    before = shown_field(autoencoder, src, src).sdf(probes) < 0
    after = shown_sdf(autoencoder, src, edit, probes) < 0
    degrees = np.arange(0, 360, 30)
    assert set(degrees[before]) == {0, 90, 180, 270}, degrees[before]
    assert set(degrees[after]) == {90, 210, 330}, degrees[after]
    # the body and nose above the fins are kept
    grid = GRID[GRID[:, 2] > -0.5]
    kept = (shown_field(autoencoder, src, src).sdf(grid) < 0) == (shown_sdf(autoencoder, src, edit, grid) < 0)
    assert kept.mean() > 0.98
    assert editor.edit(src, "give it three fins", seed=0, strength=0.0).latent.equal(src)
    # it has four: asked for four, it is left as it was, and says so
    same = editor.edit(src, "give it four fins", seed=0)
    assert same.path == "grounded_recount" and same.latent.equal(src) and same.cut is None
    assert any("already has 4" in w for w in same.warnings), same.warnings


def test_a_table_gets_a_middle_pair_of_legs(editor, autoencoder):
    """"it should have six legs" (a held-out phrasing) on a four-legged table: the procedural
    world's six-legged table has a pair halfway along; the edit stands legs there and keeps the
    corner legs."""
    spec = first_test_spec("table")
    assert spec.params["legs"] == 4
    six = spec.copy()
    six.params["legs"] = 6
    src = procedural_latent(autoencoder, "table", "green")
    edit = editor.edit(src, "it should have six legs", seed=0)
    assert edit.path == "grounded_recount", edit.path
    pts = grid_points(64)
    legs_height = pts[:, 2] < -0.85 + (spec.params["height"] - spec.params["top_thickness"]) * 0.8
    pts = pts[legs_height]
    before, after = (Asset(s).query(pts, with_colour=False)[0] for s in (spec, six))
    new_legs, old_legs = (after < -0.01) & (before > 0.01), before < -0.01
    assert new_legs.sum() > 20 and old_legs.sum() > 40
    src_in = shown_field(autoencoder, src, src).sdf(pts) < 0
    edit_in = shown_sdf(autoencoder, src, edit, pts) < 0
    assert src_in[new_legs].mean() < 0.1 and edit_in[new_legs].mean() > 0.7, (src_in[new_legs], edit_in[new_legs])
    assert src_in[old_legs].mean() > 0.8 and edit_in[old_legs].mean() > 0.8


def test_a_square_of_pieces_takes_the_layout_that_keeps_more_of_them():
    """Four legs under a square seat are a ring and two rows: six legs as two rows of three keep
    all four in place (a ring of six would keep one); three legs only fit a ring."""
    square = [(x, y, -0.6) for x in (-0.3, 0.3) for y in (-0.3, 0.3)]
    pts, part = with_pieces(square)
    piece = piece_labels(pts, part, CFG)
    six, three = (recount_layout(pts, piece, n, CFG) for n in (6, 3))
    assert six.kind == "rows" and len(six.kept) == 4 and len(six.copies) == 2
    assert three.kind == "ring" and len(three.kept) == 1 and len(three.copies) == 2
