"""A text sample in pieces rebuilt whole by the image reconstructor (models/text/rebuild.py)."""
import numpy as np
import pytest
import torch

from models.edit.recolour import decoded_surface
from models.images.pipeline import ImagesToAsset
from models.mesh import FLOATER_MIN_PART, sdf_grid
from models.text.candidates import CandidateConfig, generate_whole, whole_share
from models.text.pipeline import TextToAsset
from models.text.rebuild import rebuild_whole, render_views, sample_frame
from models.triplane.inference import LatentField, encode_cloud


@pytest.fixture(scope="module")
def images(autoencoder):
    return ImagesToAsset.load(autoencoder)


@pytest.fixture(scope="module")
def broken_chair():
    """The seed's own sample of the README's prompt: its seat and back come apart from its legs."""
    latent, _ = TextToAsset.load().generate_latent("a red chair with a tall back", 0)
    return latent


def _bounds(autoencoder, latent):
    origin, scale = sample_frame(sdf_grid(LatentField(autoencoder, latent).sdf, 64), FLOATER_MIN_PART)
    return origin, 1.0 / scale  # the bottom centre and the largest side's length


def test_the_views_show_the_sample_from_front_and_back(autoencoder, broken_chair):
    front, back = render_views(LatentField(autoencoder, broken_chair))
    for image in (front, back):
        assert image.shape == (96, 96, 4)
        alpha = image[..., 3]
        assert set(np.unique(alpha)) <= {0.0, 1.0} and 0.05 < alpha.mean() < 0.8
        assert (image[..., :3][alpha == 0] == 1.0).all()          # on white
        r, g, b = np.median(image[..., :3][alpha == 1], 0)
        assert r > g + 0.2 and r > b + 0.2
    # a chair's back is in front of its seat seen from behind: the two views are not mirror images
    assert np.abs(front - back[:, ::-1]).mean() > 0.01


def test_a_sample_too_small_to_see_is_not_rebuilt(autoencoder, images, broken_chair, monkeypatch):
    import models.text.rebuild as rebuild

    def nothing_in_view(field, cfg=rebuild.RebuildConfig()):
        return [np.concatenate([np.ones((96, 96, 3), np.float32), np.zeros((96, 96, 1), np.float32)], -1)] * 2

    monkeypatch.setattr(rebuild, "render_views", nothing_in_view)
    assert rebuild.rebuild_whole(images, autoencoder, broken_chair, FLOATER_MIN_PART) is None


def test_a_sample_in_pieces_comes_back_whole_where_it_stood(autoencoder, images, broken_chair):
    assert whole_share(autoencoder, broken_chair) < 0.98
    rebuilt = rebuild_whole(images, autoencoder, broken_chair, FLOATER_MIN_PART, seed=0)
    assert rebuilt.shape == broken_chair.shape
    assert whole_share(autoencoder, rebuilt) >= 0.98
    (o0, size0), (o1, size1) = _bounds(autoencoder, broken_chair), _bounds(autoencoder, rebuilt)
    assert abs(size1 / size0 - 1.0) < 0.1               # as large as the sample
    assert np.abs(o1 - o0).max() < 0.08                 # standing where it stood
    _, _, rgb = decoded_surface(autoencoder, rebuilt, 2048, 64, 0)
    r, g, b = np.median(rgb, 0)
    assert r > g + 0.2 and r > b + 0.2                  # still red


def _sphere_latents(autoencoder):
    rng = np.random.default_rng(0)
    d = rng.normal(size=(2048, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)

    def latent(centres, radius):
        pts = np.concatenate([np.asarray(c, np.float32) + radius * d[i::len(centres)] for i, c in enumerate(centres)])
        rgb = np.full((len(pts), 3), 0.5)
        return encode_cloud(autoencoder, np.concatenate([pts, rgb], 1).astype(np.float32))

    return latent([[0, 0, 0]], 0.3), latent([[-0.5, 0, 0], [0.5, 0, 0]], 0.25)


class OneSample:
    def __init__(self, latents):
        self.latents = latents

    def generate_latents(self, prompts, seeds, progress=None, cancel=None, **kw):
        return torch.cat([self.latents[p] for p in prompts]), [[] for _ in prompts]


def test_only_samples_left_in_pieces_are_rebuilt_and_kept_when_more_whole(autoencoder):
    one, two = _sphere_latents(autoencoder)
    gen = OneSample({"whole": one, "pieces": two})
    asked = []

    def rebuild(latent, seed, grid):
        asked.append(seed)
        assert grid.shape == (64, 64, 64) and (grid < 0).any()   # the sample's own grid, from its check
        return one

    chosen = generate_whole(gen, autoencoder, ["whole", "pieces"], [3, 4], CandidateConfig(candidates=1),
                            rebuild=rebuild)
    assert asked == [4] and chosen.rebuilt == [False, True]
    assert torch.equal(chosen.latents[0:1], one) and torch.equal(chosen.latents[1:2], one)
    assert chosen.whole_shares[1] >= 0.98
    # a rebuild no more whole than the sample (or none at all) leaves the sample as it was
    for failed in (lambda latent, seed, grid: two, lambda latent, seed, grid: None):
        chosen = generate_whole(gen, autoencoder, ["pieces"], [4], CandidateConfig(candidates=1), rebuild=failed)
        assert chosen.rebuilt == [False] and torch.equal(chosen.latents, two)


def test_a_mesh_refined_from_the_checks_grid_is_the_mesh_made_afresh(autoencoder, broken_chair):
    from models.triplane.inference import latent_to_mesh

    grid = sdf_grid(LatentField(autoencoder, broken_chair).sdf, 64)
    fresh = latent_to_mesh(autoencoder, broken_chair, 128, min_part=FLOATER_MIN_PART)
    reused = latent_to_mesh(autoencoder, broken_chair, 128, min_part=FLOATER_MIN_PART, start=grid)
    assert np.array_equal(fresh.faces, reused.faces) and np.allclose(fresh.vertices, reused.vertices, atol=1e-6)
