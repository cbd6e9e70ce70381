"""The images detail network (models/images/detail.py): where it puts the images, what it does
untrained, its training stage, and the shipped network against the latent's own decoding."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from models.images.detail import DetailConfig, PlaneDetailNet, image_on_xz, image_planes
from models.images.pipeline import DEFAULT_WEIGHTS, DETAIL_WEIGHTS
from tests.backend_proc import REPO

needs_weights = pytest.mark.skipif(not (os.path.exists(DEFAULT_WEIGHTS) and os.path.exists(DETAIL_WEIGHTS)),
                                   reason="the images weights are not shipped (python -m models.train images)")
RES = 64


def prepared_view(index: int, view: str) -> torch.Tensor:
    from models.eval.images import canonical_render
    from models.images.preprocess import prepare_image

    return torch.from_numpy(prepare_image(canonical_render(index, view)))[None]


def true_xz_outline(index: int) -> np.ndarray:
    """The held-out asset's occupancy in the image frame, projected along Y onto the XZ plane's cells."""
    from models.eval.images import ground_truth

    gt = ground_truth(index)
    inside = gt["uni"][gt["uni_sdf"] < 0]
    cells = ((inside[:, [2, 0]] + 1) / 2 * RES).astype(int).clip(0, RES - 1)
    outline = np.zeros((RES, RES), bool)
    outline[cells[:, 0], cells[:, 1]] = True
    return outline


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(int((a | b).sum()), 1)


@pytest.mark.parametrize("index", [4, 5, 9, 10, 11])   # a mug, a vase, a tree, a house, a mushroom
def test_the_front_and_back_images_land_on_the_xz_plane_where_the_asset_stands(index):
    truth = true_xz_outline(index)
    front = image_on_xz(prepared_view(index, "front"), RES)[0, 3].numpy() > 0.5
    back = image_on_xz(torch.flip(prepared_view(index, "back"), dims=[-1]), RES)[0, 3].numpy() > 0.5
    # measured 0.87-0.96 (level orthographic views; a part thinner than a cell loses most)
    assert iou(front, truth) > 0.8 and iou(back, truth) > 0.8, (iou(front, truth), iou(back, truth))


def test_a_blank_image_gives_no_image_features():
    blank = torch.ones(2, 4, 64, 64)
    blank[:, 3] = 0.0
    assert image_on_xz(blank, RES).abs().max() == 0


def test_image_features_sit_on_xz_only_and_a_missing_back_is_masked():
    front, back = prepared_view(5, "front"), prepared_view(5, "back")
    feats = image_planes(front.expand(2, -1, -1, -1), back.expand(2, -1, -1, -1), torch.tensor([True, False]), RES)
    assert feats[:, [0, 2]].abs().max() == 0 and feats[:, 1, 3].max() > 0.9
    assert feats[0, 1, 4:].abs().max() > 0.5           # the back's alpha and its presence flag
    assert feats[1, 1, 4:].abs().max() == 0             # masked: as if none was given
    assert torch.equal(feats[1], image_planes(front, None, None, RES)[0])


def test_an_untrained_network_returns_the_planes_and_a_trained_one_ignores_a_masked_back():
    torch.manual_seed(0)
    net = PlaneDetailNet(DetailConfig()).eval()
    planes = torch.randn(1, 3, 32, RES, RES)
    front, back = prepared_view(5, "front"), prepared_view(8, "back")
    with torch.no_grad():
        assert torch.equal(net(planes, front, back), planes)     # the head starts at zero
        torch.nn.init.normal_(net.head[-1].weight, std=0.05)
        moved = net(planes, front)
        assert (moved - planes).abs().mean() > 1e-3
        assert torch.allclose(net(planes, front, back, torch.tensor([False])), moved, atol=1e-6)
        assert not torch.allclose(net(planes, front, back), moved, atol=1e-3)


def test_the_detail_stage_trains_and_writes_loadable_weights(tmp_path):
    """`python -m models.train images --detail-only` on two assets, two steps: the file loads
    into the pipeline's detail model and moves the planes."""
    from models.images.pipeline import DetailModel

    out = tmp_path / "detail.safetensors"
    subprocess.run([sys.executable, "-m", "models.train", "images", "--detail-only", "--assets", "2",
                    "--variants", "1", "--detail-steps", "2", "--detail-out", str(out), "--cache",
                    str(tmp_path / "cache"), "--run-dir", str(tmp_path / "run"), "--workers", "1"],
                   cwd=REPO, check=True, capture_output=True, timeout=600,
                   env={**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"})
    detail = DetailModel.load(str(out))
    assert detail.meta["steps"] == 2 and detail.meta["reconstructor"] == os.path.basename(DEFAULT_WEIGHTS)
    planes = torch.randn(1, 3, 32, RES, RES)
    with torch.no_grad():
        assert (detail.net(planes, prepared_view(5, "front")) - planes).abs().mean() > 0


@needs_weights
def test_the_shipped_detail_network_beats_the_latents_own_decoding():
    from models.data import surface_points
    from models.geometry import grid_points
    from models.images.data import render_asset
    from models.images.frame import from_image_frame, image_frame
    from models.images.pipeline import ImagesToAsset
    from models.triplane.inference import PlanesField
    from models.triplane.loading import load_autoencoder
    from models.world.asset import Asset, sample_asset_spec

    ae = load_autoencoder()
    rec = ImagesToAsset.load(ae)
    assert rec.detail is not None
    grid = grid_points(48)
    ious = {"latent": [], "detail": []}
    for i in range(13):   # one held-out asset per category, the training jitter
        asset = Asset(sample_asset_spec("test", i))
        truth = asset.query(from_image_frame(grid, *image_frame(surface_points(asset, 4096, np.random.default_rng(i)))),
                            with_colour=False)[0] < 0
        views = torch.from_numpy(render_asset("test", i, 1)[:, 0].astype(np.float32))
        given = {"front": views[0:1], "back": views[1:2]}
        latent = rec.feed_forward(given["front"], given["back"])
        with torch.inference_mode():
            for name, planes in (("latent", ae.decode(latent)), ("detail", rec.planes(latent, given))):
                ious[name].append(iou(PlanesField(ae, planes).sdf(grid) < 0, truth))
    mean = {k: float(np.mean(v)) for k, v in ious.items()}
    assert mean["detail"] > mean["latent"] + 0.03, mean
