"""The shipped text -> 3D model: seeds, held-out paraphrases, empty and out-of-domain prompts."""
import numpy as np
import pytest
import torch

from models.text.pipeline import EmptyPromptError, TextToAsset
from models.triplane.inference import latent_to_mesh


@pytest.fixture(scope="module")
def text_model():
    return TextToAsset.load()


def test_same_seed_same_latent_different_seed_differs(text_model):
    a, _ = text_model.generate_latent("a blue car", seed=3)
    b, _ = text_model.generate_latent("a blue car", seed=3)
    c, _ = text_model.generate_latent("a blue car", seed=4)
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 0.05 * a.abs().mean()


def test_empty_prompt_is_a_clear_error(text_model):
    for prompt in ("", "   "):
        with pytest.raises(EmptyPromptError, match="empty"):
            text_model.generate_latent(prompt)


def test_out_of_domain_prompt_warns_but_still_generates(text_model, autoencoder):
    latent, warnings = text_model.generate_latent("asdfgh qwerty", seed=0)
    assert warnings and "nearest known concepts" in warnings[0]
    assert np.isfinite(latent.numpy()).all()
    assert len(latent_to_mesh(autoencoder, latent, 64).faces) > 100
    _, ok = text_model.generate_latent("a red chair", seed=0)
    assert not ok


def test_a_colour_value_in_a_prompt_is_made_as_its_nearest_colour_and_said_so(text_model):
    """Generation knows the palette's colours: "a #3a7bd5 chair" is made as "a blue chair", with a
    warning that says how to get the exact colour (an edit paints it)."""
    valued, warnings = text_model.generate_latent("a #3a7bd5 chair", seed=1)
    worded, none = text_model.generate_latent("a blue chair", seed=1)
    assert torch.equal(valued, worded) and not none
    assert len(warnings) == 1 and "blue" in warnings[0] and "make it #3a7bd5" in warnings[0]


def test_batched_generation_matches_single(text_model):
    batch, _ = text_model.generate_latents(["a red chair", "a green tree"], [1, 2])
    single, _ = text_model.generate_latent("a green tree", seed=2)
    assert torch.allclose(batch[1:], single, atol=1e-4)


@pytest.fixture(scope="module")
def judge(autoencoder):
    """Category from the separately trained shape classifier, main colour from vertex colours."""
    from models.classifier import classify, load_classifier, sdf_features
    from models.text.pipeline import nearest_colour_share
    from models.triplane.inference import LatentField

    clf = load_classifier()

    def judge_latent(latent):
        category = classify(clf, sdf_features(LatentField(autoencoder, latent).sdf)[None])[0]
        share = nearest_colour_share(latent_to_mesh(autoencoder, latent, 64).colors)
        return category, max(share, key=share.get)
    return judge_latent


@pytest.mark.parametrize("prompt, category, colour", [
    ("a green chair", "chair", "green"),                      # a (category, colour) never trained on
    ("an orange sword", "sword", "orange"),                   # another held-out combination
])
def test_held_out_combinations_give_the_named_category_and_colour(text_model, judge, prompt, category, colour):
    latents, _ = text_model.generate_latents([prompt] * 3, [0, 1, 2])
    verdicts = [judge(latents[i:i + 1]) for i in range(3)]
    assert sum(v == (category, colour) for v in verdicts) >= 2, verdicts


def test_held_out_prompt_sets_are_followed_far_above_chance(text_model, judge):
    """The first 12 prompts of each held-out set of the evaluation (new phrasings, nouns and
    colour words; unseen category x colour combinations). Chance is 1/13 for the category
    and 1/12 for the colour; the shipped model gets 20/24 and 14/24 here, 68-100% and 44-75%
    over the full sets (models/cards/text.md)."""
    from models.eval.text import heldout_sets

    items = [item for rows in heldout_sets(12).values() for item in rows]
    latents, _ = text_model.generate_latents([p for p, _ in items], list(range(12)) * 2)
    verdicts = [judge(latents[i:i + 1]) for i in range(len(items))]
    category = sum(v[0] == spec.category for v, (_, spec) in zip(verdicts, items))
    colour = sum(v[1] == spec.main_colour() for v, (_, spec) in zip(verdicts, items))
    assert category >= 14 and colour >= 9, (category, colour)


def test_guidance_applies_only_above_guidance_until():
    from models.text.flow import sample

    batches = []

    def velocity(x, t, c):  # the conditional velocity is c, the unconditional 0
        batches.append(len(x))
        return c.expand_as(x).clone()

    x0, c, u = torch.zeros(1, 2), torch.ones(1, 2), torch.zeros(1, 2)
    # 8 steps from t = 1: the steps starting at 1, 0.875, 0.75 and 0.625 are guided (2B), the rest not
    out = sample(velocity, (c,), (u,), x0, steps=8, guidance=3.0, guidance_until=0.5)
    assert batches == [2, 2, 2, 2, 1, 1, 1, 1]
    assert torch.allclose(out, torch.full((1, 2), -(0.5 * 3.0 + 0.5 * 1.0)))
    plain = sample(velocity, (c,), (u,), x0, steps=8, guidance=3.0)
    assert torch.allclose(plain, torch.full((1, 2), -3.0))
