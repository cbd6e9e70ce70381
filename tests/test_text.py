"""The shipped text -> 3D model: seeds, held-out paraphrases, empty and out-of-domain prompts."""
import numpy as np
import pytest
import torch

from models.classifier import classify, load_classifier, sdf_features
from models.text.pipeline import EmptyPromptError, TextToAsset, nearest_colour_share
from models.triplane.inference import LatentField, latent_to_mesh


@pytest.fixture(scope="module")
def text_model():
    return TextToAsset.load()


@pytest.fixture(scope="module")
def clf():
    return load_classifier()


def test_same_seed_same_latent_different_seed_differs(text_model):
    a, _ = text_model.generate_latent("a blue car", seed=3)
    b, _ = text_model.generate_latent("a blue car", seed=3)
    c, _ = text_model.generate_latent("a blue car", seed=4)
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 0.05 * a.abs().mean()


# held-out phrasings: templates and synonyms the generator never saw in training
PARAPHRASES = [
    ("an armchair coloured scarlet", "chair", "red"),
    ("make me a motorcar in cobalt", "car", "blue"),
    ("i want a toadstool in emerald", "mushroom", "green"),
]


@pytest.mark.parametrize("prompt, category, colour", PARAPHRASES)
def test_heldout_paraphrase_gets_category_and_colour(text_model, autoencoder, clf, prompt, category, colour):
    latent, warnings = text_model.generate_latent(prompt, seed=0)
    assert not warnings
    field = LatentField(autoencoder, latent)
    assert classify(clf, sdf_features(field.sdf)[None])[0] == category
    mesh = latent_to_mesh(autoencoder, latent, 64)
    share = nearest_colour_share(mesh.colors)
    assert max(share, key=share.get) == colour, share


def test_empty_prompt_is_a_clear_error(text_model):
    for prompt in ("", "   "):
        with pytest.raises(EmptyPromptError, match="empty"):
            text_model.generate_latent(prompt)


def test_out_of_domain_prompt_warns_but_still_generates(text_model, autoencoder):
    latent, warnings = text_model.generate_latent("asdfgh qwerty", seed=0)
    assert warnings and "nearest known concepts" in warnings[0]
    assert np.isfinite(latent.numpy()).all()
    _, ok = text_model.generate_latent("a red chair", seed=0)
    assert not ok


def test_batched_generation_matches_single(text_model):
    batch, _ = text_model.generate_latents(["a red chair", "a green tree"], [1, 2])
    single, _ = text_model.generate_latent("a green tree", seed=2)
    assert torch.allclose(batch[1:], single, atol=1e-4)
