"""The store: the data set as MIRI sees it (current imputation, mask, truth), compactly."""

from collections.abc import Callable

import torch
from torch import Tensor

from miri_lightning import flow
from miri_lightning.data.sources import LoadedImages
from miri_lightning.masks import GivenMask

#: How the current imputation may be kept: float32 (exact), float16 (half the memory, finer
#: than 8-bit images), uint8 (a quarter: the imputation rounded to 8-bit levels each round).
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "uint8": torch.uint8}

#: Items per chunk when building or converting the whole store (bounds transient memory).
CHUNK = 4096


def decode(values: Tensor) -> Tensor:
    """Stored values (uint8 levels 0..255, or floats in [0, 1]) -> float32 in [0, 1]."""
    if values.dtype == torch.uint8:
        return values.float() / 255.0
    return values.float()


def encode(values: Tensor, dtype: torch.dtype) -> Tensor:
    """float values in [0, 1] -> the store's dtype (uint8: rounded to the nearest level)."""
    if dtype == torch.uint8:
        return (values * 255).round_().clamp_(0, 255).to(torch.uint8)
    return values.to(dtype)


class Store:
    """All (N, *item) on one device: (N, C, H, W) images or (N, d) vectors. imputed: the
    current imputation x̃ in the store dtype (equal to the data on observed entries);
    observed: bool, True = observed; truth: the complete data when known (uint8 for 8-bit
    sources), else None; clamp: the data's range (None: unbounded); interp: the velocity
    field's interpolation of each item's observed entries (see :func:`cache_interpolation`),
    or None. interp is derived from the data alone: never saved, rebuilt when a run starts
    or resumes."""

    def __init__(
        self,
        imputed: Tensor,
        observed: Tensor,
        truth: Tensor | None = None,
        clamp: tuple[float, float] | None = (0.0, 1.0),
    ):
        self.imputed, self.observed, self.truth, self.clamp = imputed, observed, truth, clamp
        self.interp: Tensor | None = None
        #: True when ``imputed`` and ``observed`` are one copy in shared memory for every process
        #: of this machine (:mod:`miri_lightning.data.shared`): a rank writes only its own shard.
        self.node_shared = False

    def __len__(self) -> int:
        return self.imputed.shape[0]

    def to(self, device: torch.device | str) -> "Store":
        """Move every tensor to ``device`` (``miri.store_on_device``: pairs are then drawn on
        the accelerator, with no host copy per step)."""
        moved = self.imputed.to(device), self.observed.to(device)
        if moved[0] is not self.imputed:
            self.node_shared = False  # a copy on this rank's device
        self.imputed, self.observed = moved
        if self.truth is not None:
            self.truth = self.truth.to(device)
        if self.interp is not None:
            self.interp = self.interp.to(device)
        return self

    @property
    def item_shape(self) -> tuple[int, ...]:
        return tuple(self.imputed.shape[1:])

    @property
    def nbytes(self) -> int:
        tensors = [self.imputed, self.observed] + [t for t in (self.truth, self.interp) if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)


@torch.no_grad()
def cache_interpolation(store: Store, interpolate, device: torch.device | str, chunk: int = 1024) -> None:
    """Set ``store.interp`` to ``interpolate(x, observed)`` (N, *item) of every item's current
    values, solved in chunks of ``chunk`` items on ``device`` and kept on the store's device,
    in float32 (float16 for a float16 or uint8 store: half the memory). It reads observed
    entries only, which never change in a run: one solve per item and run, instead of one per
    training step and ODE step. ``interpolate`` None, or returning None (a field without
    interpolation inputs): ``store.interp`` is None."""
    store.interp = None
    if interpolate is None:
        return
    dtype = torch.float32 if store.imputed.dtype == torch.float32 else torch.float16
    interp = None
    for k in range(0, len(store), chunk):
        x = decode(store.imputed[k : k + chunk].to(device))
        part = interpolate(x, store.observed[k : k + chunk].to(device))
        if part is None:
            return
        if interp is None:
            interp = torch.empty(store.imputed.shape, dtype=dtype, device=store.imputed.device)
        interp[k : k + chunk] = part.to(interp)
    store.interp = interp


def fill_seed(seed: int) -> int:
    """The seed of the round-0 fill's draws, distinct from ``seed`` (which masks also use)."""
    return (seed * 1_000_003 + 0x5EED) % (2**63)


def build_store(
    loaded: LoadedImages,
    mask,
    init: str,
    seed: int,
    dtype: str = "float32",
    init_noise: float = 0.0,
    noise_mode: str = "constant",
    device: torch.device | str | None = None,
    allocate: Callable[[str, tuple[int, ...], torch.dtype], Tensor] | None = None,
) -> Store:
    """The round-0 store: the mask (given or drawn) and the initial fill (seeded, see
    :func:`flow.initial_fill`), built in chunks so that no float copy of the whole set is made.
    ``device``: where the fill is computed, chunk by chunk (the accelerator when there is one:
    the interp and biharmonic solvers are batched torch); the store stays on the host.
    ``allocate(name, shape, dtype)``: where ``observed`` and ``imputed`` live (default: this
    process's memory; :mod:`miri_lightning.data.shared` gives memory shared by the machine)."""
    if dtype not in STORE_DTYPES:
        raise ValueError(f"data.store_dtype must be one of {sorted(STORE_DTYPES)}, got {dtype!r}")
    values = loaded.values
    if dtype == "uint8" and loaded.clamp != (0.0, 1.0):
        raise ValueError("data.store_dtype=uint8 keeps values in [0, 1] only: use float32 or float16 for these data")
    if loaded.observed is not None and not isinstance(mask, GivenMask):
        raise ValueError(f"these data come with their own mask: use mask=given, not mask={mask.name}")
    observed = loaded.observed if loaded.observed is not None else mask(values.shape)
    if observed.shape != values.shape:
        raise ValueError(f"the mask has shape {tuple(observed.shape)} but the images have {tuple(values.shape)}")
    if bool(observed.all()):
        raise ValueError("the data have no missing entries: nothing to impute (check mask.rate or the given mask)")
    if allocate is not None:
        observed = _copy_into(allocate("observed", tuple(observed.shape), torch.bool), observed)
    n = values.shape[0]
    channel_mean = flow.observed_channel_mean(values, observed, CHUNK, decode) if init == "mean" else None
    # a stream of its own: seeded with `seed` itself, the fill would replay the draws of a mask
    # with the same seed (for channel masks the U[0, 1] fill of a missing entry would be the very
    # uniform that made it missing, hence < rate)
    generator = torch.Generator().manual_seed(fill_seed(seed))
    shape, store_dtype = tuple(values.shape), STORE_DTYPES[dtype]
    imputed = allocate("imputed", shape, store_dtype) if allocate is not None else torch.empty(shape, dtype=store_dtype)
    device = torch.device(device) if device is not None else torch.device("cpu")
    for k in range(0, n, CHUNK):
        part = flow.initial_fill(
            decode(values[k : k + CHUNK].to(device)),
            observed[k : k + CHUNK].to(device),
            init,
            generator,
            channel_mean.to(device) if channel_mean is not None else None,
            init_noise,
            loaded.clamp,
            noise_mode,
        )
        imputed[k : k + CHUNK] = encode(part, imputed.dtype).cpu()
    return Store(imputed, observed, values if loaded.has_truth else None, loaded.clamp)


def _copy_into(out: Tensor, source: Tensor) -> Tensor:
    for k in range(0, source.shape[0], CHUNK):
        out[k : k + CHUNK] = source[k : k + CHUNK]
    return out
