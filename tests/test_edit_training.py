"""What the edit and image trainings learn from: edit pairs whose target cloud shows the edit,
the change-gate targets and output, and the images' decoded-field loss."""
import copy

import numpy as np
import torch

from models.data import build_dataset
from models.edit.data import ON_SURFACE, PairKey, edit_for, pair_clouds, source_points
from models.text.dit import DiTConfig, LatentDiT
from models.train.decoded import DecodedField
from models.train.edit import changed_texels, structure_chunks
from models.train.text import normalised_asset_latents
from models.world.asset import Asset, sample_asset_spec


def test_a_part_added_beside_the_asset_is_in_the_target_cloud():
    # train asset 150 is a car whose spoiler touches none of the source's surface samples:
    # every source point stays on the target's surface, yet the target must show the spoiler
    key = PairKey("train", 150, 1, "train", "rare")
    pair = edit_for(key)
    assert pair.kind == "add_part"
    spec = sample_asset_spec("train", 150)
    src, tgt = pair_clouds(key, pair, source_points(spec, PairKey("train", 150, 0)))
    before = Asset(pair.before)
    off_source = np.abs(before.query(tgt[:, :3].astype(np.float64), with_colour=False)[0]) >= ON_SURFACE
    assert off_source.sum() > 50, "the added part was not sampled"
    assert len(tgt) == len(src)


def test_changed_texels_mark_where_the_delta_is():
    delta = torch.zeros(2, 3, 8, 16, 16)
    delta[0, 1, :, 4:6, 7] = 3.0      # one part of plane 1 changes a lot
    delta[0, 0, :, 0, 0] = 0.01       # encoder noise elsewhere
    changed = changed_texels(delta)
    assert changed.shape == (2, 3, 16, 16)
    assert changed[0].sum() == 2 and changed[0, 1, 4:6, 7].all()
    assert changed[1].sum() == 0      # an edit the latent cannot show changes nothing


def test_change_gate_is_an_extra_output_that_leaves_the_velocity_alone():
    torch.manual_seed(0)
    cfg = DiTConfig(extra_cond_tokens=1, change_gate=True, depth=2)
    net = LatentDiT(cfg)
    torch.nn.init.normal_(net.out.weight, std=0.02)
    x = torch.randn(2, 3, 8, 16, 16)
    t = torch.ones(2)
    cond = (torch.randn(2, 384), torch.randn(2, 5, 384), torch.ones(2, 5, dtype=torch.bool), torch.randn_like(x))
    velocity, gate = net(x, t, *cond, with_gate=True)
    assert velocity.shape == x.shape and gate.shape == (2, 3, 16, 16)
    assert torch.equal(velocity, net(x, t, *cond))
    assert gate.abs().sum() > 0


def test_decoded_field_loss_prefers_the_true_latent(autoencoder):
    data = build_dataset("train", 2, workers=1)
    true_n, mean, std = normalised_asset_latents(autoencoder, 2, "", data=data)
    ae = copy.deepcopy(autoencoder)  # the field freezes its autoencoder; the fixture is shared
    field = DecodedField(ae, data, mean, std, points=2048)
    assets = np.array([0, 1])
    right = field.loss(true_n, assets, np.random.default_rng(0))
    swapped = field.loss(true_n.flip(0), assets, np.random.default_rng(0))
    assert float(right) < 0.5 * float(swapped)
    # and it trains the latent: a gradient reaches it through the frozen decoder
    z = true_n.clone().requires_grad_(True)
    field.loss(z, assets, np.random.default_rng(1)).backward()
    assert z.grad.abs().sum() > 0
    assert all(p.grad is None for p in ae.parameters())


def test_balanced_weights_count_small_edits_like_large_ones():
    from models.train.edit import balanced_weights

    delta = torch.zeros(3, 3, 8, 16, 16)
    delta[0] = 2.0                  # a whole-asset change: energy 4
    delta[1, 0, :, :4, :4] = 1.0    # a local one: energy 1/48
    w = balanced_weights(delta, floor=0.25)   # delta[2] moves nothing: bounded by the floor
    assert torch.allclose(w.mean(), torch.tensor(1.0))
    assert w[0] < w[1] < w[2] <= w[0] * (4 + 0.25) / 0.25 + 1e-4
    per_pair = delta.pow(2).mean(dim=(1, 2, 3, 4))
    share_plain = per_pair[1] / per_pair.sum()
    share_balanced = (w * per_pair)[1] / (w * per_pair).sum()
    assert share_balanced > 10 * share_plain   # the local edit's share of the loss, against plain MSE


def test_surface_loss_prefers_the_true_edit_and_trains_only_the_delta(autoencoder):
    from models.train.edit import SurfaceLoss

    key = next(k for k in (PairKey("train", i, 0) for i in range(60)) if edit_for(k).kind == "recolour_all")
    pair = edit_for(key)
    src, tgt = pair_clouds(key, pair, source_points(pair.before, key))
    ae = copy.deepcopy(autoencoder)  # the loss freezes its autoencoder; the fixture is shared
    z_src, z_tgt = (ae.encode(torch.from_numpy(c.astype(np.float32))[None]).detach() for c in (src, tgt))
    loss = SurfaceLoss(ae, [tgt], z_src, torch.ones(1), points=1024)
    true_delta = z_tgt - z_src
    right = loss.loss(true_delta, np.array([0]), np.random.default_rng(0))
    unchanged = loss.loss(torch.zeros_like(true_delta), np.array([0]), np.random.default_rng(0))
    assert float(right) < 0.5 * float(unchanged), (float(right), float(unchanged))
    delta = torch.zeros_like(true_delta).requires_grad_(True)
    loss.loss(delta, np.array([0]), np.random.default_rng(1)).backward()
    assert delta.grad.abs().sum() > 0
    assert all(p.grad is None for p in ae.parameters())


def test_structure_pairs_add_or_take_away_parts_and_replay_from_their_keys():
    from models.edit.data import STRUCTURE_KINDS, replayed_pairs, source_edits
    from models.world.edits import EDIT_KINDS

    first, n = 3000, 40
    made = [(key, pair) for i in range(first, first + n) for key, pair in source_edits("train", i, 2, group="structure")]
    assert len(made) > n // 2  # about a third of the assets have a part to add or a count to change
    assert {pair.kind for _, pair in made} == set(STRUCTURE_KINDS)
    assert all(key.kind == "structure" for key, _ in made)
    # the cached records' order (source, kind) is what replaying the keys gives back
    records = [{"source": key.source, "kind": EDIT_KINDS.index(pair.kind)} for key, pair in made]
    replayed = replayed_pairs(records, n, first=first, group="structure")
    assert [p.instruction for p in replayed] == [pair.instruction for _, pair in made]
    # and the usual mix of a source is unchanged by the group argument's default
    assert [p.kind for _, p in source_edits("train", 5, 2)] == [edit_for(PairKey("train", 5, k, "train", "rare" if k else None)).kind
                                                                for k in range(2)]


def test_the_third_stage_sources_are_cached_in_chunks():
    # the shipped model's 4000 sources are one chunk (its cache files keep their names); more
    # sources add chunks after it, so only the new ones are built
    assert structure_chunks(3000, 4000) == [(3000, 4000)]
    assert structure_chunks(3000, 8000) == [(3000, 4000), (7000, 4000)]
    assert structure_chunks(3000, 5500) == [(3000, 4000), (7000, 1500)]
    assert structure_chunks(3000, 0) == []
