"""The shipped triplane autoencoder: round-trip quality floors on fixed held-out assets,
determinism, fitting, external meshes, and a training step on a tiny configuration."""
import os

import numpy as np
import pytest
import torch
import trimesh

from models.data import asset_record, surface_points
from models.meshio import from_trimesh, load_mesh, normalise
from models.metrics import volume_iou
from models.triplane import AutoencoderConfig, TriplaneAutoencoder
from models.triplane.inference import (
    LatentField,
    encode_cloud,
    encode_source_mesh,
    fit_latent,
    fit_planes,
    latent_to_mesh,
)
from models.world.asset import Asset, sample_asset_spec
from models.world.palette import nearest_colour

DATA = os.path.join(os.path.dirname(__file__), "data")
# test-split assets (never trained on) -> (volume IoU floor, colour agreement floor): the shipped
# weights measure sword 0.55/0.93, stool 0.73/0.99, bottle 0.92/0.55, tree 0.81/0.98,
# car 0.84/0.94, car 0.86/0.82 (models/cards/autoencoder.md); floors sit ~0.08 below.
FLOORS = {1000: (0.47, 0.85), 1003: (0.65, 0.9), 1007: (0.84, 0.45), 1010: (0.72, 0.9),
          1021: (0.75, 0.85), 1034: (0.78, 0.74)}
HELD_OUT = tuple(FLOORS)


def _case(index):
    asset = Asset(sample_asset_spec("test", index))
    rng = np.random.default_rng(index)
    pts = surface_points(asset, 2048 + 4000, rng)
    cloud = np.concatenate([pts[:2048], asset.query(pts[:2048])[1]], 1)
    uni = rng.uniform(-1, 1, (60000, 3)).astype(np.float32)
    return asset, cloud, pts[2048:], uni


@pytest.mark.parametrize("index", HELD_OUT)
def test_round_trip_quality_floor(autoencoder, index):
    iou_floor, colour_floor = FLOORS[index]
    asset, cloud, surf, uni = _case(index)
    latent = encode_cloud(autoencoder, cloud)
    field = LatentField(autoencoder, latent)
    iou = volume_iou(field.sdf(uni), asset.query(uni, with_colour=False)[0])
    assert iou > iou_floor, f"{asset.spec.category}: IoU {iou:.3f}"
    gt_rgb = asset.query(surf)[1]
    pred_rgb = field.rgb(surf)
    same = np.mean([nearest_colour(a) == nearest_colour(b) for a, b in zip(pred_rgb[::8], gt_rgb[::8])])
    assert same > colour_floor, f"{asset.spec.category}: colour agreement {same:.2f}"


def test_encoding_is_deterministic(autoencoder):
    _, cloud, _, _ = _case(HELD_OUT[0])
    assert torch.equal(encode_cloud(autoencoder, cloud), encode_cloud(autoencoder, cloud))


def _fit_case(index: int):
    """A held-out asset's cloud, fitting samples (points near the surface and in the cube, their
    SDF and colour), uniform points and their exact SDF."""
    asset, cloud, surf, uni = _case(index)
    rng = np.random.default_rng(0)
    near = surf[rng.integers(0, len(surf), 8000)] + rng.normal(size=(8000, 3)).astype(np.float32) * 0.02
    pts = np.concatenate([near, rng.uniform(-1, 1, (4000, 3)).astype(np.float32)])
    return cloud, (pts, *asset.query(pts)), uni, asset.query(uni, with_colour=False)[0]


def test_fitting_improves_the_round_trip(autoencoder):
    cloud, (pts, sdf, rgb), uni, gt = _fit_case(HELD_OUT[1])
    latent = encode_cloud(autoencoder, cloud)
    before = volume_iou(LatentField(autoencoder, latent).sdf(uni), gt)
    fitted = fit_latent(autoencoder, latent, pts, sdf, rgb, steps=30)
    after = volume_iou(LatentField(autoencoder, fitted).sdf(uni), gt)
    assert after > before + 0.005, (before, after)


def test_fitting_the_planes_themselves_goes_past_the_latent(autoencoder):
    """`fit_planes` (the evaluation's measure of what the field MLP can show): full planes fitted
    from the fitted latent's decoding beat it clearly on a thin-legged held-out asset."""
    cloud, (pts, sdf, rgb), uni, gt = _fit_case(HELD_OUT[1])
    latent_field = LatentField(autoencoder, fit_latent(autoencoder, encode_cloud(autoencoder, cloud), pts, sdf, rgb,
                                                       steps=30))
    planes = fit_planes(autoencoder, latent_field.planes, pts, sdf, rgb, steps=60)
    before = volume_iou(latent_field.sdf(uni), gt)
    after = volume_iou(LatentField(autoencoder, planes=planes).sdf(uni), gt)
    assert planes.shape == latent_field.planes.shape and after > before + 0.03, (before, after)


def test_external_meshes_round_trip(autoencoder):
    # measured 0.90 (capsule) and 0.65 (Suzanne, open and with thin ears)
    for raw, floor in ((from_trimesh(trimesh.creation.capsule(height=1.0, radius=0.3)), 0.82),
                       (load_mesh(os.path.join(DATA, "suzanne_blender.obj")), 0.55)):
        src = normalise(raw)
        latent, samples = encode_source_mesh(autoencoder, src, fit_steps=40)
        iou = volume_iou(LatentField(autoencoder, latent).sdf(samples[0]), samples[1])
        assert iou > floor, iou
        mesh = latent_to_mesh(autoencoder, latent, 64)
        back = src.normalisation.to_original(mesh.vertices)
        lo, hi = np.asarray(raw.vertices).min(0), np.asarray(raw.vertices).max(0)
        assert np.all(back.min(0) > lo - 0.1 * (hi - lo)) and np.all(back.max(0) < hi + 0.1 * (hi - lo))


def test_tiny_model_trains(tmp_path):
    """One configuration small enough for CI: the loss falls on a fixed batch."""
    from models.train.autoencoder import batch_from, losses

    torch.manual_seed(0)
    cfg = AutoencoderConfig(point_features=16, hidden_channels=16, plane_channels=8, mlp_hidden=16, plane_res=32)
    model = TriplaneAutoencoder(cfg)
    recs = [asset_record(sample_asset_spec("train", i), seed=i) for i in range(2)]
    data = {k: np.stack([r[k] for r in recs]) for k in recs[0]}
    batch = batch_from(data, np.arange(2), np.random.default_rng(0), 512, 1024)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    first = None
    for _ in range(40):
        loss, _ = losses(model, *batch, 1e-5)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


def test_cached_records_of_more_assets_serve_fewer(tmp_path):
    from models.data import load_or_build

    three = load_or_build("test", 3, str(tmp_path), workers=1)
    assert os.path.exists(tmp_path / "ae_test_3.npz")
    two = load_or_build("test", 2, str(tmp_path), workers=1)
    assert not os.path.exists(tmp_path / "ae_test_2.npz")     # sliced, not rebuilt
    assert all(np.array_equal(two[k], three[k][:2]) for k in three)
    assert np.array_equal(two["surface"][1], asset_record(sample_asset_spec("test", 1), seed=3)["surface"])
