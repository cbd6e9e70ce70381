"""Rectified flow in latent space: x_t = (1 - t) x_0 + t * noise, the model predicts
v = noise - x_0, sampling integrates from t = 1 to 0 with Euler steps and
classifier-free guidance. Noise is drawn on the CPU from a seeded generator so a seed
gives the same asset on every device."""
from __future__ import annotations

from typing import Callable

import torch

from ..mesh import Cancelled


def flow_inputs(x0: torch.Tensor, generator: torch.Generator | None = None, t_one: float = 0.0) -> tuple:
    """(x_t, t, target velocity) of one training batch; a share t_one of it at t = 1."""
    b = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    # logit-normal t concentrates training where the velocity is hardest to predict (SD3)
    t = torch.sigmoid(torch.randn(b, generator=generator)).to(x0)
    if t_one > 0:
        # at t = 1 the input is pure noise, so the condition is the only information: these
        # samples teach the conditional mean directly, which a short training run needs to
        # learn to use the condition at all
        t = torch.where(torch.rand(b, generator=generator).to(x0) < t_one, torch.ones_like(t), t)
    tt = t.view(b, 1, 1, 1, 1)
    return (1 - tt) * x0 + tt * noise, t, noise - x0


def initial_noise(shape: tuple, seed: int, device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(shape, generator=gen).to(device)


@torch.inference_mode()
def sample(model, cond: tuple, uncond: tuple, noise: torch.Tensor, steps: int = 8, guidance: float = 3.0,
           progress: Callable[[float, str], None] | None = None, cancel: Callable[[], bool] | None = None,
           t_start: float = 1.0, guidance_until: float = 0.0) -> torch.Tensor:
    """Euler integration of the flow from `noise` at t_start to t = 0. With guidance > 0 the
    conditional and unconditional passes run as one batch of 2B. Guidance applies to the steps
    that start at t > guidance_until; later steps take the conditional velocity alone (guidance
    in a limited interval, Kynkaanniemi et al. 2024: late guidance pushes the fine detail off the
    data manifold)."""
    x = noise
    ts = torch.linspace(t_start, 0.0, steps + 1, device=x.device)
    both = tuple(torch.cat([c, u]) for c, u in zip(cond, uncond))
    for i in range(steps):
        if cancel is not None and cancel():
            raise Cancelled()
        t = ts[i].expand(x.shape[0])
        guided = guidance > 0 and guidance != 1.0 and float(ts[i]) > guidance_until
        if guided:  # guidance 1 is the conditional velocity alone
            v_c, v_u = model(torch.cat([x, x]), torch.cat([t, t]), *both).chunk(2)
            v = v_u + guidance * (v_c - v_u)
        else:
            v = model(x, t, *cond)
        x = x + (ts[i + 1] - ts[i]) * v
        if progress:
            progress((i + 1) / steps, f"sampling step {i + 1}/{steps}")
    return x
