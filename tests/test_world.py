"""The procedural asset world: determinism, SDF sanity, captions, edit pairs, held-out split."""
import numpy as np
import pytest

from models.world.asset import Asset, AssetSpec, asset_rng, sample_asset_spec, sample_spec
from models.world.captions import COLOUR_WORDS, TEMPLATES, caption
from models.world.categories import CATEGORIES, CATEGORY_NAMES
from models.world.edits import EDIT_KINDS, HELDOUT_EDIT_COMBOS, sample_edit
from models.world.palette import COLOUR_NAMES, COLOURS, nearest_colour
from models.world.split import HELDOUT_COMBOS

RNG_POINTS = np.random.default_rng(0).uniform(-1, 1, (20000, 3)).astype(np.float32)


def test_world_size():
    assert len(CATEGORY_NAMES) >= 12
    assert len(COLOUR_NAMES) >= 12
    rng = np.random.default_rng(0)
    for cat in CATEGORIES.values():
        n_parts = max(len(cat.part_names({p.name: p.sample(rng) for p in cat.params})) for _ in range(10))
        assert n_parts >= 2, cat.name


def test_same_seed_same_asset():
    a, b = sample_asset_spec("train", 17), sample_asset_spec("train", 17)
    assert a.to_dict() == b.to_dict()
    sa, ca = Asset(a).query(RNG_POINTS)
    sb, cb = Asset(b).query(RNG_POINTS)
    assert np.array_equal(sa, sb) and np.array_equal(ca, cb)
    assert sample_asset_spec("train", 18).to_dict() != a.to_dict()
    assert sample_asset_spec("test", 17).to_dict() != a.to_dict()


@pytest.mark.parametrize("category", CATEGORY_NAMES)
def test_sdf_sign_and_bounds(category):
    spec = sample_spec(category, asset_rng("test", 3), "test")
    asset = Asset(spec)
    assert asset.fits()
    sdf, rgb = asset.query(RNG_POINTS)
    inside = sdf < 0
    assert 0.0005 < inside.mean() < 0.5, "asset is neither empty nor filling the cube"
    assert np.all(rgb >= 0) and np.all(rgb <= 1)
    # points far outside the bounds are outside, with distance at least their gap to the box
    corners = np.array([[0.99, 0.99, 0.99], [-0.99, -0.99, 0.99], [0.99, -0.99, -0.99]], np.float32)
    assert np.all(asset.query(corners, with_colour=False)[0] > 0)
    # an inside point's neighbourhood within |sdf| is entirely inside (SDF is a distance bound)
    p = RNG_POINTS[np.argmin(sdf)]
    d = -sdf.min()
    offsets = np.random.default_rng(2).normal(size=(500, 3)).astype(np.float32)
    offsets *= (0.9 * d / np.linalg.norm(offsets, axis=1, keepdims=True))
    assert np.all(asset.query(p + offsets, with_colour=False)[0] < 0)


def test_sdf_is_close_to_a_distance():
    """Finite-difference gradient norm ~ 1 near the surface (a true distance, not just a sign)."""
    asset = Asset(sample_asset_spec("train", 3))
    sdf, _ = asset.query(RNG_POINTS)
    pts = RNG_POINTS[np.abs(sdf) < 0.05][:300]
    eps = 1e-3
    grad = np.stack([(asset.query(pts + eps * e, False)[0] - asset.query(pts - eps * e, False)[0]) / (2 * eps)
                     for e in np.eye(3, dtype=np.float32)], 1)
    norm = np.linalg.norm(grad, axis=1)
    assert np.median(norm) == pytest.approx(1.0, abs=0.1)


def test_colour_follows_parts():
    spec = sample_asset_spec("train", 0).copy()
    spec.patterns = {}
    asset = Asset(spec)
    sdf, rgb = asset.query(RNG_POINTS)
    labels = asset.part_labels(RNG_POINTS)
    near = np.abs(sdf) < 0.02
    for i, part in enumerate(asset.part_names):
        sel = near & (labels == i)
        if sel.any():
            assert np.allclose(rgb[sel], COLOURS[spec.colours[part]])


def test_pattern_points_take_the_pattern_colour():
    spec = sample_asset_spec("train", 0).copy()
    part = spec.parts()[0]
    spec.colours = {p: "white" for p in spec.parts()}
    spec.patterns = {part: ("stripes", "red")}
    asset = Asset(spec)
    sdf, rgb = asset.query(RNG_POINTS)
    on_part = (np.abs(sdf) < 0.02) & (asset.part_labels(RNG_POINTS) == asset.part_names.index(part))
    striped = asset.pattern_points(RNG_POINTS)
    assert 0.2 < striped[on_part].mean() < 0.8  # stripes paint about half the part
    assert np.allclose(rgb[on_part & striped], COLOURS["red"])
    assert np.allclose(rgb[on_part & ~striped], COLOURS["white"])
    assert not striped[~on_part & (np.abs(sdf) < 0.02) & (asset.part_labels(RNG_POINTS) != asset.part_names.index(part))].any()


def test_heldout_combos_never_in_training():
    for i in range(400):
        spec = sample_asset_spec("train", i)
        for colour in set(spec.colours.values()) | {c for _, c in spec.patterns.values()}:
            assert (spec.category, colour) not in HELDOUT_COMBOS
    seen = set()
    for i in range(600):
        spec = sample_asset_spec("test", i)
        seen |= {(spec.category, c) for c in spec.colours.values()} & HELDOUT_COMBOS
    assert seen, "the test split does contain held-out combinations"


def test_captions_name_category_and_colour():
    rng = np.random.default_rng(0)
    for i in range(60):
        spec = sample_asset_spec("train", i)
        text = caption(spec, rng)
        assert any(noun in text for noun in spec.cat.nouns)
        assert any(w in text for w in COLOUR_WORDS[spec.main_colour()][0])


def test_heldout_phrasings_are_disjoint_from_training():
    train_words, train_text = set(), []
    rng = np.random.default_rng(1)
    for i in range(300):
        text = caption(sample_asset_spec("train", i), rng)
        train_words |= set(text.split())
        train_text.append(text)
    for template in TEMPLATES["heldout"]:
        prefix = template.split("{")[0]
        assert prefix and not any(t.startswith(prefix) for t in train_text)
    for colour, (train, held) in COLOUR_WORDS.items():
        for word in held:
            assert not set(word.split()) <= train_words, word


def _geometry(spec):
    return Asset(spec).query(RNG_POINTS, with_colour=False)[0]


def test_edit_pairs_are_exact():
    rng = np.random.default_rng(0)
    seen = set()
    for i in range(300):
        spec = sample_asset_spec("train", i)
        pair = sample_edit(spec, rng)
        if pair is None:
            continue
        seen.add(pair.kind)
        assert pair.instruction and pair.before.to_dict() == spec.to_dict()
        before, after = Asset(pair.before), Asset(pair.after)
        geo_same = np.array_equal(_geometry(pair.before), _geometry(pair.after))
        if pair.kind in ("recolour_all", "recolour_part", "add_pattern", "remove_pattern"):
            assert geo_same, pair.kind
            assert not np.array_equal(before.query(RNG_POINTS)[1], after.query(RNG_POINTS)[1])
        else:
            assert not geo_same, pair.kind
        if pair.kind == "recolour_all":
            assert set(pair.after.colours.values()) == {pair.details["colour"]}
        if pair.kind == "resize_axis" and pair.details["axis"] == "z":
            h0 = before.bounds[1, 2] - before.bounds[0, 2]
            h1 = after.bounds[1, 2] - after.bounds[0, 2]
            assert h1 / h0 == pytest.approx(pair.details["factor"], rel=1e-4)
            assert np.allclose(before.bounds[:, :2], after.bounds[:, :2])
        if pair.kind in ("add_part", "remove_part"):
            assert (pair.details["part"] in after.part_names) == (pair.kind == "add_part")
        if pair.kind == "change_count":
            _, part = spec.cat.counts[pair.details["part"]]
            n_before = len(pair.before.cat.build(pair.before.params)[part])
            n_after = len(pair.after.cat.build(pair.after.params)[part])
            assert (n_before, n_after) == (pair.details["from"], pair.details["count"])
        assert (pair.kind, spec.category) not in HELDOUT_EDIT_COMBOS
    assert seen == set(EDIT_KINDS)


def test_nearest_colour_roundtrip():
    for name, rgb in COLOURS.items():
        assert nearest_colour(rgb) == name


def test_spec_serialises():
    spec = sample_asset_spec("test", 9)
    assert AssetSpec.from_dict(spec.to_dict()).to_dict() == spec.to_dict()


def test_sparse_captions_leave_out_what_they_omit():
    rng = np.random.default_rng(0)
    colour_words = {w for train, _ in COLOUR_WORDS.values() for w in train}
    for i in range(40):
        spec = sample_asset_spec("train", i)
        bare = caption(spec, rng, omit=1.0)
        assert any(noun in bare for noun in spec.cat.nouns)
        words = bare.replace("on a white background", "").replace(",", " ").replace("-", " ").split()
        assert not set(words) & colour_words, bare
        assert " with " not in bare and "legs" not in bare, bare
    # omit=0 is the full caption, drawing nothing more from the stream
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    spec = sample_asset_spec("train", 5)
    assert caption(spec, a) == caption(spec, b, omit=0.0) and a.random() == b.random()


def test_first_index_of_a_category():
    from models.world.asset import first_index_of

    for start in (0, 6000, 17007):
        for name in CATEGORY_NAMES:
            i = first_index_of(name, start)
            assert start <= i < start + len(CATEGORY_NAMES)
            assert sample_asset_spec("test", i).category == name


def test_evaluations_held_out_combinations_are_the_held_out_ones():
    # they once took category c at base + c, which is another category unless base is a multiple of 13
    from models.edit.data import edit_for
    from models.eval.edit import heldout_keys
    from models.eval.grounding import eval_keys

    combos = {(k.kind, edit_for(k).before.category) for k in heldout_keys(0, 2)["heldout_combo"]}
    assert combos == set(HELDOUT_EDIT_COMBOS)
    assert {edit_for(k).before.category for k in eval_keys(2)["heldout_combo"]} == {"house"}
