"""Train the part grounding network (models/edit/grounding.py) on the procedural world's edits.

    python -m models.train grounding --seed 0

Needs models/weights/autoencoder.safetensors (frozen; its decoded planes are the point features)
and the autoencoder's training-asset cache (runs/data/ae_train_*.npz, built if missing). Each
training asset is encoded from 2048 of its surface points and decoded once (planes kept as
float16); each gets the edits of EDIT_KINDS_DRAWN from the training stream (training templates
and colour words only; the held-out (edit, category) combinations are never drawn), every
training phrasing of each; half the recolours are also asked with a colour name of the xkcd colour
survey (models/world/colour_names.tsv, held-out synonyms removed) and that name's RGB. A step
draws a batch of (asset, edit, phrasing) and 512 of the asset's surface points, jittered by 0.01.
The planes of 3000 assets take 2.4 GB of memory.

Three stages (version 9): 8000 steps on the edits, then `--describe-steps` more with
descriptions of each asset naming its parts by their colours joining the pool
(`grounding_data.part_captions`, as the text model's captions do: the only examples naming a
house's roof or door), the instruction's own reading (summary, colour, kind) kept as the first
stage left it (version 8), then `--balance-steps` more as the second with each asset's part
points weighted up by how few they are (`part_weights`: a rocket's window holds 1.4% of its
samples and was marked a third). `--balance-steps 0` is version 8's recipe, and with
`--describe-steps 0` too version 3's. Descriptions in the pool from the start (versions 4
and 6, not shipped) were `--captions` at commits 5724cfe and eb4b32c. models/cards/grounding.md.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import save_model
from ..data import load_or_build
from ..edit.grounding import GroundingConfig, PartGrounding, load_grounding
from ..edit.grounding_data import (
    colour_lexicon,
    grounding_target,
    lexicon_variant,
    part_captions,
    part_labels,
    point_labels,
    region_labels,
)
from ..text.encoder import shared_encoder
from ..triplane.loading import load_autoencoder
from ..world.asset import sample_asset_spec
from ..world.edits import sample_edit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(REPO, "models", "weights", "grounding.safetensors")
# the first two edits of an asset are recolours (one of a part where it has several), then a
# pattern added and one removed where the asset allows them (a quarter of assets have a pattern),
# then two of any kind
EDIT_KINDS_DRAWN = ("recolour_part", "recolour_all", "add_pattern", "remove_pattern", None, None)
INPUT_POINTS = 2048


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--assets", type=int, default=3000)
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--points", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lexicon-share", type=float, default=0.5,
                   help="share of recolours also asked with a colour name of models/world/colour_names.tsv")
    p.add_argument("--describe-steps", type=int, default=1500,
                   help="after --steps, this many more with the descriptions joining the pool, the "
                        "instruction's reading frozen, at --describe-lr (version 8; 0: version 3)")
    p.add_argument("--describe-lr", type=float, default=2e-4)
    p.add_argument("--balance-steps", type=int, default=1500,
                   help="after the descriptions, this many more as that stage but with each asset's part "
                        "points weighted up by sqrt(other points / part points), at most --balance-cap "
                        "(small parts: a rocket's window holds 1.4%% of its samples)")
    p.add_argument("--balance-cap", type=float, default=8.0)
    p.add_argument("--init", default=None,
                   help="start from these weights and take only the later stages (--describe-steps, "
                        "--balance-steps; version 9 was made from version 8's file with --describe-steps 0)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default=os.path.join(REPO, "runs", "data"))
    p.add_argument("--out", default=DEFAULT_OUT)


@torch.no_grad()
def encode_and_decode(ae, surface: np.ndarray, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Surface clouds (A, N, 6) -> latents (A, 3, 8, 16, 16) float32, planes (A, 3, C, R, R) float16."""
    latents, planes = [], []
    for i in range(0, len(surface), batch):
        z = ae.encode(torch.as_tensor(surface[i:i + batch, :INPUT_POINTS], dtype=torch.float32))
        latents.append(z)
        planes.append(ae.decode(z).half())
    return torch.cat(latents), torch.cat(planes)


def edit_pool(n_assets: int, seed: int, lexicon_share: float):
    """(asset index, GroundingTarget, phrasings) for the EDIT_KINDS_DRAWN edits of each training
    asset, and for `lexicon_share` of the recolours the same edit asked with a random colour name of the
    lexicon (its own RGB as the target)."""
    lexicon = colour_lexicon() if lexicon_share > 0 else {}
    names = sorted(lexicon)
    pool = []
    for i in range(n_assets):
        spec = sample_asset_spec("train", i)
        for k, kind in enumerate(EDIT_KINDS_DRAWN):
            rng = np.random.default_rng([seed, i, k, 0x47524E44])
            pair = sample_edit(spec, rng, "train", "train", kind)
            if pair is None:
                continue
            pool.append((i, grounding_target(pair), pair.phrasings("train")))
            if pair.kind in ("recolour_all", "recolour_part") and names and rng.random() < lexicon_share:
                name = names[int(rng.integers(len(names)))]
                pool.append((i, *lexicon_variant(pair, name, lexicon[name])))
    return pool


def asset_descriptions(index: int, seed: int) -> list:
    """The pool entries of a training asset's descriptions (`part_captions`)."""
    described = part_captions(sample_asset_spec("train", index), np.random.default_rng([seed, index, 0x43415054]))
    return [(index, *d) for d in described]


def encode_instructions(texts: list[str], batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    encoder = shared_encoder("cpu")
    tokens, masks = [], []
    for i in range(0, len(texts), batch):
        enc = encoder.encode(texts[i:i + batch])
        tokens.append(enc.tokens.half())
        masks.append(enc.mask)
    return torch.cat(tokens), torch.cat(masks)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    surface = load_or_build("train", args.assets, args.cache)["surface"]
    ae = load_autoencoder().eval()
    latents, planes = encode_and_decode(ae, surface)
    print(f"{len(latents)} assets encoded and decoded in {time.time() - t0:.0f}s", flush=True)
    labels = [point_labels(sample_asset_spec("train", i), surface[i, :, :3].astype(np.float32))
              for i in range(args.assets)]
    # a second stage's descriptions join after the first stage's pool, whose draws stay as they were
    pool = edit_pool(args.assets, args.seed, args.lexicon_share)
    first = len(pool)
    if args.describe_steps or args.balance_steps:
        pool += [d for i in range(args.assets) for d in asset_descriptions(i, args.seed)]
    texts = sorted({t for _, _, ph in pool for t in ph})
    text_index = {t: j for j, t in enumerate(texts)}
    tokens, masks = encode_instructions(texts)
    print(f"{first} edits, {len(pool) - first} descriptions, {len(texts)} distinct instructions, "
          f"ready in {time.time() - t0:.0f}s", flush=True)
    data = TrainingData(pool, surface, labels, latents, planes, tokens, masks, text_index)

    model = PartGrounding(GroundingConfig())
    if args.init:
        model = load_grounding(args.init).train()
    else:
        train_stage(model, data, first, args.steps, args.lr, np.random.default_rng(args.seed), args, t0)
    if args.describe_steps:
        train_stage(model, data, len(pool), args.describe_steps, args.describe_lr,
                    np.random.default_rng([args.seed, 0x44455343]), args, t0, flat=True)
    if args.balance_steps:
        train_stage(model, data, len(pool), args.balance_steps, args.describe_lr,
                    np.random.default_rng([args.seed, 0x42414C41]), args, t0, flat=True, balance=args.balance_cap)
    model.eval()
    save_model(model, args.out, model.cfg.to_dict(), half=True, seed=args.seed, steps=args.steps,
               assets=args.assets, edits=first, descriptions=len(pool) - first, instructions=len(texts),
               lexicon_share=args.lexicon_share, describe_steps=args.describe_steps,
               describe_lr=args.describe_lr, balance_steps=args.balance_steps, balance_cap=args.balance_cap,
               init=args.init)
    print(f"saved {args.out}", flush=True)
    return 0


@dataclass
class TrainingData:
    pool: list                 # (asset, GroundingTarget, phrasings)
    surface: np.ndarray        # (A, N, 6) the assets' surface samples
    labels: list               # PointLabels of each asset's samples
    latents: torch.Tensor
    planes: torch.Tensor
    tokens: torch.Tensor       # the distinct instructions', in `text_index` order
    masks: torch.Tensor
    text_index: dict


def train_stage(model: PartGrounding, data: TrainingData, drawn: int, steps: int, lr: float,
                rng: np.random.Generator, args: argparse.Namespace, t0: float, flat: bool = False,
                balance: float = 0.0) -> None:
    """`steps` AdamW steps on batches drawn from the first `drawn` entries of the pool: one cycle
    to `lr` (the first stage), or `flat`, warm weights taken on at `lr` decayed along a cosine,
    with the instruction's own reading (its summary, colour and kind: `prompt`, `heads`) kept as
    it was: the descriptions teach where a part is, and left free the kind head began reading
    "remove the legs" as a pattern removal. `balance` > 0: each row's part points weighted by
    sqrt(its other points / its part points), at most `balance` (`part_weights`)."""
    if flat:
        for module in (model.prompt, model.heads):
            module.requires_grad_(False)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=lr, weight_decay=1e-4)
    if flat:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    else:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=max(0.05, 4 / steps))
    pool, surface = data.pool, data.surface
    log = []
    for step in range(1, steps + 1):
        picks = rng.integers(0, drawn, args.batch)
        assets = torch.as_tensor([pool[j][0] for j in picks])
        text_ids = torch.as_tensor([data.text_index[pool[j][2][rng.integers(len(pool[j][2]))]] for j in picks])
        point_ids = rng.integers(0, surface.shape[1], (args.batch, args.points))
        pts = np.stack([surface[a, point_ids[b], :3] for b, a in enumerate(assets.tolist())]).astype(np.float32)
        pts += rng.normal(size=pts.shape).astype(np.float32) * 0.01
        region, part, has_region, colour, has_colour = [], [], [], [], []
        for b, j in enumerate(picks):
            a, target, _ = pool[j]
            lab = data.labels[a][point_ids[b]]
            r = region_labels(target, lab)   # None exactly when the edit names no part
            region.append(np.zeros(args.points, np.float32) if r is None else r)
            part.append(np.zeros(args.points, np.float32) if r is None else part_labels(target, lab))
            has_region.append(r is not None)
            colour.append(target.colour or (0.0, 0.0, 0.0))
            has_colour.append(target.colour is not None)
        out = model(data.planes[assets].float(), data.latents[assets], torch.from_numpy(pts),
                    data.tokens[text_ids].float(), data.masks[text_ids])
        has_region, has_colour = torch.as_tensor(has_region), torch.as_tensor(has_colour)
        kinds = torch.as_tensor([pool[j][1].kind for j in picks])
        loss_region = F.binary_cross_entropy_with_logits(out.region[has_region],
                                                         torch.as_tensor(np.stack(region))[has_region])
        part_target = torch.as_tensor(np.stack(part))[has_region]
        loss_part = F.binary_cross_entropy_with_logits(out.part[has_region], part_target,
                                                       weight=part_weights(part_target, balance) if balance else None)
        loss_colour = F.mse_loss(out.colour[has_colour], torch.as_tensor(colour, dtype=torch.float32)[has_colour])
        loss_kind = F.cross_entropy(out.kind, kinds)
        loss = loss_region + loss_part + 4.0 * loss_colour + 0.5 * loss_kind
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        log.append((loss_region.item(), loss_part.item(), loss_colour.item(), loss_kind.item()))
        if step % 100 == 0 or step == steps:
            r, pt, c, k = np.mean(log[-100:], axis=0)
            print(f"step {step} region {r:.4f} part {pt:.4f} colour {c:.4f} kind {k:.4f} ({time.time() - t0:.0f}s)",
                  flush=True)


def part_weights(target: torch.Tensor, cap: float) -> torch.Tensor:
    """(B, N) 0/1 part labels -> per-point loss weights: 1, and on each row's part points
    sqrt(other points / part points) clipped to [1, cap], so a small part's points count more
    (plain BCE let the network mark a third of a rocket's window)."""
    pos = target.sum(1, keepdim=True)
    up = torch.sqrt((target.shape[1] - pos) / pos.clamp(min=1.0)).clamp(1.0, cap)
    return torch.where(target > 0.5, up.expand_as(target), torch.ones_like(target))
