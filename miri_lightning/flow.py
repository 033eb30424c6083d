"""The MIRI objective and the imputation ODE as plain torch functions (docs/algorithm.md).

Shapes: items are batched as ``(B, *item_shape)``, e.g. ``(B, C, H, W)`` for images;
``observed`` has the same shape as the items, 1 (True) = observed, 0 = missing; ``t`` is
``(B,)`` in [0, 1]. A velocity field is any callable ``v(a, b, observed, t) -> (B, *item)``
whose output is zero on observed entries. A field that uses an interpolation of the source
view's observed entries (a function of the item alone: the source view's observed entries are
the item's own, in training and along the imputation ODE) may take it precomputed, as the
keyword ``source_interp`` (B, *item); :func:`miri_loss` and :func:`impute` pass it on when
given.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from miri_lightning.interp import curvature_fill, harmonic_fill

VelocityField = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]

#: A learned centre (``miri.init=learned``, :mod:`miri_lightning.centre`): ``centre(x, observed)``
#: -> the centre of images x (B, C, H, W), observed entries kept.
Centre = Callable[[Tensor, Tensor], Tensor]

SOLVERS = ("euler", "heun")

#: Where a round's sources start: ``independent``, each source x̃_i is an item of its own
#: (the paper: its missing entries know nothing of the partner it is paired with);
#: ``fill``, the source is the run's noisy fill of the partner view's observed entries
#: (:func:`fill_source`), the kind of start every draw has, so that training sees what
#: sampling sees.
COUPLINGS = ("independent", "fill")

#: Which entries the loss counts: the source's missing ones (the paper), or only those of
#: them that the partner observed.
LOSS_ON = ("missing", "partner_observed")


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


def fill_source(
    partner: Tensor,
    observed: Tensor,
    init: str,
    noise: float,
    noise_mode: str = "constant",
    generator: torch.Generator | None = None,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    centre: Centre | None = None,
) -> Tensor:
    """The source of ``miri.coupling=fill``: (B, *item), the partners (B, *item) on the
    source masks ``observed``, their missing entries fresh noise (``init="noise"``, as
    :func:`initial_fill` draws it) or the deterministic fill ``init`` (:func:`deterministic_fill`
    of those observed entries) plus fresh noise (:func:`perturb`). A draw starts from the same
    kind of fill of its item's observed entries, so the field learns to carry such fills to
    the data; one that has learned nothing (zero) keeps them. ``centre``: the learned centre,
    for ``init="learned"``; ``clamp``: None for tables."""
    if init == "noise":
        return noise_fill(partner, observed, generator, clamp)
    fill = deterministic_fill(torch.where(observed.bool(), partner, 0), observed, init, centre=centre)
    return perturb(fill, observed, noise, generator, clamp, noise_mode)


def miri_loss(
    velocity: VelocityField,
    z0: Tensor,
    z1: Tensor,
    observed: Tensor,
    t: Tensor,
    partner_observed: Tensor | None = None,
    source_interp: Tensor | None = None,
    one_view: bool = False,
) -> Tensor:
    """The rectified-flow loss of one MIRI round, over missing entries only.

    z0: the sources x̃_i (B, *item); z1: independently drawn partners x̃_j (B, *item);
    observed: the sources' masks o_i; t: (B,). Returns the scalar
    Σ w (v(a, b, o, t) - (z1 - z0))² / Σ w with w = 1 - o (docs/algorithm.md).
    partner_observed: the partners' own masks o_j (B, *item); when given, w = (1 - o) ⊙ o_j:
    only entries whose target z1 is data, not the partner's own imputation, count
    (``miri.loss_on=partner_observed``, a departure from the paper).
    one_view: z0's observed entries are z1's (``miri.coupling=fill``), so the two views are
    equal: the field gets one tensor as both (``b is a``), and solves one interpolation.
    """
    a, b = views(z0, z1, observed, t)
    if one_view:
        b = a
    weight = ~observed.bool()
    if partner_observed is not None:
        weight = weight & partner_observed.bool()
    weight = weight.to(z0.dtype)
    extra = {} if source_interp is None else {"source_interp": source_interp}
    error = (velocity(a, b, observed, t, **extra) - (z1 - z0)) ** 2
    return (weight * error).sum() / weight.sum().clamp_min(1)


def impute(
    velocity: VelocityField,
    x: Tensor,
    observed: Tensor,
    steps: int,
    solver: str = "euler",
    clamp: tuple[float, float] | None = (0.0, 1.0),
    source_interp: Tensor | None = None,
) -> Tensor:
    """Solve the imputation ODE dy/ds = v(y, y, o, s) from s = 0 to 1.

    x: (B, *item) the current imputation (observed entries hold the data, missing ones the
    previous fill); observed: its mask. Returns y(1), (B, *item), equal to x bit for bit on
    observed entries, clamped to ``clamp`` on missing entries after each step (None: no
    clamping, for standardised tables). source_interp: the interpolation of x's observed
    entries (B, *item), passed to the field at every step (y's observed entries are x's).
    """
    if solver not in SOLVERS:
        raise ValueError(f"miri.solver must be one of {SOLVERS}, got {solver!r}")
    if steps < 1:
        raise ValueError(f"miri.ode_steps must be at least 1, got {steps}")
    o = observed.bool()
    extra = {} if source_interp is None else {"source_interp": source_interp}

    def f(y: Tensor, s: float) -> Tensor:
        return velocity(y, y, observed, torch.full((y.shape[0],), s, device=y.device, dtype=y.dtype), **extra)

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


INITS = ("noise", "mean", "interp", "biharmonic", "learned")


def initial_fill(
    x: Tensor,
    observed: Tensor,
    init: str = "noise",
    generator: torch.Generator | None = None,
    channel_mean: Tensor | None = None,
    noise: float = 0.0,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    noise_mode: str = "constant",
) -> Tensor:
    """Round-0 imputation x̃⁰ of a data set x (N, C, ...), observed entries kept.

    ``noise``: missing entries drawn i.i.d. from U[clamp] (U[0, 1], the paper, for images)
    or from N(0, 1) without ``clamp`` (standardised tables);
    ``mean``: missing entries set to their channel's mean over all observed entries
    (``channel_mean`` (C,) when x is only a part of the set);
    ``interp``: images (N, C, H, W), the harmonic interpolation
    (:func:`~miri_lightning.interp.harmonic_fill`, batched torch); ``biharmonic``: the biharmonic
    one (:func:`~miri_lightning.interp.curvature_fill`, batched torch, within 0.01 dB of
    scikit-image's inpainting; better than harmonic on smooth images).
    ``noise`` (σ ≥ 0) adds N(0, σ²) to the deterministic fills, then clamps (:func:`perturb`):
    a deterministic fill gives one sample, a noisy one a distribution to draw from;
    ``noise_mode="local"`` scales σ by each entry's :func:`local_spread`.
    """
    if init == "noise":
        return noise_fill(x, observed, generator, clamp)
    fill = deterministic_fill(x, observed, init, channel_mean)
    return perturb(fill, observed, noise, generator, clamp, noise_mode)


def noise_fill(
    x: Tensor,
    observed: Tensor,
    generator: torch.Generator | None = None,
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> Tensor:
    """x (N, ...) with its missing entries drawn i.i.d. from U[clamp], or from N(0, 1) when
    ``clamp`` is None (standardised tables); drawn on the generator's device."""
    device = generator.device if generator is not None else x.device
    if clamp is None:
        fill = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device)
    else:
        low, high = clamp
        fill = low + (high - low) * torch.rand(x.shape, generator=generator, dtype=x.dtype, device=device)
    return torch.where(observed.bool(), x, fill.to(x.device))


def deterministic_fill(
    x: Tensor, observed: Tensor, init: str, channel_mean: Tensor | None = None, centre: Centre | None = None
) -> Tensor:
    """The ``mean``, ``interp``, ``biharmonic`` or ``learned`` (``centre(x, observed)``) fill of
    x (N, C, ...) without noise (see :func:`initial_fill`); observed entries kept."""
    if init not in INITS:
        raise ValueError(f"miri.init must be one of {INITS}, got {init!r}")
    o = observed.bool()
    if init == "learned":
        if centre is None:
            raise ValueError("miri.init=learned fills with the run's learned centre, which is not given here")
        return centre(x, o)
    if init == "mean":
        if channel_mean is None:
            channel_mean = observed_channel_mean(x, o)
        fill = channel_mean.to(x.dtype).view(1, -1, *([1] * (x.dim() - 2))).expand_as(x)
        return torch.where(o, x, fill.to(x.device))
    if init == "noise" or x.dim() != 4:
        raise ValueError(f"miri.init={init} is a deterministic fill of images (N, C, H, W), not of {tuple(x.shape)}")
    if init == "interp":
        return harmonic_fill(x, o)
    return curvature_fill(x, o, iterations=25).clamp(0, 1)


#: How the σ of the fill's noise varies over an image: ``constant``, the same σ everywhere;
#: ``local``, σ times each entry's :func:`local_spread` (more noise where the observed
#: neighbours vary, little in flat regions: the interpolation's error varies the same way);
#: ``correlated``, as ``local`` with the noise correlated across colours and neighbouring
#: pixels (:func:`correlated_noise`), as an interpolation's errors are.
NOISE_MODES = ("constant", "local", "correlated")

#: The ``correlated`` noise's correlation between the colours of a pixel and between
#: neighbouring pixels of a channel: those of biharmonic's errors (divided by the local
#: spread) on a hidden 15 % of the observed pixels of the embedded set (0.47–0.79 across
#: colours, 0.23–0.39 between neighbours; docs/experiments.md, 2026-12-08). No missing
#: entry's truth chose them.
COLOUR_CORRELATION = 0.65
NEIGHBOUR_CORRELATION = 0.3

#: The local spread's window is (2 r + 1)² entries: 5×5.
LOCAL_RADIUS = 2


def check_noise_mode(mode: str, item_dims: int | None = None) -> None:
    """ValueError unless ``mode`` is one of NOISE_MODES (all but ``constant`` need images: items of 3 dims)."""
    if mode not in NOISE_MODES:
        raise ValueError(f"miri.init_noise_mode must be one of {NOISE_MODES}, got {mode!r}")
    if mode != "constant" and item_dims is not None and item_dims != 3:
        raise ValueError(f"miri.init_noise_mode={mode} needs images (C, H, W): use constant for tables and vectors")


def perturb(
    fill: Tensor,
    observed: Tensor,
    noise: float,
    generator: torch.Generator | None = None,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    mode: str = "constant",
) -> Tensor:
    """``fill`` (N, ...) plus N(0, σ²) on its missing entries, clamped to ``clamp``; σ is
    ``noise`` (``mode="constant"``) or ``noise`` × :func:`local_spread` of the fill's
    observed entries (``mode="local"`` or ``"correlated"``, images (N, C, H, W)); with
    ``"correlated"`` the unit noise is :func:`correlated_noise`, else independent."""
    if noise < 0:
        raise ValueError(f"miri.init_noise must be at least 0, got {noise}")
    check_noise_mode(mode)
    if noise == 0:
        return fill
    check_noise_mode(mode, fill.dim() - 1)
    sigma = noise if mode == "constant" else noise * local_spread(fill, observed)
    device = generator.device if generator is not None else fill.device  # a generator draws on its own device
    unit = torch.randn(fill.shape, generator=generator, dtype=fill.dtype, device=device)
    if mode == "correlated":
        shared = torch.randn((fill.shape[0], 1, *fill.shape[2:]), generator=generator, dtype=fill.dtype, device=device)
        unit = correlated_noise(unit, shared)
    noisy = fill + sigma * unit.to(fill.device)
    if clamp is not None:
        noisy = noisy.clamp(*clamp)
    return torch.where(observed.bool(), fill, noisy)


def correlated_noise(
    independent: Tensor, shared: Tensor, colour: float = COLOUR_CORRELATION, neighbour: float = NEIGHBOUR_CORRELATION
) -> Tensor:
    """Unit-variance noise (N, C, H, W; up to 1.05 on the border rows and columns, 1.1 in the
    corners, where the borders are reflected) correlated ``colour`` across the channels of a pixel and
    ``neighbour`` (< 0.5) between horizontally or vertically adjacent pixels of a channel, made
    of i.i.d. N(0, 1) ``independent`` (N, C, H, W) and ``shared`` (N, 1, H, W): first
    √colour shared + √(1 − colour) independent, then a separable 3-tap filter [b, 1, b]
    (2b / (1 + 2b²) = neighbour, unit norm; reflected borders)."""
    if not (0 <= colour < 1 and 0 <= neighbour < 0.5):
        raise ValueError(f"correlations must lie in [0, 1) and [0, 0.5), got {colour} and {neighbour}")
    noise = colour**0.5 * shared + (1 - colour) ** 0.5 * independent
    if neighbour == 0:
        return noise
    b = (1 - (1 - 2 * neighbour**2) ** 0.5) / (2 * neighbour)
    taps = torch.tensor([b, 1.0, b], dtype=noise.dtype, device=noise.device) / (1 + 2 * b * b) ** 0.5
    c = noise.shape[1]
    noise = torch.nn.functional.pad(noise, (1, 1, 1, 1), mode="reflect")
    noise = torch.nn.functional.conv2d(noise, taps.view(1, 1, 1, 3).expand(c, 1, 1, 3), groups=c)
    return torch.nn.functional.conv2d(noise, taps.view(1, 1, 3, 1).expand(c, 1, 3, 1), groups=c)


def local_spread(x: Tensor, observed: Tensor, radius: int = LOCAL_RADIUS) -> Tensor:
    """(N, C, H, W): for each entry of images x (N, C, H, W), the standard deviation of the
    observed entries of its image and channel within the (2 radius + 1)² window around it
    (edges replicated). A measure of how much the picture varies there, hence of how far an
    interpolation may be off. Where the window holds fewer than two observed values (inside a
    large hole, where the interpolation knows least) it is the standard deviation of all the
    observed entries of the image's channel instead."""
    o = observed.to(x.dtype)
    size = 2 * radius + 1

    def window_sum(u: Tensor) -> Tensor:
        padded = torch.nn.functional.pad(u, (radius,) * 4, mode="replicate")
        return torch.nn.functional.avg_pool2d(padded, size, stride=1) * size**2

    def spread(sums: Tensor, squares: Tensor, count: Tensor) -> Tensor:
        mean = sums / count
        return (squares / count - mean * mean).clamp_min(0).sqrt()

    known = torch.where(observed.bool(), x, 0)
    count = window_sum(o)
    local = spread(window_sum(known), window_sum(known * known), count.clamp_min(1))
    image = spread(known.sum((-2, -1), True), (known * known).sum((-2, -1), True), o.sum((-2, -1), True).clamp_min(1))
    return torch.where(count > 1.5, local, image)  # count is a float sum: not == 2 exactly


def observed_channel_mean(
    x: Tensor, observed: Tensor, chunk: int = 4096, decode: Callable[[Tensor], Tensor] | None = None
) -> Tensor:
    """(C,) float32 mean of each channel over the observed entries of x (N, C, ...), summed in
    float64 over ``chunk`` items at a time: no float copy of the whole set is made. ``decode``:
    applied to each chunk first (a store's values: :func:`miri_lightning.data.store.decode`)."""
    dims = [d for d in range(x.dim()) if d != 1]
    sums = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for k in range(0, x.shape[0], chunk):
        values = x[k : k + chunk] if decode is None else decode(x[k : k + chunk])
        sums += torch.where(observed[k : k + chunk].bool(), values, 0).double().sum(dims)
    return (sums / observed.sum(dims).clamp_min(1).to(sums.device)).float()
