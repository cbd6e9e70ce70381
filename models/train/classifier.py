"""Train the evaluation-only shape classifier on SDF grids of training assets: the exact
shapes and, since it judges what generators decode, the autoencoder's reconstructions of them.

    python -m models.train classifier --seed 0
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import save_model
from ..classifier import DEFAULT_WEIGHTS, TRUNC, ShapeClassifier, sdf_features
from ..data import coloured_cloud, load_or_build, surface_points
from ..triplane.inference import LatentField, encode_cloud
from ..triplane.loading import load_autoencoder
from ..world.asset import Asset, sample_asset_spec
from ..world.categories import CATEGORY_NAMES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--assets", type=int, default=2600)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--decoded-share", type=float, default=0.5,
                   help="share of each batch taken from autoencoder reconstructions instead of exact shapes")
    p.add_argument("--thickness", type=float, nargs=2, default=(-0.02, 0.04), metavar=("THINNER", "THICKER"),
                   help="each grid's surface moved by a uniform offset in this range (cube units; positive "
                        "thickens every part) and, for half the batch, blurred: generated shapes come out with "
                        "thicker or softer parts than the training assets (0 0: off)")
    p.add_argument("--cache", default=os.path.join(REPO, "runs", "data"))
    p.add_argument("--out", default=DEFAULT_WEIGHTS)


def grids_for(split: str, indices) -> tuple[np.ndarray, np.ndarray]:
    grids, labels = [], []
    for i in indices:
        spec = sample_asset_spec(split, int(i))
        asset = Asset(spec)
        grids.append(sdf_features(lambda p: asset.query(p, with_colour=False)[0]))
        labels.append(CATEGORY_NAMES.index(spec.category))
    return np.stack(grids), np.array(labels)


@torch.no_grad()
def decoded_grids(ae, clouds: np.ndarray) -> np.ndarray:
    """SDF grids of the autoencoder's reconstructions of coloured surface clouds (N, P, 6)."""
    return np.stack([sdf_features(LatentField(ae, encode_cloud(ae, cloud)).sdf) for cloud in clouds])


def thicken(g: torch.Tensor, rng: np.random.Generator, offsets) -> torch.Tensor:
    """Grids (B, 1, R, R, R) of SDF features with each shape's surface moved by a random offset
    (cube units; outwards when positive), then half of them blurred by a 3-voxel box: a generated table with a
    thick top on thick legs is still a table, not a mushroom."""
    lo, hi = offsets
    shift = torch.from_numpy(rng.uniform(lo, hi, len(g)).astype(np.float32)).view(-1, 1, 1, 1, 1)
    g = (g - shift / TRUNC).clamp(-1.0, 1.0)
    blur = torch.from_numpy(rng.random(len(g)) < 0.5)
    if blur.any():
        g[blur] = F.avg_pool3d(g[blur], 3, stride=1, padding=1, count_include_pad=False)
    return g


@torch.no_grad()
def held_out_accuracy(model, grids: np.ndarray, labels: np.ndarray) -> float:
    return float((model(torch.from_numpy(grids)).argmax(-1).numpy() == labels).mean())


def test_clouds(indices, points: int = 2048) -> np.ndarray:
    clouds = []
    for i in indices:
        asset = Asset(sample_asset_spec("test", int(i)))
        clouds.append(coloured_cloud(asset, surface_points(asset, points, np.random.default_rng(int(i)))))
    return np.stack(clouds)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    x, y = grids_for("train", range(args.assets))
    xv, yv = grids_for("test", range(2000, 2260))
    xd = xvd = None
    if args.decoded_share > 0:
        ae = load_autoencoder()
        xd = decoded_grids(ae, load_or_build("train", args.assets, args.cache)["surface"][:, :2048])
        xvd = decoded_grids(ae, test_clouds(range(2000, 2260)))
        print(f"{len(xd) + len(xvd)} reconstructions in {time.time() - t0:.0f}s", flush=True)
    model = ShapeClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for step in range(1, args.steps + 1):
        idx = torch.from_numpy(rng.integers(0, len(x), args.batch))
        g = xt[idx]
        if xd is not None:
            use = torch.from_numpy(rng.random(args.batch) < args.decoded_share)
            g[use] = torch.from_numpy(xd)[idx[use]]
        # robustness to decoded (smoother, slightly shifted) shapes: noise and small shifts
        g = g + 0.1 * torch.randn_like(g)
        if args.thickness[1] > args.thickness[0]:
            g = thicken(g, rng, args.thickness)
        g = torch.roll(g, shifts=tuple(int(s) for s in rng.integers(-1, 2, 3)), dims=(2, 3, 4))
        loss = F.cross_entropy(model(g), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0:
            model.eval()
            acc = held_out_accuracy(model, xv, yv)
            report = f"step {step} loss {loss.item():.4f} held-out acc: exact {acc:.3f}"
            if xvd is not None:
                acc_decoded = held_out_accuracy(model, xvd, yv)
                report += f", reconstructed {acc_decoded:.3f}"
            model.train()
            print(report, flush=True)
    model.eval()
    acc = held_out_accuracy(model, xv, yv)
    acc_decoded = held_out_accuracy(model, xvd, yv) if xvd is not None else None
    save_model(model, args.out, {}, seed=args.seed, steps=args.steps, train_assets=args.assets,
               decoded_share=args.decoded_share, thickness=list(args.thickness), heldout_acc_exact=round(acc, 4),
               heldout_acc_reconstructed=None if acc_decoded is None else round(acc_decoded, 4),
               train_seconds=round(time.time() - t0))
    print(f"wrote {args.out}")
    return 0
