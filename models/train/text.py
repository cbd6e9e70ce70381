"""Train the text -> latent rectified-flow DiT on encoded procedural assets and their captions.

    python -m models.train text --seed 0

Needs the autoencoder weights (the latent space) and reuses the autoencoder's cached
training data (surface points) when present. Two stages: --steps from scratch (after the
prompt summary's pre-training), then --continue-steps more from the first stage's EMA weights
with a fresh warm-up and a lower learning rate (--init starts there from given weights).
Writes models/weights/text.safetensors with the DiT (EMA weights), the latent normalisation,
a bank of caption embeddings for out-of-domain warnings and the calibrated warning threshold.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import time

import numpy as np
import torch

from ..checkpoint import save_model
from ..data import load_or_build
from ..triplane.loading import load_autoencoder
from ..world.asset import sample_asset_spec
from ..world.captions import SIZE_WORDS, caption, size_words
from ..world.categories import CATEGORIES, CATEGORY_NAMES
from ..world.palette import COLOUR_NAMES
from ..text.conditioning import standardise_text, text_statistics
from ..text.dit import DiTConfig
from ..text.encoder import SentenceEncoder
from ..text.flow import flow_inputs
from ..text.pipeline import DEFAULT_WEIGHTS, TextModel
from .decoded import DecodedField
from .flow_loop import (add_runtime_arguments, add_summary_arguments, dit_weights, drop_condition, drop_tokens,
                        new_dit, optimise, training_device, two_stage_run, weights_bundle)

SIZE_NAMES = tuple(SIZE_WORDS)  # small, large, tall, short
SPARSE_OMIT = 0.5  # chance that a sparse caption leaves out each of colour, size words, parts
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=4000, help="optimisation steps to run")
    p.add_argument("--schedule-steps", type=int, default=4000,
                   help="length of the cosine learning-rate schedule; a run of --steps N < this reproduces "
                        "step N of a longer run exactly")
    p.add_argument("--batch", type=int, default=48)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--assets", type=int, default=4000)
    p.add_argument("--captions", type=int, default=10, help="captions per asset")
    p.add_argument("--sparse-captions", type=int, default=0,
                   help="second stage: this many more captions per asset that may leave out the colour, size "
                        "words and parts (\"a table\"), so under-specified prompts are in the training data")
    p.add_argument("--cfg-dropout", type=float, default=0.1)
    p.add_argument("--token-dropout", type=float, default=0.0,
                   help="share of samples conditioned on the pooled sentence embedding alone (token features "
                        "masked), so that the sentence-level meaning, which paraphrases share, carries the asset")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--attribute-condition", action=argparse.BooleanOptionalAction, default=False,
                   help="condition adaLN on the prompt summary's read-out probabilities (category, colours, "
                        "sizes) as well")
    p.add_argument("--t-one", type=float, default=0.5,
                   help="share of each batch trained at t = 1, where the prompt is the only information")
    add_summary_arguments(p)
    add_runtime_arguments(p)
    p.add_argument("--continue-steps", type=int, default=3000,
                   help="second stage: this many more steps from the first stage's EMA weights, with a fresh "
                        "warm-up and cosine schedule at --continue-lr (the same seed)")
    p.add_argument("--continue-lr", type=float, default=1e-4)
    p.add_argument("--decoded-weight", type=float, default=0.0,
                   help="second stage: weight of a loss on the decoded prediction of x0 (the autoencoder's "
                        "SDF L1 + colour MSE at the asset's query points, through the frozen decoder), times 10")
    p.add_argument("--freeze-prompt-head", action="store_true",
                   help="second stage: keep the prompt summary as the first stage left it (no gradient, no "
                        "read-out loss), so that what it learned of held-out phrasings is not traded for the "
                        "second stage's losses")
    p.add_argument("--decoded-batch", type=int, default=8, help="samples of each batch decoded for that loss")
    p.add_argument("--decoded-points", type=int, default=2048, help="query points per decoded sample")
    p.add_argument("--init", default="", help="weights of the first stage: start the second from them")
    p.add_argument("--cache", default=os.path.join(REPO, "runs", "data"))
    p.add_argument("--run-dir", default=os.path.join(REPO, "runs", "text"))
    p.add_argument("--out", default=DEFAULT_WEIGHTS)


@torch.no_grad()
def encode_assets(ae, surface: np.ndarray, batch: int = 64) -> torch.Tensor:
    device = next(ae.parameters()).device
    out = []
    for s in range(0, len(surface), batch):
        cloud = torch.from_numpy(surface[s:s + batch, :2048].astype(np.float32)).to(device)
        out.append(ae.encode(cloud))
    return torch.cat(out)


def normalised_asset_latents(ae, n_assets: int, cache: str, workers: int = 2, data: dict | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents of training assets 0..n-1 (on the autoencoder's device), normalised per
    (plane, channel); and the mean and std. data: those assets' samples, if already loaded."""
    data = data if data is not None else load_or_build("train", n_assets, cache, workers)
    latents = encode_assets(ae, data["surface"])
    mean = latents.mean(dim=(0, 3, 4), keepdim=True)[0]
    std = latents.std(dim=(0, 3, 4), keepdim=True)[0].clamp(min=1e-3)
    return (latents - mean) / std, mean, std


def caption_table(n: int, k: int, seed: int, split: str = "train", phrasing: str = "train", sparse: int = 0
                  ) -> list[list[str]]:
    """k full captions per asset, then `sparse` that may leave out its colour, size and parts
    (from their own random stream, so the full ones are the same whatever `sparse` is)."""
    table = []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 7])
        spec = sample_asset_spec(split, i)
        row = [caption(spec, rng, phrasing) for _ in range(k)]
        sparse_rng = np.random.default_rng([seed, i, 8])
        table.append(row + [caption(spec, sparse_rng, phrasing, omit=SPARSE_OMIT) for _ in range(sparse)])
    return table


def attribute_targets(n: int, split: str = "train") -> dict:
    """What each asset 0..n-1 is, as the prompt summary's auxiliary targets: category and main
    colour (indices), the colours on it and its size words (multi-hot). Every caption of the
    asset states all of these."""
    specs = [sample_asset_spec(split, i) for i in range(n)]
    colours = torch.zeros(n, len(COLOUR_NAMES))
    sizes = torch.zeros(n, len(SIZE_NAMES))
    for i, spec in enumerate(specs):
        used = set(spec.colours.values()) | {second for _, second in spec.patterns.values()}
        colours[i, [COLOUR_NAMES.index(c) for c in used]] = 1
        sizes[i, [SIZE_NAMES.index(w) for w in size_words(spec)]] = 1
    return {"category": torch.tensor([CATEGORY_NAMES.index(s.category) for s in specs]),
            "main_colour": torch.tensor([COLOUR_NAMES.index(s.main_colour()) for s in specs]),
            "colours": colours, "sizes": sizes}


def pick(targets: dict, idx) -> dict:
    return {k: v[idx] for k, v in targets.items()}


@torch.no_grad()
def embed(encoder: SentenceEncoder, texts: list[str], batch: int = 256):
    toks, masks, pooled = [], [], []
    for s in range(0, len(texts), batch):
        e = encoder.encode(texts[s:s + batch])
        toks.append(e.tokens.half())
        masks.append(e.mask)
        pooled.append(e.pooled)
    return torch.cat(toks), torch.cat(masks), torch.cat(pooled)


def embedded_captions(encoder: SentenceEncoder, captions: list[list[str]], path: str) -> tuple:
    """(tokens fp16, masks, pooled) of the flattened caption table, cached at `path` and keyed
    by the captions' text, so changed templates or words re-embed."""
    flat = [c for row in captions for c in row]
    key = hashlib.sha256("\n".join(flat).encode()).hexdigest()
    if os.path.exists(path):
        cached = torch.load(path, weights_only=True)  # written below by this function
        if cached.get("key") == key:
            return cached["tokens"], cached["masks"], cached["pooled"]
    tokens, masks, pooled = embed(encoder, flat)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"tokens": tokens, "masks": masks, "pooled": pooled, "key": key}, path)
    return tokens, masks, pooled


def held_out_phrasings(encoder: SentenceEncoder, text_stats: dict, device, n: int = 300) -> tuple:
    """Standardised token features and attribute targets of held-out phrasings of held-out assets
    (only reported in the log, never trained on)."""
    enc = encoder.encode([row[0] for row in caption_table(n, 1, 1, "test", "heldout")])
    _, tokens, masks = standardise_text(enc.pooled, enc.tokens, enc.mask, text_stats)
    return tokens, masks, {k: v.to(device) for k, v in attribute_targets(n, "test").items()}


def concept_names() -> list[str]:
    return [CATEGORIES[c].nouns[0] for c in CATEGORY_NAMES] + list(COLOUR_NAMES)


def run(args: argparse.Namespace) -> int:
    device = training_device(args)
    torch.manual_seed(args.seed)
    t0 = time.time()
    ae = load_autoencoder(device=device)
    data = load_or_build("train", args.assets, args.cache, args.workers)
    x0_all, mean, std = normalised_asset_latents(ae, args.assets, args.cache, data=data)
    field = DecodedField(ae, data, mean, std, args.decoded_points) if args.decoded_weight > 0 else None
    print(f"encoded {len(x0_all)} assets in {time.time() - t0:.0f}s on {device}", flush=True)

    encoder = SentenceEncoder(device)
    captions = caption_table(args.assets, args.captions, args.seed, sparse=args.sparse_captions)
    per_asset = args.captions + args.sparse_captions
    cache = os.path.join(args.cache, f"text_captions_{args.assets}x{args.captions}+{args.sparse_captions}"
                                     f"_seed{args.seed}.pt")
    tokens, masks, raw_pooled = embedded_captions(encoder, captions, cache)
    tokens, masks, raw_pooled = tokens.to(device), masks.to(device), raw_pooled.to(device)
    # statistics of the full captions alone: the first stage's, whatever --sparse-captions adds
    full_rows = (torch.arange(len(tokens), device=tokens.device) % per_asset) < args.captions
    text_stats = text_statistics(raw_pooled[full_rows], tokens[full_rows], masks[full_rows])
    pooled, tokens, masks = standardise_text(raw_pooled, tokens, masks, text_stats)
    tokens = tokens.half()
    print(f"embedded {len(pooled)} captions in {time.time() - t0:.0f}s", flush=True)

    targets = {k: v.to(device) for k, v in attribute_targets(args.assets).items()}
    cfg = DiTConfig(latent_channels=ae.cfg.latent_channels, latent_res=ae.cfg.latent_res,
                    summary_queries=args.summary_queries, attend_raw_tokens=not args.no_raw_tokens,
                    attribute_classes=(len(CATEGORY_NAMES), len(COLOUR_NAMES), len(COLOUR_NAMES), len(SIZE_NAMES))
                    if args.summary_queries else (),
                    # float targets are multi-hot sets (attribute_targets)
                    attribute_multi_hot=tuple(v.is_floating_point() for v in targets.values())
                    if args.summary_queries else (),
                    attribute_condition=args.attribute_condition)
    def caption_batch(rng, batch):
        # full captions only: each states every attribute the read-out is trained on
        flat = rng.integers(0, args.assets * args.captions, batch)
        cap = flat // args.captions * per_asset + flat % args.captions
        return tokens[cap].float(), masks[cap], pick(targets, torch.from_numpy(flat // args.captions))

    def make_step_with(decoded_weight, freeze_head=False, sparse=False):
        choices = per_asset if sparse else args.captions

        def make_step(net, opt, sched, rng, gen):
            if freeze_head:
                net.prompt_head.requires_grad_(False)

            def step():
                asset = rng.integers(0, args.assets, args.batch)
                which = rng.integers(0, choices, args.batch)
                cap = asset * per_asset + which
                cond = drop_condition(net, rng, args.cfg_dropout, pooled[cap], tokens[cap].float(), masks[cap])
                if args.token_dropout > 0:
                    cond = drop_tokens(net, rng, args.token_dropout, *cond)
                x_t, t, velocity = flow_inputs(x0_all[asset], gen, args.t_one)
                pred = net(x_t, t, *cond)
                loss = ((pred - velocity) ** 2).mean()
                if decoded_weight > 0:
                    # the clean latent the prediction implies, x_t - t v: a thin part the latent MSE
                    # barely weighs (a table's top, a chair's leg joints) counts by what it decodes to
                    k = args.decoded_batch
                    x0_pred = x_t[:k] - t[:k].view(-1, 1, 1, 1, 1) * pred[:k]
                    loss = loss + decoded_weight * field.loss(x0_pred, asset[:k], rng)
                full = which < args.captions  # a sparse caption does not state what the read-out names
                if args.summary_queries and args.aux_weight > 0 and not freeze_head and full.any():
                    summary = net.prompt_head(tokens[cap[full]].float(), masks[cap[full]])
                    loss = loss + args.aux_weight * net.prompt_probe.loss(
                        summary, pick(targets, torch.from_numpy(asset[full])))
                optimise(net, opt, sched, loss)
                return loss
            return step
        return make_step

    def saver(stage_args, first_steps):
        def save(ema, step, elapsed):
            _save(stage_args, ema, mean, std, raw_pooled, text_stats, encoder, elapsed, first_steps + step,
                  device, continued=step if first_steps else 0)
        return save

    two_stage_run(args, device,
                  lambda: new_dit(cfg, args, device, caption_batch,
                                  lambda: held_out_phrasings(encoder, text_stats, device)),
                  dit_weights(TextModel, device),
                  lambda stage: make_step_with(10.0 * args.decoded_weight if stage == 2 else 0.0,
                                               freeze_head=stage == 2 and args.freeze_prompt_head,
                                               sparse=stage == 2), saver,
                  args.continue_steps,
                  args.continue_lr, warmup=(300, 100), save_every=(1000, 1000), second_seed_offset=0)
    return 0


def _save(args, ema, mean, std, pooled, text_stats, encoder, train_s, step, device, continued: int = 0) -> None:
    bank_idx = torch.linspace(0, len(pooled) - 1, min(4096, len(pooled))).long()
    bank = pooled[bank_idx]
    names = concept_names()
    concept_bank = encoder.encode([f"a {n}" for n in names]).pooled
    # warning threshold: below (almost) every held-out in-domain phrasing's similarity
    held = [c for row in caption_table(200, 1, args.seed + 1, "test", "heldout") for c in row]
    sims = (encoder.encode(held).pooled @ bank.T).max(1).values
    threshold = float(torch.quantile(sims, 0.01)) - 0.02
    bundle = weights_bundle(ema, latent_mean=mean, latent_std=std, caption_bank=bank.half(),
                            concept_bank=concept_bank.half(), **text_stats)
    save_model(bundle, args.out, ema.cfg.to_dict(), half=True, concepts=names, ood_threshold=round(threshold, 4),
               seed=args.seed, steps=step, schedule_steps=max(args.schedule_steps, args.steps), batch=args.batch,
               assets=args.assets, captions_per_asset=args.captions,
               sparse_captions_per_asset=args.sparse_captions if continued else 0, t_one=args.t_one,
               token_dropout=args.token_dropout, attribute_condition=args.attribute_condition,
               head_pretrain=args.head_pretrain, aux_weight=args.aux_weight,
               continue_steps=continued, lr=args.lr, decoded_weight=args.decoded_weight if continued else 0.0,
               freeze_prompt_head=bool(args.freeze_prompt_head and continued),
               decoded_batch=args.decoded_batch, decoded_points=args.decoded_points,
               train_seconds=round(train_s), device=device.type, version="1.0")
