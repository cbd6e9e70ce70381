"""Train the part presence network (models/edit/presence.py).

    python -m models.train part_presence --seed 0

Needs models/weights/autoencoder.safetensors and the autoencoder's training-asset cache
(runs/data/ae_train_*.npz, built if missing). Each of the first `--assets` training assets is
encoded from 2048 of its surface points; every part noun the training edits use is asked of
every asset in the training templates that name a part (remove, recolour or resize it; the
templates' other slots filled with random training words), labelled by whether the asset has
that part (singular and plural count as the same part: "window" of a house's "windows"). Each
batch is half present, half absent. A few minutes on the CPU.
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
from ..edit.presence import DEFAULT_WEIGHTS, PartPresence, PresenceConfig
from ..triplane.loading import load_autoencoder
from ..world.asset import sample_asset_spec
from ..world.edits import INSTRUCTIONS
from .edit_kinds import embed, filled, fit, slot_vocabulary

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PART_KINDS = ("remove_part", "recolour_part", "resize_part")
INPUT_POINTS = 2048


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--assets", type=int, default=3000)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--fills", type=int, default=2, help="random fillings of each template and part noun")
    p.add_argument("--cache", default=None, help="default: runs/data")
    p.add_argument("--out", default=DEFAULT_WEIGHTS)


def has_part(parts, noun: str) -> bool:
    return any(p == noun or p.rstrip("s") == noun.rstrip("s") for p in parts)


def part_questions(nouns: list[str], phrasing: str, vocab: dict, fills: int, rng: np.random.Generator):
    """(texts, the noun each names) for every template of PART_KINDS naming each noun."""
    texts, named = [], []
    for noun in nouns:
        for kind in PART_KINDS:
            for template in INSTRUCTIONS[kind][phrasing]:
                for _ in range(fills):
                    texts.append(filled(template, vocab, rng, part=noun))
                    named.append(noun)
    return texts, named


@torch.no_grad()
def encoded_latents(ae, surface: np.ndarray, batch: int = 64) -> torch.Tensor:
    return torch.cat([ae.encode(torch.as_tensor(surface[i:i + batch, :INPUT_POINTS], dtype=torch.float32))
                      for i in range(0, len(surface), batch)])


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    cache = args.cache or os.path.join(REPO, "runs", "data")
    surface = load_or_build("train", args.assets, cache)["surface"]
    latents = encoded_latents(load_autoencoder().eval(), surface)
    vocab = slot_vocabulary(range(args.assets))
    nouns = vocab["part"]
    texts, named = part_questions(nouns, "train", vocab, args.fills, rng)
    pooled = embed(texts)
    present = np.array([[has_part(sample_asset_spec("train", i).parts(), n) for n in nouns] for i in range(args.assets)])
    text_noun = np.array([nouns.index(n) for n in named])
    by_noun = [np.flatnonzero(text_noun == j) for j in range(len(nouns))]
    print(f"{len(latents)} assets encoded, {len(texts)} questions embedded in {time.time() - t0:.0f}s; "
          f"{len(nouns)} part nouns, {present.mean():.2f} of (asset, noun) present", flush=True)
    model = PartPresence(PresenceConfig(latent_channels=latents.shape[2], latent_res=latents.shape[-1]))
    model.latent_mean.copy_(latents.mean(dim=(0, 3, 4), keepdim=True)[0])
    model.latent_std.copy_(latents.std(dim=(0, 3, 4), keepdim=True)[0].clamp(min=1e-3))
    model.pooled_mean.copy_(pooled.mean(0))
    model.pooled_std.copy_(pooled.std(0).clamp(min=1e-4))

    def batch_loss() -> torch.Tensor:
        assets = rng.integers(0, args.assets, args.batch)
        want = rng.random(args.batch) < 0.5   # half the questions name a part the asset has
        noun = np.array([rng.choice(np.flatnonzero(present[a] == w)) if (present[a] == w).any()
                         else rng.integers(len(nouns)) for a, w in zip(assets, want)])
        text = np.array([rng.choice(by_noun[n]) for n in noun])
        label = torch.as_tensor(present[assets, noun], dtype=torch.float32)
        return F.binary_cross_entropy_with_logits(model(latents[assets], pooled[text]), label)

    fit(model, batch_loss, args.steps, args.lr, t0)
    save_model(model, args.out, model.cfg.to_dict(), seed=args.seed, assets=args.assets, steps=args.steps,
               nouns=nouns, train_seconds=round(time.time() - t0, 1))
    print(f"saved {args.out} in {time.time() - t0:.0f}s", flush=True)
    return 0
