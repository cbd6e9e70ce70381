"""Train the part grounding network (models/edit/grounding.py) on the procedural world's edits.

    python -m models.train grounding --seed 0

Needs models/weights/autoencoder.safetensors (frozen; its decoded planes are the point features)
and the autoencoder's training-asset cache (runs/data/ae_train_*.npz, built if missing). Each
training asset is encoded from 2048 of its surface points and decoded once (planes kept as
float16); each gets the edits of EDIT_KINDS_DRAWN from the training stream (training templates
and colour words only; the held-out (edit, category) combinations are never drawn), every
training phrasing of each; half the recolours are also asked with a colour name of the xkcd colour
survey (models/world/colour_names.tsv, held-out synonyms removed) and that name's RGB; with
`--captions` each asset is also described once naming one of its parts by its own colour, as the
text model's captions do (`grounding_data.part_captions`: the only examples naming a house's roof
or door; version 4, not shipped). A step
draws a batch of (asset, edit, phrasing) and 512 of the asset's surface points, jittered by 0.01.
The planes of 3000 assets take 2.4 GB of memory.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import save_model
from ..data import load_or_build
from ..edit.grounding import GroundingConfig, PartGrounding
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
    p.add_argument("--captions", action="store_true",
                   help="also descriptions naming a part by its colour (version 4, not shipped: "
                        "models/cards/grounding.md)")
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


def edit_pool(n_assets: int, seed: int, lexicon_share: float, captions: bool = False):
    """(asset index, GroundingTarget, phrasings) for the EDIT_KINDS_DRAWN edits of each training
    asset, and for `lexicon_share` of the recolours the same edit asked with a random colour name of the
    lexicon (its own RGB as the target); with `captions`, a description of each asset naming one
    of its parts by its colour and one another (`part_captions`)."""
    lexicon = colour_lexicon() if lexicon_share > 0 else {}
    names = sorted(lexicon)
    pool = []
    for i in range(n_assets):
        spec = sample_asset_spec("train", i)
        if captions:
            described = part_captions(spec, np.random.default_rng([seed, i, 0x43415054]))
            pool.extend((i, *d) for d in described)
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
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    surface = load_or_build("train", args.assets, args.cache)["surface"]
    ae = load_autoencoder().eval()
    latents, planes = encode_and_decode(ae, surface)
    print(f"{len(latents)} assets encoded and decoded in {time.time() - t0:.0f}s", flush=True)
    labels = [point_labels(sample_asset_spec("train", i), surface[i, :, :3].astype(np.float32))
              for i in range(args.assets)]
    pool = edit_pool(args.assets, args.seed, args.lexicon_share, args.captions)
    texts = sorted({t for _, _, ph in pool for t in ph})
    text_index = {t: j for j, t in enumerate(texts)}
    tokens, masks = encode_instructions(texts)
    print(f"{len(pool)} edits, {len(texts)} distinct instructions, ready in {time.time() - t0:.0f}s", flush=True)

    model = PartGrounding(GroundingConfig())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps,
                                                pct_start=max(0.05, 4 / args.steps))
    log = []
    for step in range(1, args.steps + 1):
        picks = rng.integers(0, len(pool), args.batch)
        assets = torch.as_tensor([pool[j][0] for j in picks])
        text_ids = torch.as_tensor([text_index[pool[j][2][rng.integers(len(pool[j][2]))]] for j in picks])
        point_ids = rng.integers(0, surface.shape[1], (args.batch, args.points))
        pts = np.stack([surface[a, point_ids[b], :3] for b, a in enumerate(assets.tolist())]).astype(np.float32)
        pts += rng.normal(size=pts.shape).astype(np.float32) * 0.01
        region, part, has_region, colour, has_colour = [], [], [], [], []
        for b, j in enumerate(picks):
            a, target, _ = pool[j]
            lab = labels[a][point_ids[b]]
            r = region_labels(target, lab)   # None exactly when the edit names no part
            region.append(np.zeros(args.points, np.float32) if r is None else r)
            part.append(np.zeros(args.points, np.float32) if r is None else part_labels(target, lab))
            has_region.append(r is not None)
            colour.append(target.colour or (0.0, 0.0, 0.0))
            has_colour.append(target.colour is not None)
        out = model(planes[assets].float(), latents[assets], torch.from_numpy(pts), tokens[text_ids].float(),
                    masks[text_ids])
        has_region, has_colour = torch.as_tensor(has_region), torch.as_tensor(has_colour)
        kinds = torch.as_tensor([pool[j][1].kind for j in picks])
        loss_region = F.binary_cross_entropy_with_logits(out.region[has_region],
                                                         torch.as_tensor(np.stack(region))[has_region])
        loss_part = F.binary_cross_entropy_with_logits(out.part[has_region],
                                                       torch.as_tensor(np.stack(part))[has_region])
        loss_colour = F.mse_loss(out.colour[has_colour], torch.as_tensor(colour, dtype=torch.float32)[has_colour])
        loss_kind = F.cross_entropy(out.kind, kinds)
        loss = loss_region + loss_part + 4.0 * loss_colour + 0.5 * loss_kind
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        log.append((loss_region.item(), loss_part.item(), loss_colour.item(), loss_kind.item()))
        if step % 100 == 0 or step == args.steps:
            r, pt, c, k = np.mean(log[-100:], axis=0)
            print(f"step {step} region {r:.4f} part {pt:.4f} colour {c:.4f} kind {k:.4f} ({time.time() - t0:.0f}s)",
                  flush=True)
    model.eval()
    save_model(model, args.out, model.cfg.to_dict(), half=True, seed=args.seed, steps=args.steps,
               assets=args.assets, edits=len(pool), instructions=len(texts), lexicon_share=args.lexicon_share,
               captions=args.captions)
    print(f"saved {args.out}", flush=True)
    return 0
