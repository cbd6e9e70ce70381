"""Train the triplane autoencoder on the procedural world.

    python -m models.train autoencoder --seed 0

Deterministic for a seed and thread count on CPU; writes models/weights/autoencoder.safetensors.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch

from ..checkpoint import WEIGHTS_DIR, save_model
from ..data import SampleConfig, load_or_build
from ..triplane import AutoencoderConfig, TriplaneAutoencoder
from ..triplane.autoencoder import field_losses

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-assets", type=int, default=4000)
    p.add_argument("--val-assets", type=int, default=64)
    p.add_argument("--n-input", type=int, default=2048, help="surface points fed to the encoder")
    p.add_argument("--n-query", type=int, default=4096, help="supervised query points per asset")
    p.add_argument("--kl-weight", type=float, default=1e-5)
    p.add_argument("--latent-res", type=int, default=AutoencoderConfig.latent_res,
                   help="latent plane resolution (16 is the shared latent every other model uses; 32 keeps the "
                        "encoder's own resolution)")
    p.add_argument("--latent-channels", type=int, default=AutoencoderConfig.latent_channels)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default=os.path.join(REPO, "runs", "data"))
    p.add_argument("--run-dir", default=os.path.join(REPO, "runs", "autoencoder"))
    p.add_argument("--out", default=os.path.join(WEIGHTS_DIR, "autoencoder.safetensors"))


def batch_from(data: dict, idx: np.ndarray, rng: np.random.Generator, n_input: int, n_query: int):
    """Random subsets of each asset's surface and query points (float32 tensors)."""
    surf = data["surface"][idx]
    q, sdf, rgb = data["query"][idx], data["sdf"][idx], data["rgb"][idx]
    si = rng.integers(0, surf.shape[1], size=(len(idx), n_input))
    n_near = data["query"].shape[1] - SampleConfig().n_uniform  # near-surface points come first
    qi = np.concatenate([rng.integers(0, n_near, size=(len(idx), n_query * 3 // 4)),
                         rng.integers(n_near, q.shape[1], size=(len(idx), n_query // 4))], 1)
    take = lambda a, i: np.take_along_axis(a, i[..., None] if a.ndim == 3 else i, 1)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return t(take(surf, si)), t(take(q, qi)), t(take(sdf, qi)), t(take(rgb, qi))


def losses(model: TriplaneAutoencoder, cloud, pts, sdf_gt, rgb_gt, kl_weight: float):
    sdf, rgb, kl = model(cloud, pts)
    sdf_loss, rgb_mse, rgb_l1 = field_losses(sdf, rgb, sdf_gt, rgb_gt, model.cfg.sdf_clamp)
    return sdf_loss + rgb_mse + kl_weight * kl, {"sdf": sdf_loss.item(), "rgb": rgb_l1.item(), "kl": kl.item()}


@torch.no_grad()
def validate(model: TriplaneAutoencoder, data: dict, n_input: int) -> dict:
    model.eval()
    rng = np.random.default_rng(123)
    inter = union = 0.0
    rgb_err = []
    for s in range(0, len(data["surface"]), 16):
        idx = np.arange(s, min(s + 16, len(data["surface"])))
        cloud, pts, sdf_gt, rgb_gt = batch_from(data, idx, rng, n_input, 8192)
        sdf, rgb, _ = model(cloud, pts)
        a, b = sdf < 0, sdf_gt < 0
        inter += (a & b).sum().item()
        union += (a | b).sum().item()
        near = sdf_gt.abs() < 0.01
        rgb_err.append((rgb - rgb_gt).abs().mean(-1)[near].mean().item())
    model.train()
    return {"iou_query": inter / max(union, 1), "rgb_l1": float(np.mean(rgb_err))}


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    train = load_or_build("train", args.train_assets, args.cache)
    val = load_or_build("test", args.val_assets, args.cache)
    print(f"data ready in {time.time() - t0:.0f}s: {len(train['surface'])} train, {len(val['surface'])} val", flush=True)

    cfg = AutoencoderConfig(latent_res=args.latent_res, latent_channels=args.latent_channels)
    model = TriplaneAutoencoder(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    warmup = 200
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))))
    os.makedirs(args.run_dir, exist_ok=True)
    log = open(os.path.join(args.run_dir, "log.jsonl"), "a")
    t_train = time.time()
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, len(train["surface"]), size=args.batch)
        loss, parts = losses(model, *batch_from(train, idx, rng, args.n_input, args.n_query), args.kl_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0:
            rec = {"step": step, "loss": loss.item(), **parts, "lr": sched.get_last_lr()[0],
                   "elapsed_s": round(time.time() - t_train, 1)}
            if step % 500 == 0 or step == args.steps:
                rec.update(validate(model, val, args.n_input))
                save_model(model, os.path.join(args.run_dir, "last.safetensors"), cfg.to_dict(), step=step)
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
    train_s = time.time() - t_train
    save_model(model, args.out, cfg.to_dict(), seed=args.seed, steps=args.steps, batch=args.batch,
               train_assets=args.train_assets, train_seconds=round(train_s), version="1.0")
    print(f"wrote {args.out} after {train_s / 60:.1f} min", flush=True)
    return 0
