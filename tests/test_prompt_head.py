"""The learned prompt summary that conditions the text and edit DiTs, its attribute read-out,
and the auxiliary targets the trainings derive from the procedural world."""
import json

import numpy as np
import torch

from models.checkpoint import load_network, save_model
from models.text.dit import DiTConfig, LatentDiT
from models.text.prompt_head import AttributeProbe, PromptHead
from models.train.flow_loop import pretrain_prompt_head


def test_summary_ignores_padding_and_depends_on_real_tokens():
    torch.manual_seed(0)
    head = PromptHead(text_dim=16, queries=3, width=8)
    tokens = torch.randn(2, 6, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    noisy_padding = tokens.clone()
    noisy_padding[~mask] = 100.0
    out = head(tokens, mask)
    assert out.shape == (2, 3, 8)
    assert torch.allclose(out, head(noisy_padding, mask), atol=1e-6)
    changed = tokens.clone()
    changed[0, 1] = torch.randn(16)
    assert not torch.allclose(head(changed, mask)[0], out[0])
    assert torch.allclose(head(changed, mask)[1], out[1])


def test_probe_uses_cross_entropy_for_classes_and_sigmoids_for_sets():
    probe = AttributeProbe(4, (3, 2))
    with torch.no_grad():
        probe.linear.weight.zero_()
        probe.linear.bias.copy_(torch.tensor([5.0, -5.0, -5.0, 5.0, -5.0]))
    summary = torch.zeros(2, 1, 4)
    right = {"kind": torch.tensor([0, 0]), "present": torch.tensor([[1.0, 0.0], [1.0, 0.0]])}
    wrong = {"kind": torch.tensor([2, 2]), "present": torch.tensor([[0.0, 1.0], [0.0, 1.0]])}
    assert probe.loss(summary, right) < 0.05 < 10 < probe.loss(summary, wrong)
    assert probe.accuracy(summary, right) == {"kind": 1.0}
    assert probe.accuracy(summary, wrong) == {"kind": 0.0}


def test_pretraining_teaches_the_summary_which_token_names_the_class():
    """Toy prompts: the class is carried by one token among distractors at a random position."""
    torch.manual_seed(0)
    words = torch.randn(10, 16)     # words 0-3 name classes, 4-9 are filler

    def batch(rng, n):
        cls = rng.integers(0, 4, n)
        ids = rng.integers(4, 10, (n, 5))
        ids[np.arange(n), rng.integers(0, 5, n)] = cls
        return words[torch.from_numpy(ids)], torch.ones(n, 5, dtype=torch.bool), {"cls": torch.from_numpy(cls)}

    model = LatentDiT(DiTConfig(text_dim=16, width=32, depth=1, heads=2, summary_queries=2, summary_width=8,
                                attribute_classes=(4,)))
    held = batch(np.random.default_rng(99), 200)
    before = model.prompt_probe.accuracy(model.prompt_head(held[0], held[1]), held[2])["cls"]
    pretrain_prompt_head(model, batch, steps=150, seed=0, batch=64)
    after = model.prompt_probe.accuracy(model.prompt_head(held[0], held[1]), held[2])["cls"]
    assert before < 0.6 and after > 0.95


def test_dit_with_summary_round_trips_through_a_weights_file(tmp_path):
    torch.manual_seed(0)
    cfg = DiTConfig(width=32, depth=1, heads=2, summary_queries=2, summary_width=8, attribute_classes=(3, 2),
                    attend_raw_tokens=False)
    model = LatentDiT(cfg).eval()
    path = str(tmp_path / "dit.safetensors")
    bundle = torch.nn.Module()
    bundle.dit = model
    save_model(bundle, path, json.loads(json.dumps(cfg.to_dict())))   # the config goes through JSON
    loaded, _, _ = load_network(path, lambda c: LatentDiT(DiTConfig(**c)), "dit", "cpu", "test")
    assert loaded.cfg == cfg
    x, t = torch.randn(1, 3, 8, 16, 16), torch.rand(1)
    cond = (torch.randn(1, 384), torch.randn(1, 32, 384), torch.ones(1, 32, dtype=torch.bool))
    with torch.no_grad():
        assert torch.allclose(loaded(x, t, *cond), model(x, t, *cond), atol=1e-6)
    # without raw tokens the velocity depends on the prompt only through the summary
    ctx = model.context(*cond)
    assert ctx[1].shape[1] == cfg.summary_queries


def test_text_targets_describe_each_asset():
    from models.train.text import SIZE_NAMES, attribute_targets
    from models.world.asset import sample_asset_spec
    from models.world.captions import size_words
    from models.world.categories import CATEGORY_NAMES
    from models.world.palette import COLOUR_NAMES

    targets = attribute_targets(30)
    for i in range(30):
        spec = sample_asset_spec("train", i)
        assert CATEGORY_NAMES[targets["category"][i]] == spec.category
        assert COLOUR_NAMES[targets["main_colour"][i]] == spec.main_colour()
        assert targets["colours"][i, COLOUR_NAMES.index(spec.main_colour())] == 1
        assert {SIZE_NAMES[j] for j in targets["sizes"][i].nonzero().flatten().tolist()} == set(size_words(spec))


def test_edit_targets_describe_each_edit():
    from models.train.edit import AXES, EDIT_TARGET_CLASSES, edit_targets
    from models.world.asset import sample_asset_spec
    from models.world.edits import EDIT_KINDS, sample_edit
    from models.world.palette import COLOUR_NAMES

    spec = sample_asset_spec("train", 0)
    rng = np.random.default_rng(0)
    recolour = sample_edit(spec, rng, kind="recolour_all")
    taller = next(e for e in (sample_edit(spec, rng, kind="resize_axis") for _ in range(20))
                  if e.details["axis"] == "z" and e.details["direction"] == 1)
    targets = edit_targets([recolour, taller])
    assert targets["kind"].tolist() == [EDIT_KINDS.index("recolour_all"), EDIT_KINDS.index("resize_axis")]
    assert targets["colour"].tolist() == [COLOUR_NAMES.index(recolour.details["colour"]), len(COLOUR_NAMES)]
    assert targets["direction"].tolist() == [1, 2]
    assert targets["axis"].tolist() == [AXES.index("none"), AXES.index("z")]
    assert all(int(t.max()) < n for t, n in zip(targets.values(), EDIT_TARGET_CLASSES))


def test_probe_probabilities_are_softmax_for_classes_and_sigmoids_for_sets():
    probe = AttributeProbe(4, (3, 2), multi_hot=(False, True))
    with torch.no_grad():
        probe.linear.weight.zero_()
        probe.linear.bias.copy_(torch.tensor([2.0, 0.0, 0.0, 3.0, 3.0]))
    p = probe.probabilities(torch.zeros(1, 1, 4))[0]
    assert torch.allclose(p[:3].sum(), torch.tensor(1.0)) and p[0] > 0.7
    assert torch.allclose(p[3:], torch.sigmoid(torch.tensor([3.0, 3.0])))  # a set: both present, not split


def test_attribute_condition_steers_the_dit_but_trains_only_through_the_read_out():
    """With attribute_condition the read-out's probabilities reach adaLN; the flow loss must not
    train the read-out (it is trained on its attribute targets alone)."""
    torch.manual_seed(0)
    cfg = DiTConfig(text_dim=16, width=32, depth=1, heads=2, summary_queries=2, summary_width=8,
                    attribute_classes=(3, 2), attribute_multi_hot=(False, True), attribute_condition=True)
    model = LatentDiT(cfg)
    for p in model.parameters():   # adaLN-Zero starts the DiT blind to its condition
        if p.dim() > 0 and not p.abs().sum():
            torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(1, 3, 8, 16, 16), torch.rand(1)
    cond = (torch.randn(1, 16), torch.randn(1, 5, 16), torch.ones(1, 5, dtype=torch.bool))
    before = model(x, t, *cond).detach()
    with torch.no_grad():
        model.prompt_probe.linear.bias.add_(torch.tensor([9.0, 0.0, 0.0, 0.0, 0.0]))
    assert not torch.allclose(model(x, t, *cond), before, atol=1e-4)
    model(x, t, *cond).pow(2).mean().backward()
    assert model.prompt_probe.linear.weight.grad is None
    assert model.attribute_embed.weight.grad.abs().sum() > 0
