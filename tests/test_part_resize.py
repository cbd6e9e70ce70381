"""Part resizes: the moves made on a part's surface samples (length stretches the part's slab and
carries what stands on it, width and size scale each piece in place), their fit in the cube, the
resize head on held-out part phrasings, and held-out assets resized through the editor."""
import numpy as np
import pytest

from models.edit.composite import shown_field
from models.edit.kinds import load_kind_reader
from models.edit.part_resize import PartResizeConfig, fitted_part, part_rescale, pieces
from models.edit.pipeline import LatentEditor
from models.edit.removal import PartCut, carried_cuts
from models.geometry import grid_points
from models.text.encoder import shared_encoder
from tests.test_edit import procedural_latent

GRID = grid_points(48)


@pytest.fixture(scope="module")
def editor(autoencoder):
    return LatentEditor.load(autoencoder=autoencoder)


def line(a, b, n=60):
    return np.linspace(a, b, n).astype(np.float32)


def lamp_samples():
    """A toy lamp: a base disc's samples, a pole above it and a shade above the pole."""
    t = np.linspace(0, 6, 40)
    base = np.stack([np.cos(t) * 0.3, np.sin(t) * 0.3, np.full(40, -0.8)], 1)
    pole = line((0, 0, -0.78), (0, 0, 0.0))
    shade = np.stack([np.cos(t) * 0.35, np.sin(t) * 0.35, np.linspace(0.02, 0.3, 40)], 1)
    pts = np.concatenate([base, pole, shade]).astype(np.float32)
    part = np.zeros(len(pts), bool)
    part[40:100] = True
    return pts, part


def test_pieces_are_the_connected_groups():
    a, b = line((0, 0, 0), (0, 0, 0.5)), line((0.4, 0, 0), (0.4, 0, 0.5))
    label = pieces(np.concatenate([a, b]), 0.05)
    assert len(set(label[:60])) == 1 and len(set(label[60:])) == 1 and label[0] != label[-1]


def test_a_longer_part_carries_what_stands_on_it():
    pts, part = lamp_samples()
    r = part_rescale(pts, part, "z_up", 1.0, PartResizeConfig(span_quantile=0.0))
    moved = r.apply(pts, r.piece)
    lo, hi = -0.78, 0.0
    assert np.allclose(moved[:40], pts[:40])                                   # the base stays
    assert np.isclose(moved[99, 2], lo + 1.35 * (hi - lo), atol=1e-5)          # the pole's top
    assert np.allclose(moved[100:, 2] - pts[100:, 2], 0.35 * (hi - lo), atol=1e-5)  # the shade, lifted
    assert np.allclose(moved[:, :2], pts[:, :2])
    # shorter: the same slab squeezed and the shade lowered
    down = part_rescale(pts, part, "z_down", 1.0, PartResizeConfig(span_quantile=0.0)).apply(pts)
    assert np.allclose(down[100:, 2] - pts[100:, 2], (1 / 1.35 - 1) * (hi - lo), atol=1e-5)


def toy_chair():
    """A square seat's samples (0.6 across), four legs near its corners and a back along its
    rear edge, as the procedural world builds a chair; the seat is the part."""
    u = np.linspace(-0.3, 0.3, 25)
    seat = np.stack(np.meshgrid(u, u, [-0.3]), -1).reshape(-1, 3)
    legs = [line((x, y, -0.32), (x, y, -0.9), 30) for x in (-0.22, 0.22) for y in (-0.22, 0.22)]
    back = np.stack(np.meshgrid(u, [0.3], np.linspace(-0.28, 0.3, 25)), -1).reshape(-1, 3)
    pts = np.concatenate([seat, *legs, back]).astype(np.float32)
    return pts, np.arange(len(pts)) < len(seat), len(seat)


def test_a_narrower_seat_carries_its_legs_and_back():
    """Scaled across, a part carries what hangs on it alone within its footprint: the legs keep
    under the seat's corners (moved, not thinned) and the back, joined all along the seat's rear
    edge, narrows with it. Alone, the seat's change is one the autoencoder hardly shows (a
    held-out chair's narrower seat: 0 -> 0.97 of the way in the edit evaluation)."""
    pts, part, n = toy_chair()
    r = part_rescale(pts, part, "x_down", 1.0, PartResizeConfig(span_quantile=0.0))
    moved = r.apply(pts, r.piece)
    f = 1 / 1.35
    assert np.isclose(np.ptp(moved[:n, 0]), 0.6 * f, rtol=0.01) and np.isclose(np.ptp(moved[:n, 1]), 0.6 * f, rtol=0.01)
    for i, (x, y) in enumerate([(-0.22, -0.22), (-0.22, 0.22), (0.22, -0.22), (0.22, 0.22)]):
        leg = moved[n + 30 * i:n + 30 * (i + 1)]
        assert np.allclose(leg[:, :2], (x * f, y * f), atol=1e-4)              # still under its corner
        assert np.allclose(leg[:, 2], pts[n + 30 * i:n + 30 * (i + 1), 2])     # same length
    back = moved[n + 120:]
    assert np.isclose(np.ptp(back[:, 0]), 0.6 * f, rtol=0.01)                 # as wide as the seat
    assert np.allclose(back[:, 1], 0.3 * f, atol=1e-4)                        # on its rear edge
    assert np.allclose(back[:, 2], pts[n + 120:, 2])
    # points off the samples follow their nearest one: a leg's foot moves with it
    assert np.allclose(r.apply(np.array([[0.22, 0.22, -0.89]], np.float32))[0, :2], (0.22 * f, 0.22 * f), atol=1e-4)


def test_a_stray_mark_beside_the_part_is_not_a_piece_of_it():
    """The grounding network also marks a strip of the back, apart from the seat (a tenth of the
    seat's samples, over the 5% a piece needs): it is not a second piece of the seat, so the back
    still hangs on one piece and is carried."""
    pts, part, n = toy_chair()
    back = np.flatnonzero(~part)[120:]
    strip = back[(pts[back, 2] > -0.1) & (pts[back, 2] < 0.0) & (np.abs(pts[back, 0]) < 0.2)]
    assert 0.05 * (n + len(strip)) < len(strip) < 0.4 * n
    part = part.copy()
    part[strip] = True
    r = part_rescale(pts, part, "x_down", 1.0, PartResizeConfig(span_quantile=0.0))
    assert (r.piece[:n] == 0).all() and (r.piece[strip] > 0).all()   # the strip goes with the back
    assert np.isclose(np.ptp(r.apply(pts, r.piece)[back, 0]), 0.6 / 1.35, rtol=0.01)


def test_what_joins_a_part_through_a_post_is_not_scaled_with_it():
    """A lamp's base made wider: its pole and a shade within the base's footprint stand on it
    through the pole only, so they are not widened (the shade keeps its size and place)."""
    def disc(radius, z):
        u = np.linspace(-radius, radius, 13)
        d = np.stack(np.meshgrid(u, u, [z]), -1).reshape(-1, 3)
        return d[np.hypot(d[:, 0], d[:, 1]) <= radius + 1e-6]

    base = disc(0.3, -0.8)
    pole = line((0, 0, -0.78), (0, 0, 0.0))
    shade = disc(0.25, 0.02)   # within the base's footprint, on the pole
    pts = np.concatenate([base, pole, shade]).astype(np.float32)
    n = len(base)
    assert len(set(pieces(pts[n:], PartResizeConfig().link))) == 1   # pole and shade: one group
    r = part_rescale(pts, np.arange(len(pts)) < n, "x_up", 1.0, PartResizeConfig(span_quantile=0.0))
    assert (r.piece[n:] >= 0).all()                                   # carried (moved nowhere)
    moved = r.apply(pts, r.piece)
    assert np.isclose(np.ptp(moved[:n, 0]), 1.35 * np.ptp(base[:, 0]), rtol=0.01)
    assert np.allclose(moved[n:], pts[n:], atol=1e-3)


def test_size_and_width_scale_each_piece_in_place():
    # four "wheels": discs in the x-z plane, thin in y, far apart
    disc = np.stack([np.cos(np.linspace(0, 6, 50)) * 0.1, np.zeros(50), np.sin(np.linspace(0, 6, 50)) * 0.1], 1)
    centres = np.array([[-0.5, -0.3, -0.6], [0.5, -0.3, -0.6], [-0.5, 0.3, -0.6], [0.5, 0.3, -0.6]])
    wheels = np.concatenate([disc + c for c in centres]).astype(np.float32)
    body = line((-0.6, 0, -0.3), (0.6, 0, -0.3))
    pts = np.concatenate([wheels, body])
    part = np.arange(len(pts)) < len(wheels)
    r = part_rescale(pts, part, "whole_up", 1.0)
    moved = r.apply(pts, r.piece)
    for i, c in enumerate(centres):
        w = moved[i * 50:(i + 1) * 50]
        assert np.allclose((w.max(0) + w.min(0)) / 2, c, atol=0.01)            # in place
        assert np.isclose(np.ptp(w[:, 0]), 1.35 * np.ptp(disc[:, 0]), rtol=0.02)  # the radius grows
        assert np.allclose(w[:, 1], c[1])                                       # not the thickness
    assert np.allclose(moved[len(wheels):], body)
    # a body joined to all four wheels is carried by none of them
    axle = np.concatenate([line((-0.5, -0.3, -0.5), (0.5, -0.3, -0.5)), line((-0.5, 0.3, -0.5), (0.5, 0.3, -0.5))])
    joined = np.concatenate([wheels, axle])
    r = part_rescale(joined, np.arange(len(joined)) < len(wheels), "whole_up", 1.0)
    assert (r.piece[len(wheels):] == -1).all()
    assert np.allclose(r.apply(joined, r.piece)[len(wheels):], axle)
    # a guard wider along its length, not its depth; points off the samples follow their nearest one
    guard = line((-0.2, 0, 0.1), (0.2, 0, 0.1))
    guard = np.concatenate([guard, guard + (0, 0.03, 0)]).astype(np.float32)
    r = part_rescale(guard, np.ones(len(guard), bool), "x_down", 1.0)
    assert np.isclose(np.ptp(r.apply(guard)[:, 0]), 0.4 / 1.35, rtol=0.01)
    assert np.isclose(np.ptp(r.apply(guard)[:, 1]), 0.03, rtol=0.01)
    with pytest.raises(ValueError):
        part_rescale(guard, np.ones(len(guard), bool), "sideways_up", 1.0)


def test_a_part_lying_long_across_grows_along_its_length_and_stray_marks_stay():
    # a car's body, long along y and low, with a spoiler behind it and a wheel below
    y = np.linspace(-0.6, 0.6, 121)
    body = np.concatenate([np.stack([np.full_like(y, x), y, np.full_like(y, z)], 1)
                           for x in (-0.3, 0.3) for z in (-0.4, -0.2)]).astype(np.float32)
    spoiler = line((0, 0.75, -0.1), (0, 0.75, 0.0), 10)
    stray = np.array([[0.0, 0.0, 0.6]], np.float32)      # one far mark of the grounding network
    pts = np.concatenate([body, spoiler, stray])
    part = np.r_[np.ones(len(body), bool), np.zeros(len(spoiler), bool), True]
    r = part_rescale(pts, part, "long_down", 1.0, PartResizeConfig(span_quantile=0.0))
    assert r.axis == 1 and np.isclose(r.anchor, 0.5)
    moved = r.apply(pts, r.piece)
    assert np.isclose(np.ptp(moved[:len(body), 1]), 1.2 / 1.35, atol=1e-5)
    assert np.allclose(moved[len(body):-1, 1], 0.75 - 0.6 * (1 - 1 / 1.35), atol=1e-5)  # carried in
    assert r.piece[-1] == -1 and np.allclose(moved[:, 2], pts[:, 2])
    # a part standing up takes "long" as its height
    lamp, lamp_part = lamp_samples()
    assert part_rescale(lamp, lamp_part, "long_up", 1.0).axis == 2


def test_strength_and_the_cube():
    pts, part = lamp_samples()
    assert np.allclose(part_rescale(pts, part, "z_up", 0.0).apply(pts), pts)
    half = part_rescale(pts, part, "z_up", 0.5)
    assert np.isclose(half.factor, 1.35 ** 0.5)
    tall = pts.copy()
    tall[100:, 2] += 0.55                                                      # the shade near the top
    r, shrunk = fitted_part(tall, part_rescale(tall, part, "z_up", 1.0), 0.92)
    assert shrunk and 1.0 < r.factor < 1.35 and np.abs(r.apply(tall)).max() <= 0.92 + 1e-5


def test_a_cut_moves_with_a_part_resize():
    pts, part = lamp_samples()

    class Removal:
        rescale, cut = None, PartCut(pts[100:], pts[:100])

    class Longer:
        rescale, cut = part_rescale(pts, part, "z_up", 1.0), None

    cuts = carried_cuts(carried_cuts([], Removal), Longer)
    assert len(cuts) == 2 and np.allclose(cuts[0].removed, pts[100:])
    assert np.all(cuts[1].removed[:, 2] > pts[100:, 2])


def test_the_resize_head_reads_held_out_part_phrasings():
    asked = {"the pole should be longer": "long_up", "give it shorter legs": "long_down",
             "the guard should be narrower": "x_down", "give it bigger wheels": "whole_up",
             "the cap should be smaller": "whole_down", "the walls should be lower": "z_down"}
    reader = load_kind_reader()
    pooled = shared_encoder().encode(list(asked)).pooled
    assert reader.resize(pooled) == list(asked.values())
    # read as a part resize likelier than anything else ("give it bigger wheels" shares its frame
    # with adding a part)
    assert reader(pooled).argmax(-1).tolist() == [reader.cfg.kinds.index("resize_part")] * len(asked)


def top_of(autoencoder, src, latent):
    return GRID[shown_field(autoencoder, src, latent).sdf(GRID) < 0][:, 2].max()


@pytest.mark.parametrize("category, instruction, grows", [
    ("lamp", "make the pole a bit longer", True),      # a held-out (edit, category) combination
    ("chair", "the legs should be shorter", False),
    ("mushroom", "give it a longer stem", True),
])
def test_a_held_out_asset_part_is_resized_and_what_stands_on_it_moves(editor, autoencoder, category, instruction,
                                                                       grows):
    src = procedural_latent(autoencoder, category, "green")
    edit = editor.edit(src, instruction, seed=0)
    assert edit.path == "grounded_part_resize" and edit.rescale is not None
    assert all("only as far as it fits" in w for w in edit.warnings), edit.warnings  # a tall lamp may reach the top
    before, after = top_of(autoencoder, src, src), top_of(autoencoder, src, edit.latent)
    assert (after > before + 0.04) if grows else (after < before - 0.04), (before, after)
    # the footprint is kept: the asset's lowest point stays on the ground
    low = [GRID[shown_field(autoencoder, src, z).sdf(GRID) < 0][:, 2].min() for z in (src, edit.latent)]
    assert abs(low[0] - low[1]) < 0.05, low
