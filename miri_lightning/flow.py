"""The MIRI objective and the imputation ODE as plain torch functions (DESIGN.md §1).

Shapes: items are batched as ``(B, *item_shape)``, e.g. ``(B, C, H, W)`` for images;
``observed`` has the same shape as the items, 1 (True) = observed, 0 = missing; ``t`` is
``(B,)`` in [0, 1]. A velocity field is any callable ``v(a, b, observed, t) -> (B, *item)``
whose output is zero on observed entries.
"""

from collections.abc import Callable

import torch
from torch import Tensor

VelocityField = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]

SOLVERS = ("euler", "heun")


def _per_item(t: Tensor, like: Tensor) -> Tensor:
    """Reshape ``t`` (B,) so that it broadcasts against ``like`` (B, *item)."""
    return t.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def interpolate(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 - t) z0 + t z1 for every item; z0, z1: (B, *item), t: (B,)."""
    t = _per_item(t, z0)
    return (1 - t) * z0 + t * z1


def views(z0: Tensor, z1: Tensor, observed: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """The source view ``a`` and the partner view ``b`` at time t, each (B, *item).

    a = o ⊙ z0 + (1 - o) ⊙ x_t,   b = o ⊙ z1 + (1 - o) ⊙ x_t,
    with o the source's mask: the partner is seen through the source's mask.
    """
    x_t = interpolate(z0, z1, t)
    o = observed.bool()
    return torch.where(o, z0, x_t), torch.where(o, z1, x_t)


def miri_loss(velocity: VelocityField, z0: Tensor, z1: Tensor, observed: Tensor, t: Tensor) -> Tensor:
    """The rectified-flow loss of one MIRI round, over missing entries only.

    z0: the sources x̃_i (B, *item); z1: independently drawn partners x̃_j (B, *item);
    observed: the sources' masks o_i; t: (B,). Returns the scalar
    Σ (1-o) (v(a, b, o, t) - (z1 - z0))² / Σ (1-o).
    """
    a, b = views(z0, z1, observed, t)
    missing = (~observed.bool()).to(z0.dtype)
    error = (velocity(a, b, observed, t) - (z1 - z0)) ** 2
    return (missing * error).sum() / missing.sum().clamp_min(1)


def impute(
    velocity: VelocityField,
    x: Tensor,
    observed: Tensor,
    steps: int,
    solver: str = "euler",
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> Tensor:
    """Solve the imputation ODE dy/ds = v(y, y, o, s) from s = 0 to 1.

    x: (B, *item) the current imputation (observed entries hold the data, missing ones the
    previous fill); observed: its mask. Returns y(1), (B, *item), equal to x bit for bit on
    observed entries, clamped to ``clamp`` on missing entries after each step (None: no
    clamping, for standardised tables).
    """
    if solver not in SOLVERS:
        raise ValueError(f"miri.solver must be one of {SOLVERS}, got {solver!r}")
    if steps < 1:
        raise ValueError(f"miri.ode_steps must be at least 1, got {steps}")
    o = observed.bool()

    def f(y: Tensor, s: float) -> Tensor:
        return velocity(y, y, observed, torch.full((y.shape[0],), s, device=y.device, dtype=y.dtype))

    def settle(y: Tensor) -> Tensor:
        if clamp is not None:
            y = y.clamp(*clamp)
        return torch.where(o, x, y)

    y, h = x, 1.0 / steps
    for k in range(steps):
        s = k * h
        dy = f(y, s)
        if solver == "heun":
            dy = 0.5 * (dy + f(settle(y + h * dy), s + h))
        y = settle(y + h * dy)
    return y


INITS = ("noise", "mean")


def initial_fill(
    x: Tensor,
    observed: Tensor,
    init: str = "noise",
    generator: torch.Generator | None = None,
    channel_mean: Tensor | None = None,
) -> Tensor:
    """Round-0 imputation x̃⁰ of a data set x (N, C, ...), observed entries kept.

    ``noise``: missing entries drawn i.i.d. from U[0, 1] (the paper, for images);
    ``mean``: missing entries set to their channel's mean over all observed entries
    (``channel_mean`` (C,) when x is only a part of the set).
    """
    if init not in INITS:
        raise ValueError(f"miri.init must be one of {INITS}, got {init!r}")
    o = observed.bool()
    if init == "noise":
        fill = torch.rand(x.shape, generator=generator, dtype=x.dtype)
    else:
        if channel_mean is None:
            channel_mean = observed_channel_mean(x, o)
        fill = channel_mean.to(x.dtype).view(1, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.where(o, x, fill.to(x.device))


def observed_channel_mean(x: Tensor, observed: Tensor) -> Tensor:
    """(C,) mean of each channel over the observed entries of x (N, C, ...)."""
    dims = [d for d in range(x.dim()) if d != 1]
    o = observed.bool()
    return torch.where(o, x, 0).sum(dims) / o.sum(dims).clamp_min(1)
