"""The learned centre (``miri.init=learned``) as plain torch functions: E[x_missing | x_observed]
learned from observed entries alone, by hiding a share of them and regressing them (the
Noise2Self / CSDI idea). No missing entry's truth is ever used.

Shapes: images x (B, C, H, W) in [0, 1]; ``observed`` the same shape, True = observed. The
network is a :class:`~miri_lightning.nets.ConditionalUNet` with ``interp_inputs=biharmonic``,
called at t = 0 on the biharmonic fill: it learns a correction to that fill, and untrained
(its last layer starts at zero) it is the biharmonic fill.
"""

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from miri_lightning import flow

#: The share of an item's observed entries hidden in one training step of the centre: the
#: input then misses a little more than the data do (60 % missing: 66 %).
HIDE = 0.15

#: Every HOLD_OUT-th item is left out of the centre's training and scores it (held-out
#: observed entries: what the centre reports against biharmonic, without any truth).
HOLD_OUT = 20


def hide(observed: Tensor, share: float, generator: torch.Generator) -> Tensor:
    """``observed`` (B, C, H, W) with about ``share`` of its observed entries hidden as well:
    whole pixels when the mask is the same in every channel (pixel masks), single entries
    otherwise, so that the holes look like the data's."""
    per_pixel = bool((observed == observed[:, :1]).all())
    shape = (observed.shape[0], 1, *observed.shape[2:]) if per_pixel else observed.shape
    drop = torch.rand(shape, generator=generator, device=generator.device).to(observed.device) < share
    return observed.bool() & ~drop


def predict(net: nn.Module, x: Tensor, observed: Tensor) -> Tensor:
    """The centre of x (B, C, H, W) given its observed entries: the biharmonic fill plus the
    network's correction on missing entries, clamped to [0, 1]; observed entries kept."""
    o = observed.bool()
    base = flow.deterministic_fill(x, o, "biharmonic")
    t = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    return torch.where(o, x, (base + net(base, base, o, t, source_interp=base)).clamp(0, 1))


def centre_loss(net: nn.Module, x: Tensor, observed: Tensor, generator: torch.Generator, share: float = HIDE) -> Tensor:
    """Mean squared error of :func:`predict` on the observed entries :func:`hide` hid; scalar."""
    kept = hide(observed, share, generator)
    hidden = observed.bool() & ~kept
    error = torch.where(hidden, predict(net, x, kept) - x, 0)  # missing entries never read
    return error.square().sum() / hidden.sum().clamp_min(1)


def training_items(n: int) -> Tensor:
    """Indices of the items the centre trains on: all but every :data:`HOLD_OUT`-th."""
    items = torch.arange(n)
    return items[items % HOLD_OUT != HOLD_OUT - 1] if n >= HOLD_OUT else items


def held_out_psnr(net: nn.Module, x: Tensor, observed: Tensor, seed: int = 0, batch: int = 256) -> tuple[float, float]:
    """(centre, biharmonic) PSNR in dB on a :data:`HIDE` share of the observed entries of the
    held-out items (those :func:`training_items` leaves out; all items when there are fewer
    than :data:`HOLD_OUT`), hidden with a fixed seed: how much the centre adds, measured on
    data it never trained on, without the missing entries' truth."""
    items = torch.arange(len(x))
    items = items[items % HOLD_OUT == HOLD_OUT - 1] if len(x) >= HOLD_OUT else items
    generator = torch.Generator(device=x.device).manual_seed(seed)
    errors = torch.zeros(2, dtype=torch.float64)
    count = 0
    with torch.no_grad():
        for k in range(0, len(items), batch):
            v, o = x[items[k : k + batch]], observed[items[k : k + batch]].bool()
            kept = hide(o, HIDE, generator)
            hidden = o & ~kept
            for i, guess in enumerate((predict(net, v, kept), flow.deterministic_fill(v, kept, "biharmonic"))):
                errors[i] += (guess - v)[hidden].double().square().sum().cpu()
            count += int(hidden.sum())
    mse = errors / max(count, 1)
    return tuple(float(-10 * torch.log10(m.clamp_min(1e-12))) for m in mse)


def fit_centre(
    net: nn.Module,
    x: Tensor,
    observed: Tensor,
    steps: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    ema: float = 0.995,
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> nn.Module:
    """Train ``net`` as the centre of the items x (N, C, H, W) under ``observed`` (the
    :func:`training_items`), ``steps`` Adam steps of ``batch_size`` items with fresh hidden
    entries each; returns the exponential moving average of its weights (decay ``ema``, warm-up
    min(ema, (1 + k)/(10 + k))), in eval mode. Seeded: the same on the same device."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    items = training_items(len(x)).to(x.device)
    average = copy.deepcopy(net).requires_grad_(False)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for step in range(steps):
        batch = items[torch.randint(len(items), (batch_size,), generator=generator, device=x.device)]
        loss = centre_loss(net, x[batch], observed[batch], generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        decay = min(ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for a, p in zip(average.parameters(), net.parameters(), strict=True):
                a.lerp_(p, 1 - decay)
        if (step + 1) % max(steps // 10, 1) == 0 or step + 1 == steps:
            say(f"centre: step {step + 1}/{steps}, loss on hidden observed entries {loss.item():.5f}")
    return average.eval()
