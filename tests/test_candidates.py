"""Several samples per prompt, the first in one piece kept (models/text/candidates.py)."""
import numpy as np
import pytest
import torch

from models.text.candidates import CandidateConfig, candidate_seed, generate_whole, whole_share
from models.text.pipeline import TextToAsset
from models.triplane.inference import encode_cloud


def _sphere_cloud(centres, radius=0.3, n=2048, seed=0):
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    pts = np.concatenate([c + radius * d[i::len(centres)] for i, c in enumerate(np.asarray(centres, np.float32))])
    rgb = np.tile(np.array([[0.85, 0.12, 0.10]]), (len(pts), 1))
    return np.concatenate([pts, rgb], 1).astype(np.float32)


@pytest.fixture(scope="module")
def shapes(autoencoder):
    """Latents of one sphere (one piece) and of two spheres apart (two pieces)."""
    one = encode_cloud(autoencoder, _sphere_cloud([[0, 0, 0]]))
    two = encode_cloud(autoencoder, _sphere_cloud([[-0.5, 0, 0], [0.5, 0, 0]], radius=0.25))
    return one, two


class ScriptedGenerator:
    """A TextToAsset stand-in whose sample for each seed is given."""

    def __init__(self, by_seed: dict, default):
        self.by_seed, self.default, self.drawn, self.guidance = by_seed, default, [], {}

    def generate_latents(self, prompts, seeds, progress=None, cancel=None, **kw):
        self.drawn += list(seeds)
        self.guidance.update({int(s): kw.get("guidance") for s in seeds})
        return torch.cat([self.by_seed.get(int(s), self.default) for s in seeds]), [["w"] for _ in prompts]


def test_candidate_seeds_start_at_the_seed_and_do_not_walk_into_the_next_seeds():
    assert candidate_seed(5, 0) == 5
    firsts = {candidate_seed(s, k) for s in range(20) for k in range(1, 4)}
    assert len(firsts) == 60 and not firsts & set(range(20))


def test_one_piece_is_told_from_two(autoencoder, shapes):
    one, two = shapes
    assert whole_share(autoencoder, one) >= 0.98
    assert whole_share(autoencoder, two) < 0.7


def test_the_first_candidate_in_one_piece_is_kept(autoencoder, shapes):
    one, two = shapes
    seed = 7
    gen = ScriptedGenerator({candidate_seed(seed, 2): one}, default=two)
    chosen = generate_whole(gen, autoencoder, ["p"], [seed], CandidateConfig(candidates=4))
    assert torch.equal(chosen.latents[0:1], one)
    assert chosen.sample_seeds == [candidate_seed(seed, 2)] and chosen.kept == [3] and chosen.tried == [3]
    assert chosen.whole_shares[0] >= 0.98 and chosen.warnings == [["w"]]
    # a sample already in one piece is the seed's own, and nothing more is drawn
    gen = ScriptedGenerator({seed: one}, default=two)
    chosen = generate_whole(gen, autoencoder, ["p"], [seed], CandidateConfig(candidates=4))
    assert gen.drawn == [seed] and chosen.kept == [1] and chosen.sample_seeds == [seed]


def test_with_no_candidate_whole_the_closest_is_kept(autoencoder, shapes):
    one, two = shapes
    # three spheres: its largest part holds less than two spheres' does
    three = encode_cloud(autoencoder, _sphere_cloud([[-0.6, 0, 0], [0, 0, 0.0], [0.6, 0, 0]], radius=0.18))
    gen = ScriptedGenerator({0: three, candidate_seed(0, 2): two}, default=three)
    chosen = generate_whole(gen, autoencoder, ["p"], [0], CandidateConfig(candidates=3))
    assert chosen.kept == [3] and chosen.tried == [3] and torch.equal(chosen.latents[0:1], two)
    with pytest.raises(ValueError, match="at least 1"):
        generate_whole(gen, autoencoder, ["p"], [0], CandidateConfig(candidates=0))


def test_later_candidates_are_drawn_at_the_retry_guidance(autoencoder, shapes):
    _, two = shapes
    gen = ScriptedGenerator({}, default=two)
    cfg = CandidateConfig(candidates=4, retry_guidance=1.5, retry_guidance_from=2)
    generate_whole(gen, autoencoder, ["p", "q"], [3, 4], cfg, guidance=3.0)
    for seed in (3, 4):
        assert [gen.guidance[candidate_seed(seed, k)] for k in range(4)] == [3.0, 3.0, 1.5, 1.5]
    gen = ScriptedGenerator({}, default=two)
    generate_whole(gen, autoencoder, ["p"], [3], CandidateConfig(candidates=3, retry_guidance=None), guidance=3.0)
    assert set(gen.guidance.values()) == {3.0} and len(gen.drawn) == 3


def test_the_kept_sample_is_reproduced_by_its_own_seed(autoencoder):
    """A stool prompt whose seed-0 sample has its legs apart: another sample is kept when one
    is closer to one piece, and generating with the reported seed and guidance alone gives that
    sample."""
    gen = TextToAsset.load()
    prompt = "a blue stool"
    own, _ = gen.generate_latent(prompt, seed=0)
    chosen = generate_whole(gen, autoencoder, [prompt, "a green tree"], [0, 0], CandidateConfig(candidates=4))
    assert chosen.whole_shares[0] >= whole_share(autoencoder, own)
    guidance = {} if chosen.sample_guidance[0] is None else {"guidance": chosen.sample_guidance[0]}
    again, _ = gen.generate_latent(prompt, seed=chosen.sample_seeds[0], **guidance)
    assert torch.allclose(again, chosen.latents[0:1], atol=1e-4)
    plain, _ = gen.generate_latents([prompt], [0])
    single = generate_whole(gen, autoencoder, [prompt], [0], CandidateConfig(candidates=1))
    assert torch.equal(single.latents, plain) and single.kept == [1]


def test_the_addon_offers_the_backends_default_and_limit_of_tries():
    """The add-on cannot import torch-side code, so it keeps its own copies of the default and the
    protocol's limit."""
    import os
    import re

    from backend.protocol import SCHEMAS

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "blender_addon", "properties.py")
    with open(path) as fh:
        text = fh.read()
    assert int(re.search(r"^DEFAULT_TRIES = (\d+)", text, re.M).group(1)) == CandidateConfig().candidates
    assert int(re.search(r"^MAX_TRIES = (\d+)", text, re.M).group(1)) == SCHEMAS["generate"]["candidates"].max
