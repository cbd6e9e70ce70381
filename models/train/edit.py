"""Train the instruction-editing flow on exact before/after pairs of the procedural world.

    python -m models.train edit --seed 0

Needs the autoencoder weights (the latent space). Each pair's source and target clouds
(shared samples on untouched parts, see models/edit/data.py) are encoded by the
autoencoder; the DiT learns the rectified flow of the normalised delta (target - source)
given the normalised source latent and the instruction's sentence features, with 10%
instruction dropout for classifier-free guidance; 90% of samples at t = 1, where one Euler step
gives the conditional mean the pipeline uses. A change gate beside the velocity learns which
latent texels the edit changes (from the true delta). Writes models/weights/edit.safetensors:
EMA weights, normalisation, the instruction bank and the calibrated warning threshold.

Two stages: the flow loss as above (--steps), then --balanced-steps more from the first stage's
EMA weights with each pair's loss divided by its delta's energy (plus a floor). Plain MSE weighs
a pair by how much latent it moves: a whole resize moves ~10x what adding a part or recolouring
one does, so the small, local edits were under-fitted (their predicted deltas 0.6-0.8 of the
true size on training pairs). --decoded-weight adds, in the second stage, a loss on the decoded
edit at the target's surface points (SurfaceLoss). --init skips the first stage by starting
from its weights.

A third stage (--structure-steps) goes on, balanced as the second, over the same pairs plus the
edits that add or take away parts (adding a part, changing a count) of --structure-sources
further sources: the flow model still makes those at inference and under-fits them most, and
only about a third of the assets allow one. With --balanced-steps 0, --init names the second
stage's weights and the third runs alone.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import save_model
from ..edit import unsupported
from ..edit.data import PAIRS_VERSION, PairKey, edit_for, load_or_build_pairs, replayed_pairs
from ..edit.pipeline import DEFAULT_WEIGHTS, SUPPORTED_EXAMPLES, EditModel
from ..text.conditioning import standardise_text, text_statistics
from ..text.dit import DiTConfig
from ..text.encoder import SentenceEncoder
from ..text.flow import flow_inputs
from ..triplane.autoencoder import decoded_field_loss
from ..triplane.loading import load_autoencoder
from ..world.edits import EDIT_KINDS, EditPair
from ..world.palette import COLOUR_NAMES, PATTERNS
from .flow_loop import (add_runtime_arguments, add_summary_arguments, dit_weights, drop_condition, new_dit, optimise,
                        planned_run, train, training_device, two_stage_run, weights_bundle)
from .text import embed, pick

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=7400)
    p.add_argument("--schedule-steps", type=int, default=7400,
                   help="cosine schedule length; --steps N below it reproduces step N of the longer run")
    p.add_argument("--batch", type=int, default=48)
    p.add_argument("--lr", type=float, default=4e-4)
    # 0.9: inference takes one step from t = 1 (the conditional mean), so most training goes there
    p.add_argument("--t-one", type=float, default=0.9, help="share of training samples at t = 1 (pure noise)")
    p.add_argument("--change-gate", type=float, default=0.25,
                   help="> 0: also predict which latent texels the edit changes, with this weight on its loss")
    p.add_argument("--balanced-steps", type=int, default=3000,
                   help="second-stage steps with each pair's loss divided by its delta energy (+ --balance-floor)")
    p.add_argument("--balance-floor", type=float, default=0.25,
                   help="added to a pair's delta energy (mean over pairs ~1) before dividing by it")
    p.add_argument("--balanced-lr", type=float, default=2e-4)
    p.add_argument("--decoded-weight", type=float, default=0.0,
                   help="second stage: weight of a loss on the decoded edit at the target's surface points "
                        "(SDF there is 0, colour the target's), for samples at t = 1")
    p.add_argument("--decoded-batch", type=int, default=8, help="samples of each batch decoded for that loss")
    p.add_argument("--decoded-points", type=int, default=1024, help="target surface points per decoded sample")
    p.add_argument("--structure-steps", type=int, default=3000,
                   help="third-stage steps on the pairs plus --structure-sources more sources' part additions "
                        "and count changes (models.edit.data.STRUCTURE_KINDS), balanced as the second")
    p.add_argument("--structure-sources", type=int, default=4000,
                   help="sources after --sources whose edits that add or take away parts the third stage adds")
    p.add_argument("--structure-lr", type=float, default=1.5e-4)
    p.add_argument("--init", default="",
                   help="weights of the stages before the ones to run: with --balanced-steps > 0 the first "
                        "stage's, else the second's (the third stage alone)")
    p.add_argument("--sources", type=int, default=3000, help="training source assets (2 edits each)")
    p.add_argument("--cfg-dropout", type=float, default=0.1)
    p.add_argument("--ema", type=float, default=0.999)
    # off by default: with the summary (8 queries) the instruction's kind and colour are read
    # right for 95% / 85% of held-out phrasings, yet edit success did not move (models/cards/edit.md)
    add_summary_arguments(p, queries=0)
    add_runtime_arguments(p)
    p.add_argument("--cache", default=os.path.join(REPO, "runs", "data"))
    p.add_argument("--run-dir", default=os.path.join(REPO, "runs", "edit"))
    p.add_argument("--out", default=DEFAULT_WEIGHTS)


@torch.no_grad()
def encode_clouds(ae, clouds: list[np.ndarray]) -> torch.Tensor:
    """Clouds of different sizes, one at a time (the encoder's scatter-mean takes any N)."""
    device = next(ae.parameters()).device
    return torch.cat([ae.encode(torch.from_numpy(c.astype(np.float32))[None].to(device)) for c in clouds])


def encoded_pairs(ae, pairs: list[dict], path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Source and target latents of every pair, cached next to the pair data (encoding
    12k clouds of 8192 points takes ~10 min on 2 cores); the cache is keyed by the
    autoencoder's weights so a retrained latent space re-encodes."""
    from ..triplane.loading import DEFAULT_WEIGHTS as AE_WEIGHTS

    key = f"{os.path.getsize(AE_WEIGHTS)}-{int(os.path.getmtime(AE_WEIGHTS))}-{len(pairs)}"
    if os.path.exists(path):
        cached = torch.load(path, weights_only=True)  # a file this script wrote
        if cached.get("key") == key:
            device = next(ae.parameters()).device
            return cached["src"].to(device), cached["tgt"].to(device)
    src = encode_clouds(ae, [p["src"] for p in pairs])
    tgt = encode_clouds(ae, [p["tgt"] for p in pairs])
    torch.save({"key": key, "src": src.cpu(), "tgt": tgt.cpu()}, path)
    return src, tgt


STRUCTURE_CHUNK = 4000  # sources per cached file of the third stage's pairs


def structure_chunks(first: int, n_sources: int) -> list[tuple[int, int]]:
    """(first source, sources) of each cached chunk of the third stage's sources."""
    return [(first + i, min(STRUCTURE_CHUNK, n_sources - i)) for i in range(0, n_sources, STRUCTURE_CHUNK)]


CHANGED = 0.1  # a latent texel the edit changes: its delta is above this share of the pair's largest


def changed_texels(delta_n: torch.Tensor) -> torch.Tensor:
    """(N, 3, C, R, R) normalised deltas -> (N, 3, R, R) float targets of the change gate: 1 where the
    texel's delta norm is above CHANGED of the pair's largest (measured: 40% of the texels, holding
    98% of the deltas' energy; the rest is the encoder's noise where its input points moved)."""
    size = delta_n.norm(dim=2)
    return (size > CHANGED * size.flatten(1).amax(1).view(-1, 1, 1, 1)).float()


def balanced_weights(delta_n: torch.Tensor, floor: float) -> torch.Tensor:
    """(N,) loss weights of the pairs, mean 1: inverse to each normalised delta's energy plus `floor`,
    so that every edit counts about alike however much of the latent it moves (the floor keeps
    near-empty deltas, encoder noise, from dominating)."""
    w = 1.0 / (delta_n.pow(2).mean(dim=(1, 2, 3, 4)) + floor)
    return w / w.mean()


class SurfaceLoss:
    """The decoded edit against the target's surface samples: source latent + predicted delta ->
    frozen autoencoder decoder -> SDF (0 on the target's surface) and colour (the target's) at
    random points of the pair's target cloud, with the autoencoder's own loss terms. Latent MSE
    weighs a recoloured handle by its few texels; this weighs it by what the decoded mesh shows."""

    def __init__(self, ae, clouds: list[np.ndarray], src: torch.Tensor, delta_std: torch.Tensor, points: int):
        self.ae = ae.eval().requires_grad_(False)
        self.clouds, self.src, self.delta_std, self.points = clouds, src, delta_std, points

    def loss(self, delta_n: torch.Tensor, pairs: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        if len(pairs) == 0:
            return delta_n.new_zeros(())
        dev = delta_n.device
        cloud = np.stack([self.clouds[i][rng.integers(0, len(self.clouds[i]), self.points)] for i in pairs])
        cloud = torch.from_numpy(cloud.astype(np.float32)).to(dev)
        latent = self.src[torch.from_numpy(pairs).to(dev)] + delta_n * self.delta_std
        return decoded_field_loss(self.ae, latent, cloud[..., :3], cloud.new_zeros(cloud.shape[:2]), cloud[..., 3:6])


AXES = ("none", "whole", "z", "x")


def edit_targets(edits: list[EditPair]) -> dict:
    """What each edit does, as the instruction summary's auxiliary targets (class indices): its
    kind, the colour it applies (or none), the direction of a resize (down, none, up), the axis
    of a resize and the pattern it adds (or none). The instruction states each of these."""
    def colour(e):
        return COLOUR_NAMES.index(e.details["colour"]) if "colour" in e.details else len(COLOUR_NAMES)

    def direction(e):
        return 1 + e.details["direction"] if e.kind.startswith("resize") else 1

    def axis(e):
        return AXES.index({"resize_whole": "whole", "resize_axis": e.details.get("axis")}.get(e.kind) or "none")

    def pattern(e):
        return PATTERNS.index(e.details["pattern"]) if e.kind == "add_pattern" else 0

    return {name: torch.tensor([f(e) for e in edits]) for name, f in (
        ("kind", lambda e: EDIT_KINDS.index(e.kind)), ("colour", colour), ("direction", direction),
        ("axis", axis), ("pattern", pattern))}


EDIT_TARGET_CLASSES = (len(EDIT_KINDS), len(COLOUR_NAMES) + 1, 3, len(AXES), len(PATTERNS))


def held_out_instructions(encoder: SentenceEncoder, text_stats: dict, device, n: int = 300) -> tuple:
    """Standardised features and targets of held-out phrasings on held-out sources (only reported)."""
    edits = [e for e in (edit_for(PairKey("test", 20000 + i, 0, "heldout")) for i in range(n)) if e is not None]
    enc = encoder.encode([e.instruction for e in edits])
    _, tokens, masks = standardise_text(enc.pooled, enc.tokens, enc.mask, text_stats)
    return tokens, masks, {k: v.to(device) for k, v in edit_targets(edits).items()}


def ood_threshold(encoder: SentenceEncoder, bank: torch.Tensor, n: int = 200) -> float:
    """Just below (almost) every held-out phrasing's similarity to the training instructions."""
    held = []
    for i in range(n):
        pair = edit_for(PairKey("test", 20000 + i, 0, "heldout"))
        if pair is not None:
            held.append(pair.instruction)
    sims = (encoder.encode(held).pooled @ bank.T).max(1).values
    return float(torch.quantile(sims, 0.01)) - 0.02


def run(args: argparse.Namespace) -> int:
    device = training_device(args)
    torch.manual_seed(args.seed)
    t0 = time.time()
    # the data first: worker processes are forked before CUDA starts
    pairs = load_or_build_pairs(args.sources, args.cache, workers=args.workers)
    edits = replayed_pairs(pairs, args.sources)
    n_main = len(pairs)  # the first two stages' pairs; the third adds the structure pairs after them
    chunks = structure_chunks(args.sources, args.structure_sources) if args.structure_steps else []
    chunk_sizes = []
    for first, n in chunks:  # cached in chunks: more sources build only the new ones
        more = load_or_build_pairs(n, args.cache, workers=args.workers, first=first, group="structure")
        edits += replayed_pairs(more, n, first=first, group="structure")
        pairs = pairs + more
        chunk_sizes.append(len(more))
    print(f"{len(pairs)} edit pairs ready in {time.time() - t0:.0f}s", flush=True)
    ae = load_autoencoder(device=device)
    src, tgt = encoded_pairs(ae, pairs[:n_main],
                             os.path.join(args.cache, f"edit_latents_{args.sources}_v{PAIRS_VERSION}.pt"))
    start = n_main
    for (first, n), size in zip(chunks, chunk_sizes):
        name = f"edit_latents_structure_{first}+{n}_v{PAIRS_VERSION}.pt"
        more_src, more_tgt = encoded_pairs(ae, pairs[start:start + size], os.path.join(args.cache, name))
        src, tgt = torch.cat([src, more_src]), torch.cat([tgt, more_tgt])
        start += size
    kinds = np.array([p["kind"] for p in pairs])
    print(f"encoded in {time.time() - t0:.0f}s on {device}; pairs per kind: "
          f"{dict(zip(EDIT_KINDS, np.bincount(kinds, minlength=len(EDIT_KINDS)).tolist()))}", flush=True)
    # normalisation from the first two stages' pairs only: the third starts from their weights
    mean = src[:n_main].mean(dim=(0, 3, 4), keepdim=True)[0]
    std = src[:n_main].std(dim=(0, 3, 4), keepdim=True)[0].clamp(min=1e-3)
    delta = tgt - src
    delta_std = delta[:n_main].std(dim=(0, 3, 4), keepdim=True)[0].clamp(min=1e-3)
    source_n, delta_n = (src - mean) / std, delta / delta_std
    changed = changed_texels(delta_n)

    encoder = SentenceEncoder(device)
    # each step draws one of the pair's training phrasings ("make it blue", "paint it blue", ...)
    variants = [e.phrasings() for e in edits]
    texts = sorted({t for v in variants[:n_main] for t in v})
    tokens, masks, raw_pooled = embed(encoder, texts)
    text_stats = text_statistics(raw_pooled, tokens, masks)
    more_texts = sorted({t for v in variants[n_main:] for t in v} - set(texts))
    if more_texts:  # appended, so the statistics and the instruction bank stay the first stages'
        more = embed(encoder, more_texts)
        tokens, masks, all_pooled = (torch.cat([a, b]) for a, b in zip((tokens, masks, raw_pooled), more))
    else:
        all_pooled = raw_pooled
    index = {t: i for i, t in enumerate(texts + more_texts)}
    flat = torch.tensor([index[t] for v in variants for t in v])
    counts = np.array([len(v) for v in variants])
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pooled, tokens, masks = standardise_text(all_pooled, tokens, masks, text_stats)
    print(f"{len(index)} distinct instructions embedded in {time.time() - t0:.0f}s", flush=True)

    targets = {k: v.to(device) for k, v in edit_targets(edits).items()}
    text_of_pair = flat.to(device)
    cfg = DiTConfig(latent_channels=ae.cfg.latent_channels, latent_res=ae.cfg.latent_res, extra_cond_tokens=1,
                    summary_queries=args.summary_queries, attend_raw_tokens=not args.no_raw_tokens,
                    attribute_classes=EDIT_TARGET_CLASSES if args.summary_queries else (),
                    change_gate=args.change_gate > 0)

    def instruction_batch(rng, batch):
        pair = rng.integers(0, n_main, batch)
        k = text_of_pair[offsets[pair] + rng.integers(0, counts[pair])]
        return tokens[k].float(), masks[k], pick(targets, torch.from_numpy(pair))

    surface = SurfaceLoss(ae, [p["tgt"] for p in pairs], src, delta_std, args.decoded_points)

    def make_step_with(pair_weights, decoded_weight=0.0, n_pairs=n_main):
        def make_step(net, opt, sched, rng, gen):
            def step():
                pair = rng.integers(0, n_pairs, args.batch)
                b = torch.from_numpy(pair)
                k = flat[offsets[pair] + rng.integers(0, counts[pair])]
                cond = drop_condition(net, rng, args.cfg_dropout, pooled[k], tokens[k].float(), masks[k])
                x_t, t, velocity = flow_inputs(delta_n[b], gen, args.t_one)
                if args.change_gate > 0:
                    pred, gate = net(x_t, t, *cond, source_n[b], with_gate=True)
                    gate_loss = args.change_gate * F.binary_cross_entropy_with_logits(gate, changed[b])
                else:
                    pred, gate_loss = net(x_t, t, *cond, source_n[b]), 0.0
                per_pair = (pred - velocity).pow(2).mean(dim=(1, 2, 3, 4))
                loss = (per_pair if pair_weights is None else per_pair * pair_weights[b]).mean() + gate_loss
                if decoded_weight > 0:
                    # the delta the one-step pipeline would apply: x_t - t * v at t = 1, gated
                    d = torch.nonzero(t[:args.decoded_batch] == 1).flatten()
                    delta_d = x_t[d] - pred[d]
                    if args.change_gate > 0:
                        delta_d = delta_d * torch.sigmoid(gate[d])[:, :, None]
                    loss = loss + decoded_weight * surface.loss(delta_d, pair[d.numpy()], rng)
                if args.summary_queries and args.aux_weight > 0:
                    summary = net.prompt_head(tokens[k].float(), masks[k])
                    loss = loss + args.aux_weight * net.prompt_probe.loss(summary, pick(targets, b))
                optimise(net, opt, sched, loss)
                return loss
            return step
        return make_step

    def saver(stage_args, first_steps, balanced_steps=None):
        run_args = argparse.Namespace(**{**vars(args), "out": stage_args.out})  # the command's own settings

        def save(ema, step, elapsed):
            if balanced_steps is None:  # the first or second stage
                stages, n_pairs = dict(steps=first_steps or step, balanced_steps=step if first_steps else 0), n_main
            else:
                stages, n_pairs = dict(steps=first_steps, balanced_steps=balanced_steps, structure_steps=step), len(pairs)
            _save(run_args, ema, cfg, mean, std, delta_std, raw_pooled, text_stats, encoder, n_pairs, elapsed,
                  stages, device)
        return save

    # with a third stage the second writes to the run directory and the third to --out
    second = os.path.join(args.run_dir, "stage2.safetensors")
    two_stage_args = argparse.Namespace(**{**vars(args), "out": second}) if args.structure_steps else args
    load_weights = dit_weights(EditModel, device)
    weights = balanced_weights(delta_n[:n_main], args.balance_floor)
    two_stage_run(two_stage_args, device,
                  lambda: new_dit(cfg, args, device, instruction_batch,
                                  lambda: held_out_instructions(encoder, text_stats, device)),
                  load_weights,
                  lambda stage: make_step_with(weights, args.decoded_weight) if stage == 2 else make_step_with(None),
                  saver, args.balanced_steps, args.balanced_lr, warmup=(300, 100), save_every=(500, 250))
    if args.structure_steps:
        last = args.init if args.init and not args.balanced_steps else second
        model, meta = load_weights(last)
        print(f"third stage from {last} ({meta['steps']} + {meta.get('balanced_steps', 0)} steps)", flush=True)
        stage = argparse.Namespace(**{**vars(args), "steps": args.structure_steps,
                                      "schedule_steps": args.structure_steps, "lr": args.structure_lr,
                                      "seed": args.seed + 2, "time_budget": 0.0, "deadline": 0.0})
        sched, train_step = planned_run(stage, device, model.train(),
                                        make_step_with(balanced_weights(delta_n, args.balance_floor),
                                                       n_pairs=len(pairs)), warmup=100)
        train(stage, model, sched, train_step, 250,
              saver(stage, int(meta["steps"]), int(meta.get("balanced_steps", 0))))
    return 0


def _save(args, ema, cfg, mean, std, delta_std, pooled, text_stats, encoder, n_pairs, train_s, stages: dict,
          device) -> None:
    bank = pooled[torch.linspace(0, len(pooled) - 1, min(4096, len(pooled))).long()]
    bundle = weights_bundle(ema, latent_mean=mean, latent_std=std, delta_std=delta_std,
                            instruction_bank=bank.half(),
                            unsupported_bank=encoder.encode(unsupported.phrases()).pooled.half(),
                            example_bank=encoder.encode(list(SUPPORTED_EXAMPLES)).pooled.half(), **text_stats)
    save_model(bundle, args.out, cfg.to_dict(), half=True, ood_threshold=round(ood_threshold(encoder, bank), 4),
               seed=args.seed, schedule_steps=max(args.schedule_steps, args.steps), batch=args.batch,
               **stages, balance_floor=args.balance_floor, balanced_lr=args.balanced_lr,
               structure_sources=args.structure_sources if stages.get("structure_steps") else 0,
               structure_lr=args.structure_lr,
               decoded_weight=args.decoded_weight, decoded_batch=args.decoded_batch,
               decoded_points=args.decoded_points,
               sources=args.sources, pairs=n_pairs, t_one=args.t_one, change_gate=args.change_gate,
               summary_queries=args.summary_queries,
               head_pretrain=args.head_pretrain, aux_weight=args.aux_weight, train_seconds=round(train_s),
               device=device.type, version="1.0")
