"""Train the evaluation-only shape classifier on ground-truth SDF grids of training assets.

    python -m models.train classifier --seed 0
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import save_model
from ..classifier import DEFAULT_WEIGHTS, ShapeClassifier, sdf_features
from ..world.asset import Asset, sample_asset_spec
from ..world.categories import CATEGORY_NAMES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--assets", type=int, default=2600)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=DEFAULT_WEIGHTS)


def grids_for(split: str, indices) -> tuple[np.ndarray, np.ndarray]:
    grids, labels = [], []
    for i in indices:
        spec = sample_asset_spec(split, int(i))
        asset = Asset(spec)
        grids.append(sdf_features(lambda p: asset.query(p, with_colour=False)[0]))
        labels.append(CATEGORY_NAMES.index(spec.category))
    return np.stack(grids), np.array(labels)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    x, y = grids_for("train", range(args.assets))
    xv, yv = grids_for("test", range(2000, 2260))
    model = ShapeClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for step in range(1, args.steps + 1):
        idx = torch.from_numpy(rng.integers(0, len(x), args.batch))
        g = xt[idx]
        # robustness to decoded (smoother, slightly shifted) shapes: noise and small shifts
        g = g + 0.1 * torch.randn_like(g)
        g = torch.roll(g, shifts=tuple(int(s) for s in rng.integers(-1, 2, 3)), dims=(2, 3, 4))
        loss = F.cross_entropy(model(g), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0:
            model.eval()
            with torch.no_grad():
                acc = (model(torch.from_numpy(xv)).argmax(-1).numpy() == yv).mean()
            model.train()
            print(f"step {step} loss {loss.item():.4f} held-out acc {acc:.3f}", flush=True)
    save_model(model, args.out, {}, seed=args.seed, steps=args.steps, train_assets=args.assets,
               train_seconds=round(time.time() - t0))
    print(f"wrote {args.out}")
    return 0
