"""Train the instruction kind reader (models/edit/kinds.py).

    python -m models.train edit_kinds --seed 0

Instructions: every training template of each edit the procedural world makes of the first
`--sources` training assets (two edits each: one of any kind, one of the kinds few assets allow,
as the edit model's pairs are drawn), filled with that edit's own words, and every training
template filled `--fills` times with any training words of its slots (`shuffled_fills`).
Held-out templates and the test asset stream are left for `python -m models.eval edit_kinds`.
Classes are drawn evenly. The resize head learns, beside it, from every training template of a
whole-asset resize filled with each way's words (`resize_fills`) and the edits' own; the pattern
head likewise (`pattern_fills`), and the count head from every training template of a count
change filled with each count of `kinds.COUNTS`, as a word and as digits (`count_fills`). About a
minute on the CPU, most of it MiniLM embedding the instructions.
"""
from __future__ import annotations

import argparse
import time
from string import Formatter

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import save_model
from ..edit.data import EDITS_PER_SOURCE, source_edits
from ..edit.kinds import COUNTS, DEFAULT_WEIGHTS, PATTERNS_ASKED, InstructionKinds, KindReaderConfig
from ..text.encoder import shared_encoder
from ..world.categories import CATEGORIES
from ..world.edits import EDIT_KINDS, INSTRUCTIONS, PATTERN_PHRASE, RESIZE_WORDS, EditPair

RESIZE_KINDS = ("resize_whole", "resize_axis", "resize_part")
# a part resize's extent (kinds.RESIZES) from its word: "shorter" undoes "longer" and "taller"
# alike, so it reads as a length (the part's height unless it lies long across: part_resize.py)
PART_EXTENT = {"longer": "long", "shorter": "long", "taller": "z", "lower": "z", "wider": "x", "narrower": "x",
               "bigger": "whole", "smaller": "whole"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sources", type=int, default=3000)
    p.add_argument("--fills", type=int, default=40, help="random fillings of each training template")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out", default=DEFAULT_WEIGHTS)


def labelled_instructions(edits, phrasing: str, label) -> tuple[list[str], list[str]]:
    """(distinct instructions, the label of each) of these edits whose label(pair) is not None,
    every template of `phrasing` of each edit filled with the edit's own words."""
    seen = {}
    for pair in edits:
        name = label(pair)
        for text in pair.phrasings(phrasing) if name is not None else ():
            seen.setdefault(text, name)
    texts = sorted(seen)
    return texts, [seen[t] for t in texts]


def instructions(split: str, sources: range, phrasing: str) -> tuple[list[str], list[str]]:
    """(distinct instructions, the kind of each) of the edits drawn for these assets."""
    return labelled_instructions(drawn_edits(split, sources, phrasing), phrasing, lambda pair: pair.kind)


def drawn_edits(split: str, sources: range, phrasing: str = "train"):
    """The edits the edit model's training draws for these assets, in its order."""
    for source in sources:
        for _, pair in source_edits(split, source, EDITS_PER_SOURCE, phrasing):
            yield pair


def resize_label(pair: EditPair) -> str | None:
    """The way a resize goes (`kinds.RESIZES`), None for other edits. A part's extent is its
    length (long), height (z), width (x) or size (whole), as its word says (PART_EXTENT)."""
    if pair.kind not in RESIZE_KINDS:
        return None
    way = "up" if pair.details["direction"] > 0 else "down"
    if pair.kind == "resize_part":
        return f"{PART_EXTENT[pair.words['longer']]}_{way}"
    return f"{'whole' if pair.kind == 'resize_whole' else pair.details['axis']}_{way}"


def resize_instructions(split: str, sources: range, phrasing: str,
                        kinds: tuple[str, ...] = RESIZE_KINDS) -> tuple[list[str], list[str]]:
    """(distinct instructions, the way of each) of the resizes of these kinds drawn for these assets."""
    return labelled_instructions(drawn_edits(split, sources, phrasing), phrasing,
                                 lambda pair: resize_label(pair) if pair.kind in kinds else None)


def resize_fills(vocab: dict[str, list[str]], fills: int, rng: np.random.Generator) -> dict[str, tuple[str, str]]:
    """Every training template of a resize filled with each way's words (and random nouns, or
    random part nouns) -> {text: (kind, way)}."""
    out = {}
    part_words = sorted({(word, way) for cat in CATEGORIES.values() for _, up, down in cat.part_sizes.values()
                         for word, way in ((up, "up"), (down, "down"))})
    for template in INSTRUCTIONS["resize_part"]["train"]:
        for word, way in part_words:
            for _ in range(fills // 4):
                out[filled(template, vocab, rng, longer=word)] = "resize_part", f"{PART_EXTENT[word]}_{way}"
    for kind, axes in (("resize_whole", ("whole",)), ("resize_axis", ("z", "x"))):
        for template in INSTRUCTIONS[kind]["train"]:
            for axis in axes:
                for d, way in ((1, "up"), (-1, "down")):
                    words = RESIZE_WORDS[axis][d]
                    given = dict(words) if isinstance(words, dict) else {"taller": words}
                    for _ in range(fills if "noun" in template_slots(template) else 1):
                        out[filled(template, vocab, rng, **given)] = kind, f"{axis}_{way}"
    return out


def pattern_label(pair: EditPair) -> str | None:
    """Which pattern an added pattern is (`kinds.PATTERNS_ASKED`), None for other edits."""
    return pair.details["pattern"] if pair.kind == "add_pattern" else None


def pattern_fills(vocab: dict[str, list[str]], fills: int, rng: np.random.Generator) -> dict[str, str]:
    """Every training template of adding a pattern filled with each pattern's phrase in random
    colour words (and random part nouns) -> {text: pattern}."""
    out = {}
    for template in INSTRUCTIONS["add_pattern"]["train"]:
        for pattern in PATTERNS_ASKED:
            for _ in range(fills // 4):
                phrase = PATTERN_PHRASE[pattern][0].format(c=vocab["c"][rng.integers(len(vocab["c"]))])
                out[filled(template, vocab, rng, pattern=phrase)] = pattern
    return out


def count_label(pair: EditPair) -> int | None:
    """How many of a part a count change asks for (`kinds.COUNTS`), None for other edits."""
    return pair.details["count"] if pair.kind == "change_count" else None


NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight")


def count_fills(fills: int, rng: np.random.Generator) -> dict[str, int]:
    """Every training template of a count change filled with each count of COUNTS, written as a
    word or as digits, and a random counted noun ("legs", "fins": singular for one) -> {text: count}.
    The procedural world asks for one to six; the head reads up to eight."""
    nouns = sorted({cat.noun_for(c) for cat in CATEGORIES.values() for c in cat.counts})
    out = {}
    for template in INSTRUCTIONS["change_count"]["train"]:
        for n in COUNTS:
            for _ in range(max(1, fills // 8)):
                noun = nouns[int(rng.integers(len(nouns)))]
                number = NUMBER_WORDS[n - 1] if rng.random() < 0.75 else str(n)
                out[template.format(n=number, part=noun if n > 1 else noun.rstrip("s"))] = n
    return out


def head_rows(texts: list[str], labelled: dict[str, str], names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows of `texts` a head learns from, the index in `names` of each row's label)."""
    rows = [i for i, t in enumerate(texts) if t in labelled]
    return torch.tensor(rows), torch.tensor([names.index(labelled[texts[i]]) for i in rows])


def slot_vocabulary(sources: range) -> dict[str, list[str]]:
    """Every word the training edits of these assets fill each template slot with."""
    return slot_words(drawn_edits("train", sources))


def slot_words(edits) -> dict[str, list[str]]:
    """Every word these edits fill each template slot with."""
    vocab: dict[str, set] = {}
    for pair in edits:
        for slot, word in pair.words.items():
            vocab.setdefault(slot, set()).add(word)
    return {slot: sorted(words) for slot, words in vocab.items()}


def template_slots(template: str) -> list[str]:
    return [name for _, name, _, _ in Formatter().parse(template) if name]


def filled(template: str, vocab: dict[str, list[str]], rng: np.random.Generator, **given) -> str:
    """The template with `given` words and, in its other slots, random words of the vocabulary."""
    return template.format(**{slot: given[slot] if slot in given else vocab[slot][rng.integers(len(vocab[slot]))]
                              for slot in template_slots(template)})


def shuffled_fills(vocab: dict[str, list[str]], fills: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Every training template of every kind filled `fills` times with words drawn from all the
    training edits' words for each slot (any part noun, any colour word). A part noun alone then
    says nothing of the kind: with each edit's own words only, "spoiler" came mostly with adding
    one, and "without the spoiler" was read as adding it. Texts two kinds could both produce are
    dropped."""
    kind_of: dict[str, str] = {}
    for kind in EDIT_KINDS:
        for template in INSTRUCTIONS[kind]["train"]:
            for _ in range(fills if template_slots(template) else 1):
                text = filled(template, vocab, rng)
                kind_of[text] = kind if kind_of.get(text, kind) == kind else None
    texts = sorted(t for t, k in kind_of.items() if k is not None)
    return texts, [kind_of[t] for t in texts]


def fit(model: torch.nn.Module, batch_loss, steps: int, lr: float, t0: float) -> None:
    """AdamW (weight decay 0.01) with a one-cycle schedule on `batch_loss()` for `steps` steps,
    the loss printed every 500; the model is left in eval mode."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.05)
    model.train()
    for step in range(1, steps + 1):
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0 or step == steps:
            print(f"step {step} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
    model.eval()


@torch.inference_mode()
def embed(texts: list[str], batch: int = 256) -> torch.Tensor:
    encoder = shared_encoder("cpu")
    return torch.cat([encoder.encode(texts[i:i + batch]).pooled for i in range(0, len(texts), batch)])


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    cfg = KindReaderConfig()
    edits = list(drawn_edits("train", range(args.sources)))  # replayed once (~1.5 ms an edit)
    vocab = slot_words(edits)
    texts, kinds = labelled_instructions(edits, "train", lambda pair: pair.kind)
    shuffled = dict(zip(*shuffled_fills(vocab, args.fills, rng)))
    for text, kind in zip(texts, kinds):
        shuffled.setdefault(text, kind)
    resizes = dict(zip(*labelled_instructions(edits, "train", resize_label)))
    for text, (kind, way) in resize_fills(vocab, args.fills, rng).items():
        resizes.setdefault(text, way)
        shuffled.setdefault(text, kind)
    patterns = dict(zip(*labelled_instructions(edits, "train", pattern_label)))
    for text, pattern in pattern_fills(vocab, args.fills, rng).items():
        patterns.setdefault(text, pattern)
        shuffled.setdefault(text, "add_pattern")
    counts_asked = dict(zip(*labelled_instructions(edits, "train", count_label)))
    for text, n in count_fills(args.fills, rng).items():
        counts_asked.setdefault(text, n)
        shuffled.setdefault(text, "change_count")
    texts = sorted(shuffled)
    kinds = [shuffled[t] for t in texts]
    labels = torch.tensor([cfg.kinds.index(k) for k in kinds])
    pooled = embed(texts)
    resize_rows, resize_labels = head_rows(texts, resizes, cfg.resizes)
    pattern_rows, pattern_labels = head_rows(texts, patterns, cfg.patterns)
    count_rows, count_labels = head_rows(texts, counts_asked, cfg.counts)
    print(f"{len(texts)} training instructions embedded in {time.time() - t0:.0f}s; per kind "
          f"{dict(zip(cfg.kinds, torch.bincount(labels, minlength=len(cfg.kinds)).tolist()))}; resizes per way "
          f"{dict(zip(cfg.resizes, torch.bincount(resize_labels, minlength=len(cfg.resizes)).tolist()))}; "
          f"patterns {dict(zip(cfg.patterns, torch.bincount(pattern_labels, minlength=len(cfg.patterns)).tolist()))}; "
          f"counts {dict(zip(cfg.counts, torch.bincount(count_labels, minlength=len(cfg.counts)).tolist()))}",
          flush=True)
    model = InstructionKinds(cfg)
    model.pooled_mean.copy_(pooled.mean(0))
    model.pooled_std.copy_(pooled.std(0).clamp(min=1e-4))
    order = np.argsort(labels.numpy(), kind="stable")
    counts = np.bincount(labels.numpy(), minlength=len(cfg.kinds))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def batch_loss() -> torch.Tensor:
        cls = rng.integers(0, len(cfg.kinds), args.batch)  # kinds drawn evenly
        idx = torch.from_numpy(order[starts[cls] + (rng.random(args.batch) * counts[cls]).astype(np.int64)])
        r = torch.from_numpy(rng.integers(0, len(resize_rows), args.batch // 4))
        q = torch.from_numpy(rng.integers(0, len(pattern_rows), args.batch // 4))
        c = torch.from_numpy(rng.integers(0, len(count_rows), args.batch // 4))
        return (F.cross_entropy(model(pooled[idx]), labels[idx], label_smoothing=0.05)
                + F.cross_entropy(model.resize_logits(pooled[resize_rows[r]]), resize_labels[r], label_smoothing=0.05)
                + F.cross_entropy(model.pattern_logits(pooled[pattern_rows[q]]), pattern_labels[q],
                                  label_smoothing=0.05)
                + F.cross_entropy(model.count_logits(pooled[count_rows[c]]), count_labels[c], label_smoothing=0.05))

    fit(model, batch_loss, args.steps, args.lr, t0)
    with torch.inference_mode():
        acc = float((model(pooled).argmax(-1) == labels).float().mean())
        resize_acc = float((model.resize_logits(pooled[resize_rows]).argmax(-1) == resize_labels).float().mean())
        pattern_acc = float((model.pattern_logits(pooled[pattern_rows]).argmax(-1) == pattern_labels).float().mean())
        count_acc = float((model.count_logits(pooled[count_rows]).argmax(-1) == count_labels).float().mean())
    save_model(model, args.out, cfg.to_dict(), seed=args.seed, sources=args.sources, steps=args.steps,
               instructions=len(texts), train_accuracy=round(acc, 4), resize_instructions=len(resize_rows),
               train_resize_accuracy=round(resize_acc, 4), pattern_instructions=len(pattern_rows),
               train_pattern_accuracy=round(pattern_acc, 4), count_instructions=len(count_rows),
               train_count_accuracy=round(count_acc, 4), train_seconds=round(time.time() - t0, 1))
    print(f"training accuracy {acc:.4f}, resize way {resize_acc:.4f}, pattern {pattern_acc:.4f}, count "
          f"{count_acc:.4f}; saved {args.out} "
          f"in {time.time() - t0:.0f}s", flush=True)
    return 0
